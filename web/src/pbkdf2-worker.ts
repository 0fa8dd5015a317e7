// A worker that runs PBKDF2 derivations for the room page (src/ui/derive.ts): each message
// { id, secret, salt } is answered with { id, bytes } or { id, error }.

import { pbkdf2 } from "./protocol/crypto";

interface Job {
  id: number;
  secret: string;
  salt: string;
}

self.onmessage = async (ev: MessageEvent<Job>) => {
  const { id, secret, salt } = ev.data;
  try {
    const bytes = await pbkdf2(secret, salt);
    self.postMessage({ id, bytes }, { transfer: [bytes.buffer] });
  } catch (e) {
    self.postMessage({ id, error: e instanceof Error ? e.message : String(e) });
  }
};
