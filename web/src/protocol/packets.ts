// Wire packets of the keks-meet protocol (docs/PROTOCOL.md). Serialisers build objects in the
// exact key order the golden fixtures use, so JSON.stringify reproduces them byte for byte.
// Parsers are lenient about what they do not know (newer peers add kinds) and strict about
// the shape of what they do know: anything malformed becomes `null` plus a console warning.

export type ClientId = number;
export type RoomHash = string; // 64 lowercase hex characters

export type ServerboundPacket =
  | { join: { hash: RoomHash | null } }
  | { ping: null }
  | { relay: { recipient?: ClientId; message: string } }
  | { watch_rooms: RoomHash[] };

export type ClientboundPacket =
  | { kind: "init"; your_id: ClientId; version: string }
  | { kind: "client_join"; id: ClientId }
  | { kind: "client_leave"; id: ClientId }
  | { kind: "message"; sender: ClientId; message: string }
  | { kind: "room_info"; hash: RoomHash; user_count: number };

export interface IceCandidateJson {
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

export interface ProvideInfo {
  id: string;
  kind: "track" | "file";
  track_kind?: "audio" | "video";
  label?: string;
  size?: number;
}

export type RelayMessage =
  | { chat: { text: string } }
  | { chat: { image: string } }
  | { identify: { username: string } }
  | { provide: ProvideInfo }
  | { request: { id: string } }
  | { request_stop: { id: string } }
  | { provide_stop: { id: string } }
  | { offer: string }
  | { answer: string }
  | { ice_candidate: IceCandidateJson }
  | { preview: { id: string; data: string } };

export interface RelayMessageWrapper {
  sender: ClientId;
  inner: RelayMessage;
}

// ---- serverbound constructors (key order matters) ----

export const join = (hash: RoomHash | null): ServerboundPacket => ({ join: { hash } });
export const ping = (): ServerboundPacket => ({ ping: null });
export const watchRooms = (hashes: RoomHash[]): ServerboundPacket => ({ watch_rooms: [...hashes] });
export function relay(message: string, recipient?: ClientId): ServerboundPacket {
  return recipient === undefined ? { relay: { message } } : { relay: { recipient, message } };
}

export function encodeServerbound(p: ServerboundPacket): string {
  return JSON.stringify(p);
}

// ---- relay message constructors ----

export const chatText = (text: string): RelayMessage => ({ chat: { text } });
export const chatImage = (image: string): RelayMessage => ({ chat: { image } });
export const identify = (username: string): RelayMessage => ({ identify: { username } });
export const request = (id: string): RelayMessage => ({ request: { id } });
export const requestStop = (id: string): RelayMessage => ({ request_stop: { id } });
export const provideStop = (id: string): RelayMessage => ({ provide_stop: { id } });
export const offer = (sdp: string): RelayMessage => ({ offer: sdp });
export const answer = (sdp: string): RelayMessage => ({ answer: sdp });
export const preview = (id: string, data: string): RelayMessage => ({ preview: { id, data } });

export function provide(p: ProvideInfo): RelayMessage {
  const o: ProvideInfo = { id: p.id, kind: p.kind };
  if (p.track_kind !== undefined) o.track_kind = p.track_kind;
  if (p.label !== undefined) o.label = p.label;
  if (p.size !== undefined) o.size = p.size;
  return { provide: o };
}

export function iceCandidate(c: IceCandidateJson): RelayMessage {
  const o: IceCandidateJson = { candidate: c.candidate };
  if (c.sdpMid !== undefined) o.sdpMid = c.sdpMid;
  if (c.sdpMLineIndex !== undefined) o.sdpMLineIndex = c.sdpMLineIndex;
  if (c.usernameFragment !== undefined) o.usernameFragment = c.usernameFragment;
  return { ice_candidate: o };
}

export function encodeWrapper(sender: ClientId, inner: RelayMessage): string {
  const w: RelayMessageWrapper = { sender, inner };
  return JSON.stringify(w);
}

// ---- parsing ----

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const isId = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const isStr = (v: unknown): v is string => typeof v === "string";
const isHash = (v: unknown): v is string => isStr(v) && /^[0-9a-f]{64}$/.test(v);
const optStr = (v: unknown) => v === undefined || v === null || isStr(v);

/** The single key of a one-key object, or null (with a warning) for anything else. */
function tag(v: unknown, what: string): [string, unknown] | null {
  if (!isObj(v)) {
    console.warn(`keksbox: ignoring ${what}: not an object`);
    return null;
  }
  const keys = Object.keys(v);
  if (keys.length !== 1) {
    console.warn(`keksbox: ignoring ${what} with ${keys.length} keys`);
    return null;
  }
  return [keys[0]!, v[keys[0]!]];
}

function malformed(what: string, kind: string): null {
  console.warn(`keksbox: ignoring malformed ${what} "${kind}"`);
  return null;
}

/** Parses a text frame from the relay; null for malformed or unknown packets. */
export function parseClientbound(text: string): ClientboundPacket | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    console.warn("keksbox: ignoring relay packet that is not JSON");
    return null;
  }
  const t = tag(v, "relay packet");
  if (!t) return null;
  const [k, b] = t;
  switch (k) {
    case "init":
      if (isObj(b) && isId(b.your_id) && isStr(b.version)) return { kind: "init", your_id: b.your_id, version: b.version };
      return malformed("packet", k);
    case "client_join":
    case "client_leave":
      if (isObj(b) && isId(b.id)) return { kind: k, id: b.id };
      return malformed("packet", k);
    case "message":
      if (isObj(b) && isId(b.sender) && isStr(b.message)) return { kind: "message", sender: b.sender, message: b.message };
      return malformed("packet", k);
    case "room_info":
      if (isObj(b) && isHash(b.hash) && isId(b.user_count)) return { kind: "room_info", hash: b.hash, user_count: b.user_count };
      return malformed("packet", k);
    default:
      console.warn(`keksbox: ignoring unknown relay packet "${k}"`);
      return null;
  }
}

/** Every field is optional, as in RTCIceCandidateInit (a missing candidate is empty), like the Rust parser. */
function parseIce(b: unknown): IceCandidateJson | null {
  if (!isObj(b) || !optStr(b.candidate) || !optStr(b.sdpMid) || !optStr(b.usernameFragment)) return null;
  if (b.sdpMLineIndex !== undefined && b.sdpMLineIndex !== null && !isId(b.sdpMLineIndex)) return null;
  return {
    candidate: (b.candidate as string | null | undefined) ?? "",
    sdpMid: (b.sdpMid as string | null | undefined) ?? null,
    sdpMLineIndex: (b.sdpMLineIndex as number | null | undefined) ?? null,
    usernameFragment: (b.usernameFragment as string | null | undefined) ?? null,
  };
}

function parseProvide(b: unknown): ProvideInfo | null | "unknown" {
  if (!isObj(b) || !isStr(b.id) || !isStr(b.kind)) return null;
  if (b.kind !== "track" && b.kind !== "file") return "unknown";
  const p: ProvideInfo = { id: b.id, kind: b.kind };
  if (b.label !== undefined && b.label !== null) {
    if (!isStr(b.label)) return null;
    p.label = b.label;
  }
  if (b.kind === "track") {
    if (b.track_kind !== "audio" && b.track_kind !== "video") return "unknown";
    p.track_kind = b.track_kind;
  }
  if (b.size !== undefined && b.size !== null) {
    if (!isId(b.size)) return null;
    p.size = b.size;
  }
  return p;
}

/** Parses the inner message of a decrypted wrapper; null for malformed or unknown kinds. */
export function parseRelayMessage(v: unknown): RelayMessage | null {
  const t = tag(v, "relay message");
  if (!t) return null;
  const [k, b] = t;
  const idOnly = (): { id: string } | null => (isObj(b) && isStr(b.id) ? { id: b.id } : null);
  switch (k) {
    case "chat": {
      const c = tag(b, "chat message");
      if (!c) return null;
      if (c[0] === "text" && isStr(c[1])) return { chat: { text: c[1] } };
      if (c[0] === "image" && isStr(c[1])) return { chat: { image: c[1] } };
      return malformed("chat message", c[0]);
    }
    case "identify":
      if (isObj(b) && isStr(b.username)) return { identify: { username: b.username } };
      return malformed("relay message", k);
    case "provide": {
      const p = parseProvide(b);
      if (p === "unknown") {
        console.warn("keksbox: ignoring provide of unknown kind");
        return null;
      }
      return p ? { provide: p } : malformed("relay message", k);
    }
    case "request":
    case "request_stop":
    case "provide_stop": {
      const i = idOnly();
      if (!i) return malformed("relay message", k);
      return k === "request" ? { request: i } : k === "request_stop" ? { request_stop: i } : { provide_stop: i };
    }
    case "offer":
      return isStr(b) ? { offer: b } : malformed("relay message", k);
    case "answer":
      return isStr(b) ? { answer: b } : malformed("relay message", k);
    case "ice_candidate": {
      const c = parseIce(b);
      return c ? { ice_candidate: c } : malformed("relay message", k);
    }
    case "preview":
      if (isObj(b) && isStr(b.id) && isStr(b.data)) return { preview: { id: b.id, data: b.data } };
      return malformed("relay message", k);
    default:
      console.warn(`keksbox: ignoring unknown relay message "${k}"`);
      return null;
  }
}

/** Parses decrypted wrapper JSON and checks the claimed sender against the relay's stamp. */
export function parseWrapper(plaintext: string, stampedSender: ClientId): RelayMessage | null {
  let v: unknown;
  try {
    v = JSON.parse(plaintext);
  } catch {
    console.warn("keksbox: ignoring decrypted message that is not JSON");
    return null;
  }
  if (!isObj(v) || !isId(v.sender)) {
    console.warn("keksbox: ignoring decrypted message without a sender");
    return null;
  }
  if (v.sender !== stampedSender) {
    console.warn(`keksbox: dropping message: claims sender ${v.sender}, relay says ${stampedSender}`);
    return null;
  }
  return parseRelayMessage(v.inner);
}

/** The name of a relay message's kind (its single key). */
export function relayKind(m: RelayMessage): string {
  return Object.keys(m)[0]!;
}
