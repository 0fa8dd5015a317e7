// Room secrets from the page fragment (docs/PROTOCOL.md): `#<secret>?key=value&...`. Nothing after
// `#` ever reaches the server; the secret only ever becomes a key and a hash locally.

export interface RoomFragment {
  /** The full secret: what key and hash are derived from. */
  secret: string;
  /** The part of the secret before an inner `#`, shown as the room's name; null if none. */
  name: string | null;
  /** Preferences given after the first `?`. */
  params: [string, string][];
}

/** Splits `location.hash` (with or without its leading `#`). Empty secret → null. */
export function parseFragment(hash: string): RoomFragment | null {
  let s = hash.startsWith("#") ? hash.slice(1) : hash;
  try {
    s = decodeURIComponent(s);
  } catch {
    console.warn("keksbox: room fragment is not valid percent-encoding; using it as is");
  }
  const q = s.indexOf("?");
  const secret = q < 0 ? s : s.slice(0, q);
  const query = q < 0 ? "" : s.slice(q + 1);
  if (!secret) return null;
  const h = secret.indexOf("#");
  const params: [string, string][] = [];
  for (const part of query.split("&")) {
    if (!part) continue;
    const eq = part.indexOf("=");
    params.push(eq < 0 ? [part, "true"] : [part.slice(0, eq), part.slice(eq + 1)]);
  }
  return { secret, name: h > 0 ? secret.slice(0, h) : null, params };
}

/** Below this many characters a secret is guessable; the room page warns. */
export const SHORT_SECRET = 16;

export const isShortSecret = (secret: string): boolean => [...secret].length < SHORT_SECRET;

/** A fresh secret with `bits` of randomness (at least 128), URL-safe base64 without padding. */
export function generateSecret(bits = 192): string {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(Math.ceil(Math.max(bits, 128) / 8)));
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Parses a `room_watches` preference: `name=secret;name2=secret2`; a bare entry is both. */
export function parseRoomWatches(v: string): { name: string; secret: string }[] {
  const out: { name: string; secret: string }[] = [];
  for (const e of v.split(";")) {
    const t = e.trim();
    if (!t) continue;
    const eq = t.indexOf("=");
    out.push(eq < 0 ? { name: t, secret: t } : { name: t.slice(0, eq), secret: t.slice(eq + 1) });
  }
  return out;
}

export const formatRoomWatches = (l: { name: string; secret: string }[]): string =>
  l.map((r) => (r.name === r.secret ? r.name : `${r.name}=${r.secret}`)).join(";");
