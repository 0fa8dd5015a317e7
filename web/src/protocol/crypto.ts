// Room key and room hash derivation and message sealing, with WebCrypto only (docs/PROTOCOL.md
// "Room secret, key and hash"). Works in browsers and in Node (globalThis.crypto).

import { ClientId, encodeWrapper, parseWrapper, RelayMessage, RoomHash } from "./packets";

/** Byte arrays over a plain ArrayBuffer, as WebCrypto wants them. */
export type Bytes = Uint8Array<ArrayBuffer>;

const ITERATIONS = 250_000;
const KEY_SALT = "keksmeet/cryptosaltAAA==";
const HASH_SALT = "keksmeet/roomhashsaltA==";
const IV_LEN = 12;

const subtle = () => globalThis.crypto.subtle;

export function b64decode(s: string): Bytes {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function b64encode(b: Uint8Array): string {
  let s = "";
  const CHUNK = 0x8000;
  for (let i = 0; i < b.length; i += CHUNK) s += String.fromCharCode(...b.subarray(i, i + CHUNK));
  return btoa(s);
}

export const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

export function unhex(s: string): Bytes {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

async function pbkdf2(secret: string, saltB64: string): Promise<Bytes> {
  const base = await subtle().importKey("raw", new TextEncoder().encode(secret), "PBKDF2", false, ["deriveBits"]);
  const bits = await subtle().deriveBits(
    { name: "PBKDF2", hash: "SHA-512", salt: b64decode(saltB64), iterations: ITERATIONS },
    base,
    256,
  );
  return new Uint8Array(bits);
}

/** The raw 32 key bytes of a room secret (exposed for the test vectors). */
export const deriveKeyBytes = (secret: string): Promise<Bytes> => pbkdf2(secret, KEY_SALT);

/** The room hash the relay sees for a secret. */
export async function roomHash(secret: string): Promise<RoomHash> {
  return hex(await pbkdf2(secret, HASH_SALT));
}

/** The AES-256-GCM key of one room. */
export class RoomKey {
  private constructor(private readonly key: CryptoKey) {}

  static async derive(secret: string): Promise<RoomKey> {
    return RoomKey.fromBytes(await deriveKeyBytes(secret));
  }

  static async fromBytes(raw: Bytes): Promise<RoomKey> {
    const key = await subtle().importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
    return new RoomKey(key);
  }

  /** base64(iv || ciphertext || tag); `iv` only for tests, fresh random otherwise. */
  async seal(plaintext: string, iv?: Bytes): Promise<string> {
    const nonce = iv ?? globalThis.crypto.getRandomValues(new Uint8Array(IV_LEN));
    const ct = new Uint8Array(
      await subtle().encrypt({ name: "AES-GCM", iv: nonce }, this.key, new TextEncoder().encode(plaintext)),
    );
    const out = new Uint8Array(nonce.length + ct.length);
    out.set(nonce, 0);
    out.set(ct, nonce.length);
    return b64encode(out);
  }

  /** The plaintext, or null (with a warning) if the message is not base64 or fails to open. */
  async open(sealed: string): Promise<string | null> {
    let raw: Bytes;
    try {
      raw = b64decode(sealed);
    } catch {
      console.warn("keksbox: ignoring message that is not base64");
      return null;
    }
    if (raw.length < IV_LEN + 16) {
      console.warn("keksbox: ignoring message too short to be sealed");
      return null;
    }
    try {
      const pt = await subtle().decrypt({ name: "AES-GCM", iv: raw.subarray(0, IV_LEN) }, this.key, raw.subarray(IV_LEN));
      return new TextDecoder("utf-8", { fatal: true }).decode(pt);
    } catch {
      console.warn("keksbox: ignoring message that does not decrypt with the room key");
      return null;
    }
  }

  sealMessage(sender: ClientId, inner: RelayMessage): Promise<string> {
    return this.seal(encodeWrapper(sender, inner));
  }

  async openMessage(sender: ClientId, sealed: string): Promise<RelayMessage | null> {
    const pt = await this.open(sealed);
    return pt === null ? null : parseWrapper(pt, sender);
  }
}
