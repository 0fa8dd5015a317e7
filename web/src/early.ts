// Loaded by room.html before anything else (a small classic script, so it runs while the page
// script still loads): starts the room hash and room key derivations at once. They are two
// PBKDF2 runs of 250,000 rounds, most of the time from opening a room link to being in the
// room, and Chromium runs them one after the other whatever we do (one WebCrypto thread per
// renderer process, shared by the page and its workers: two workers measured no faster than
// Promise.all), so the only gain left is starting them earlier. The room page takes them over
// (src/ui/room.ts) when the secret still matches.

import { deriveKeyBytes, roomHash } from "./protocol/crypto";
import { parseFragment } from "./protocol/secret";

const f = parseFragment(location.hash);
if (f) {
  performance.mark("keksbox-derive-start"); // read by `npm run bench`
  // The hash first: joining needs it, and the relay's answer can come while the key is derived.
  const hash = roomHash(f.secret);
  const key = deriveKeyBytes(f.secret);
  (window as unknown as { keksboxEarly: unknown }).keksboxEarly = { secret: f.secret, hash, key };
}
