// Protocol unit tests against the golden fixtures shared with the Rust crate
// (proto/tests/data), so the two implementations cannot drift.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { deriveKeyBytes, hex, RoomKey, roomHash, unhex } from "../../src/protocol/crypto";
import { CHUNK, ChannelLike, FileSink, receiveFile, sendFile } from "../../src/protocol/files";
import * as P from "../../src/protocol/packets";
import { Prefs, PREFS, parsePrefValue } from "../../src/protocol/prefs";
import { generateSecret, isShortSecret, parseFragment, parseRoomWatches } from "../../src/protocol/secret";
import { Signaling, SocketLike, Timers } from "../../src/protocol/signaling";

const DATA = join(process.env.KEKSBOX_FIXTURES ?? join(process.cwd(), "..", "proto", "tests", "data"));
const fixture = (dir: string, name: string) => readFileSync(join(DATA, dir, name), "utf8").trim();
const fixtures = (dir: string) => readdirSync(join(DATA, dir)).filter((f) => f.endsWith(".json"));

/** Captures console.warn during `f`; returns the warnings. */
async function warnings(f: () => unknown): Promise<string[]> {
  const seen: string[] = [];
  const orig = console.warn;
  console.warn = (...a: unknown[]) => void seen.push(a.map(String).join(" "));
  try {
    await f();
  } finally {
    console.warn = orig;
  }
  return seen;
}

// ---- serverbound: built by our constructors, byte for byte ----

const serverbound: Record<string, P.ServerboundPacket> = {
  "join.json": P.join("ad1f3cf791d29e682f2d2c12d6238647d6c6fd431935cb6daff51b7a0dcd7aae"),
  "join_leave.json": P.join(null),
  "ping.json": P.ping(),
  "relay_broadcast.json": P.relay("AAECAwQFBgcICQoLc5RjeQ=="),
  "relay_recipient.json": P.relay("AAECAwQFBgcICQoLc5RjeQ==", 3),
  "watch_rooms.json": P.watchRooms([
    "ad1f3cf791d29e682f2d2c12d6238647d6c6fd431935cb6daff51b7a0dcd7aae",
    "0094fbf4a952150ba83fe13f3749192ea7aa54118475fe3b61d31880f9185231",
  ]),
};

test("every serverbound fixture is covered", () => {
  assert.deepEqual(fixtures("serverbound").sort(), Object.keys(serverbound).sort());
});
for (const [name, pkt] of Object.entries(serverbound)) {
  test(`serverbound ${name} serialises byte for byte`, () => {
    assert.equal(P.encodeServerbound(pkt), fixture("serverbound", name));
  });
}

// ---- relay messages: parse the fixture, re-serialise through our constructors ----

const rebuild = (m: P.RelayMessage): P.RelayMessage => {
  if ("chat" in m) return "text" in m.chat ? P.chatText(m.chat.text) : P.chatImage(m.chat.image);
  if ("identify" in m) return P.identify(m.identify.username);
  if ("provide" in m) return P.provide(m.provide);
  if ("request" in m) return P.request(m.request.id);
  if ("request_stop" in m) return P.requestStop(m.request_stop.id);
  if ("provide_stop" in m) return P.provideStop(m.provide_stop.id);
  if ("offer" in m) return P.offer(m.offer);
  if ("answer" in m) return P.answer(m.answer);
  if ("ice_candidate" in m) return P.iceCandidate(m.ice_candidate);
  return P.preview(m.preview.id, m.preview.data);
};

for (const name of fixtures("relay").filter((f) => f !== "wrapper.json")) {
  test(`relay ${name} parses and re-serialises byte for byte`, () => {
    const text = fixture("relay", name);
    const m = P.parseRelayMessage(JSON.parse(text));
    assert.ok(m, "parses");
    assert.equal(JSON.stringify(rebuild(m)), text);
  });
}

test("relay wrapper.json: encodeWrapper byte for byte, parseWrapper checks the sender", async () => {
  const text = fixture("relay", "wrapper.json");
  assert.equal(P.encodeWrapper(3, P.chatText("hello from the golden fixture")), text);
  assert.deepEqual(P.parseWrapper(text, 3), { chat: { text: "hello from the golden fixture" } });
  const w = await warnings(() => assert.equal(P.parseWrapper(text, 4), null));
  assert.match(w.join(), /claims sender 3/);
});

test("clientbound fixtures parse", () => {
  assert.deepEqual(P.parseClientbound(fixture("clientbound", "init.json")), { kind: "init", your_id: 5, version: "keksbox 0.1.0" });
  assert.deepEqual(P.parseClientbound(fixture("clientbound", "client_join.json")), { kind: "client_join", id: 3 });
  assert.deepEqual(P.parseClientbound(fixture("clientbound", "client_leave.json")), { kind: "client_leave", id: 3 });
  assert.deepEqual(P.parseClientbound(fixture("clientbound", "message.json")), { kind: "message", sender: 3, message: "AAECAwQFBgcICQoLc5RjeQ==" });
  assert.deepEqual(P.parseClientbound(fixture("clientbound", "room_info.json")), {
    kind: "room_info",
    hash: "ad1f3cf791d29e682f2d2c12d6238647d6c6fd431935cb6daff51b7a0dcd7aae",
    user_count: 2,
  });
  assert.equal(fixtures("clientbound").length, 5);
});

// ---- bad input is survived, ignored and warned about ----

test("malformed clientbound packets are ignored with a warning", async () => {
  for (const bad of ["not json", "[]", "{}", '{"init":{"your_id":"5"}}', '{"client_join":{"id":-1}}', '{"message":{"sender":1}}', '{"a":1,"b":2}', '{"room_info":{"hash":"xyz","user_count":1}}']) {
    const w = await warnings(() => assert.equal(P.parseClientbound(bad), null, bad));
    assert.equal(w.length, 1, `one warning for ${bad}`);
  }
});

test("unknown clientbound packet kind is ignored with a warning", async () => {
  const w = await warnings(() => assert.equal(P.parseClientbound('{"shiny_new":{"x":1}}'), null));
  assert.match(w[0]!, /unknown relay packet "shiny_new"/);
});

test("unknown relay message kind and unknown provide kind are ignored with a warning", async () => {
  let w = await warnings(() => assert.equal(P.parseRelayMessage({ hologram: { id: "x" } }), null));
  assert.match(w[0]!, /unknown relay message "hologram"/);
  w = await warnings(() => assert.equal(P.parseRelayMessage({ provide: { id: "x", kind: "smell" } }), null));
  assert.match(w[0]!, /unknown kind/);
  // Unknown extra fields inside a known message are fine.
  assert.deepEqual(P.parseRelayMessage({ request: { id: "x", future: 1 } }), { request: { id: "x" } });
});

test("an ice_candidate's fields are all optional, as in RTCIceCandidateInit (and in the Rust parser)", () => {
  assert.deepEqual(P.parseRelayMessage({ ice_candidate: {} }), { ice_candidate: { candidate: "", sdpMid: null, sdpMLineIndex: null, usernameFragment: null } });
  assert.deepEqual(P.parseRelayMessage({ ice_candidate: { sdpMid: "0" } }), { ice_candidate: { candidate: "", sdpMid: "0", sdpMLineIndex: null, usernameFragment: null } });
});

test("malformed relay messages are ignored with a warning", async () => {
  for (const bad of [null, 3, { chat: { text: 5 } }, { chat: { video: "x" } }, { identify: {} }, { offer: 1 }, { ice_candidate: { candidate: 5 } }, { ice_candidate: { sdpMid: 0 } }, { provide: { id: 1, kind: "file" } }]) {
    const w = await warnings(() => assert.equal(P.parseRelayMessage(bad), null));
    assert.ok(w.length >= 1, JSON.stringify(bad));
  }
});

// ---- crypto ----

const vectors = JSON.parse(readFileSync(join(DATA, "crypto", "vectors.json"), "utf8")) as { secret: string; key: string; hash: string }[];
for (const v of vectors) {
  test(`key and room hash of ${JSON.stringify(v.secret)} match the vectors`, async () => {
    assert.equal(hex(await deriveKeyBytes(v.secret)), v.key);
    assert.equal(await roomHash(v.secret), v.hash);
  });
}

const sealed = JSON.parse(readFileSync(join(DATA, "crypto", "sealed.json"), "utf8")) as { secret: string; iv: string; plaintext: string; sealed: string };

test("sealed.json opens, and sealing with its IV reproduces it", async () => {
  const k = await RoomKey.fromBytes(unhex(vectors.find((v) => v.secret === sealed.secret)!.key));
  assert.equal(await k.open(sealed.sealed), sealed.plaintext);
  assert.equal(await k.seal(sealed.plaintext, unhex(sealed.iv)), sealed.sealed);
  assert.deepEqual(await k.openMessage(3, sealed.sealed), { chat: { text: "hello from the golden fixture" } });
});

test("bad ciphertext is ignored with a warning", async () => {
  const k = await RoomKey.fromBytes(unhex(vectors[0]!.key));
  const other = await RoomKey.fromBytes(unhex(vectors[1]!.key));
  for (const bad of ["!!!notbase64", "AAAA", await other.seal("{}"), sealed.sealed.slice(0, -8) + "AAAAAAA="]) {
    const w = await warnings(async () => assert.equal(await k.open(bad), null));
    assert.equal(w.length, 1, bad);
  }
  // Decrypts but is not JSON / wrong sender.
  let w = await warnings(async () => assert.equal(await k.openMessage(1, await k.seal("nope")), null));
  assert.match(w[0]!, /not JSON/);
  w = await warnings(async () => assert.equal(await k.openMessage(4, sealed.sealed), null));
  assert.match(w[0]!, /claims sender/);
});

test("seal uses a fresh IV each time and round-trips", async () => {
  const k = await RoomKey.fromBytes(unhex(vectors[0]!.key));
  const a = await k.sealMessage(7, P.chatText("hi"));
  const b = await k.sealMessage(7, P.chatText("hi"));
  assert.notEqual(a, b);
  assert.deepEqual(await k.openMessage(7, a), { chat: { text: "hi" } });
});

// ---- fragment / secret ----

test("fragment parsing follows PROTOCOL.md", () => {
  assert.deepEqual(parseFragment("#hunter2"), { secret: "hunter2", name: null, params: [] });
  assert.deepEqual(parseFragment("#team%23abc?username=alice&webrtc_debug"), {
    secret: "team#abc",
    name: "team",
    params: [
      ["username", "alice"],
      ["webrtc_debug", "true"],
    ],
  });
  // decodeURIComponent happens before the split, so an encoded ? splits too.
  assert.equal(parseFragment("#a%3Fusername=x")!.secret, "a");
  assert.equal(parseFragment("#")!, null);
  assert.equal(parseFragment("#?username=x"), null);
  assert.equal(parseFragment("#%E0%A4%A")!.secret, "%E0%A4%A");
  assert.equal(parseFragment("#%C3%BCn%C3%AFc%C3%B6d%C3%A9%20room")!.secret, "ünïcödé room");
});

test("generated secrets are long and distinct; short ones are flagged", () => {
  const a = generateSecret();
  assert.ok(a.length * 6 >= 128, a);
  assert.notEqual(a, generateSecret());
  assert.ok(isShortSecret("hunter2"));
  assert.ok(!isShortSecret(a));
  assert.deepEqual(parseRoomWatches("public;team=s3cret; ;x=a=b"), [
    { name: "public", secret: "public" },
    { name: "team", secret: "s3cret" },
    { name: "x", secret: "a=b" },
  ]);
});

// ---- prefs ----

test("prefs: every seed option exists with its default; fragment > storage > default", () => {
  const seed = ["username", "warn_redirect", "image_view_popup", "webrtc_debug", "microphone_enabled", "screencast_enabled", "camera_enabled", "rnnoise", "native_noise_suppression", "microphone_gain", "video_fps", "video_resolution", "camera_facing_mode", "auto_gain_control", "echo_cancellation", "audio_activity_threshold", "optional_audio_default_enable", "optional_video_default_enable", "notify_chat", "notify_join", "notify_leave", "enable_onbeforeunload", "room_watches"];
  for (const k of seed) assert.ok(k in PREFS, k);
  const store = new Map<string, string>();
  const prefs = new Prefs({ getItem: (k) => store.get(k) ?? null, setItem: (k, v) => void store.set(k, v), removeItem: (k) => void store.delete(k) });
  assert.equal(prefs.get("microphone_gain"), 1);
  assert.equal(prefs.get("audio_activity_threshold"), 0.003);
  assert.equal(prefs.get("video_fps"), undefined);
  assert.equal(prefs.get("optional_audio_default_enable"), true);
  const changed: string[] = [];
  prefs.onChange((k) => changed.push(k));
  assert.ok(prefs.set("microphone_gain", 2.5));
  assert.equal(prefs.get("microphone_gain"), 2.5);
  prefs.setFragment([["microphone_gain", "3"], ["webrtc_debug", "yes"], ["bogus", "1"]]);
  assert.equal(prefs.get("microphone_gain"), 3);
  assert.equal(prefs.get("webrtc_debug"), true);
  assert.ok(!prefs.set("rnnoise", "maybe"));
  assert.equal(parsePrefValue("rnnoise", "0"), false);
  assert.equal(parsePrefValue("rnnoise", "no"), false);
  assert.ok(changed.includes("webrtc_debug"));
});

// ---- signaling with a fake socket and fake clock ----

class FakeSocket implements SocketLike {
  sent: string[] = [];
  closed = false;
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: any) => void) | null = null;
  onclose: ((ev: any) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;
  send(d: string) {
    this.sent.push(d);
  }
  close() {
    this.closed = true;
    (this.onclose as ((e: unknown) => void) | null)?.({});
  }
  recv(s: string) {
    this.onmessage?.({ data: s });
  }
}

class FakeTimers implements Timers {
  now = 0;
  private next = 1;
  jobs = new Map<number, { at: number; f: () => void; every?: number }>();
  setTimeout(f: () => void, ms: number) {
    const id = this.next++;
    this.jobs.set(id, { at: this.now + ms, f });
    return id;
  }
  setInterval(f: () => void, ms: number) {
    const id = this.next++;
    this.jobs.set(id, { at: this.now + ms, f, every: ms });
    return id;
  }
  clearTimeout(h: unknown) {
    this.jobs.delete(h as number);
  }
  clearInterval(h: unknown) {
    this.jobs.delete(h as number);
  }
  advance(ms: number) {
    const end = this.now + ms;
    for (;;) {
      let best: [number, { at: number; f: () => void; every?: number }] | null = null;
      for (const e of this.jobs) if (e[1].at <= end && (!best || e[1].at < best[1].at)) best = e;
      if (!best) break;
      this.now = best[1].at;
      if (best[1].every) best[1].at += best[1].every;
      else this.jobs.delete(best[0]);
      best[1].f();
    }
    this.now = end;
  }
}

test("signaling: pings every 30 s, reconnects with backoff and rejoins + rewatches", async () => {
  const socks: FakeSocket[] = [];
  const timers = new FakeTimers();
  const inits: [number, boolean][] = [];
  const packets: P.ClientboundPacket[] = [];
  const delays: number[] = [];
  const s = new Signaling("ws://x/signaling", () => {
    const f = new FakeSocket();
    socks.push(f);
    return f;
  }, { onInit: (id, _v, re) => inits.push([id, re]), onPacket: (p) => packets.push(p), onDisconnect: (d) => delays.push(d) }, { timers, random: () => 1 });
  s.start();
  s.join("a".repeat(64));
  s.watch(["b".repeat(64)]);
  const a = socks[0]!;
  a.onopen!({} as never);
  assert.deepEqual(a.sent, []); // nothing before init
  a.recv('{"init":{"your_id":5,"version":"keksbox 0.1.0"}}');
  assert.deepEqual(a.sent, [`{"watch_rooms":["${"b".repeat(64)}"]}`, `{"join":{"hash":"${"a".repeat(64)}"}}`]);
  a.recv('{"client_join":{"id":5}}');
  assert.deepEqual(packets, [{ kind: "client_join", id: 5 }]);
  timers.advance(29_999);
  assert.equal(a.sent.length, 2);
  timers.advance(1);
  assert.equal(a.sent[2], '{"ping":null}');
  timers.advance(30_000);
  assert.equal(a.sent.filter((x) => x === '{"ping":null}').length, 2);
  // Drop: reconnect after backoff, doubling, capped.
  a.close();
  assert.equal(socks.length, 1);
  timers.advance(delays[0]!);
  assert.equal(socks.length, 2);
  socks[1]!.close(); // fails again
  timers.advance(delays[1]!);
  const b = socks[2]!;
  assert.ok(delays[1]! > delays[0]!, `backoff grows: ${delays}`);
  b.onopen!({} as never);
  b.recv('{"init":{"your_id":9,"version":"keksbox 0.1.0"}}');
  assert.deepEqual(inits, [[5, false], [9, true]]);
  assert.deepEqual(b.sent, [`{"watch_rooms":["${"b".repeat(64)}"]}`, `{"join":{"hash":"${"a".repeat(64)}"}}`]);
  // Old socket's ping timer is gone.
  timers.advance(30_000);
  assert.equal(a.sent.filter((x) => x === '{"ping":null}').length, 2);
  // Backoff resets after a successful init and never exceeds the cap.
  for (let i = 0; i < 10; i++) s.nextDelay();
  assert.ok(s.nextDelay() <= 2000);
  // Garbage from the relay is survived.
  const w = await warnings(() => {
    b.recv("garbage");
    b.recv('{"nope":1}');
    b.onmessage!({ data: new ArrayBuffer(3) });
  });
  assert.equal(w.length, 3);
  s.close();
});

test("signaling: reconnectNow skips the backoff; a closed client stays closed", () => {
  const socks: FakeSocket[] = [];
  const timers = new FakeTimers();
  const s = new Signaling("ws://x/signaling", () => {
    const f = new FakeSocket();
    socks.push(f);
    return f;
  }, { onInit: () => {}, onPacket: () => {}, onDisconnect: () => {} }, { timers });
  s.start();
  s.reconnectNow(); // connected or connecting: nothing to skip
  assert.equal(socks.length, 1);
  socks[0]!.close();
  s.reconnectNow();
  assert.equal(socks.length, 2);
  s.close();
  timers.advance(60_000);
  assert.equal(socks.length, 2);
});

// ---- file transfer over a fake data channel ----

class FakeChannel extends EventTarget implements ChannelLike {
  readyState = "open";
  bufferedAmount = 0;
  bufferedAmountLowThreshold = 0;
  binaryType = "blob";
  peer: FakeChannel | null = null;
  send(d: string | ArrayBuffer) {
    if (typeof d !== "string") assert.ok(d.byteLength <= CHUNK, "chunk too big");
    const p = this.peer!;
    queueMicrotask(() => p.dispatchEvent(Object.assign(new Event("message"), { data: d })));
  }
  close() {
    this.readyState = "closed";
    const p = this.peer!;
    setTimeout(() => {
      p.readyState = "closed";
      p.dispatchEvent(new Event("close"));
    }, 0);
  }
}

function pair(): [FakeChannel, FakeChannel] {
  const a = new FakeChannel();
  const b = new FakeChannel();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

function memorySink() {
  const parts: Uint8Array[] = [];
  const s = { closed: false, aborted: "", parts };
  const sink: FileSink = {
    write: (c) => void parts.push(c),
    close: () => void (s.closed = true),
    abort: (r) => void (s.aborted = r),
  };
  return { s, sink };
}

test("file transfer: ≤32 KiB chunks, end, close; receiver gets identical bytes", async () => {
  const data = new Uint8Array(100_000 + 7);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 255;
  const [a, b] = pair();
  const { s, sink } = memorySink();
  const got = receiveFile(b, sink, data.length, () => {});
  await sendFile(a, new Blob([data]), () => {}, 50);
  assert.equal(await got, true);
  assert.ok(s.closed);
  const all = Buffer.concat(s.parts);
  assert.ok(Buffer.from(data).equals(all));
  assert.equal(a.bufferedAmountLowThreshold, 64 * 1024);
});

test("file transfer: the sender closes the finished channel only after a grace", async () => {
  const [a, b] = pair();
  const { sink } = memorySink();
  const got = receiveFile(b, sink, 3, () => {});
  await sendFile(a, new Blob([new Uint8Array(3)]), () => {}, 200);
  assert.equal(await got, true);
  assert.equal(a.readyState, "open", "still open right after the end");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(a.readyState, "closed", "closed after the grace");
});

test("file transfer: close without end is a failure", async () => {
  const [a, b] = pair();
  const { s, sink } = memorySink();
  const got = receiveFile(b, sink, 10, () => {});
  a.send(new Uint8Array(5).buffer);
  a.close();
  assert.equal(await got, false);
  assert.equal(s.aborted, "closed before end");
});

test("src/protocol never touches the DOM", () => {
  const dir = join(process.cwd(), "src", "protocol");
  for (const f of readdirSync(dir)) {
    const code = readFileSync(join(dir, f), "utf8").replace(/\/\/.*$/gm, "");
    assert.doesNotMatch(code, /\b(document|window|localStorage|navigator|HTMLElement)\b/, f);
  }
});
