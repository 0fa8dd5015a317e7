// The Room state machine with a fake RTCPeerConnection: membership, identify, provide →
// request on demand, and survival of bad input from the relay or from members.

import assert from "node:assert/strict";
import { test } from "node:test";

import { RoomKey } from "../../src/protocol/crypto";
import * as P from "../../src/protocol/packets";
import { Member, RemoteResource, Room, RoomEvents } from "../../src/protocol/room";

type FakeDesc = { type: "offer" | "answer" | "rollback" | "pranswer"; sdp?: string };
const tick = () => new Promise<void>((r) => setTimeout(r, 0));
const fakeMedia = (id: string) => Object.assign(new EventTarget(), { id });

/**
 * A fake RTCPeerConnection that models the signaling state machine the way perfect
 * negotiation depends on it: stable → have-local-offer on an offer, have-remote-offer → stable
 * on the answer, rollback (explicit, or implicit when a remote offer is set in have-local-offer),
 * InvalidStateError otherwise, and negotiationneeded whenever, back in stable, the sent tracks
 * differ from those the last completed negotiation agreed on. An SDP here is the JSON list of
 * the stream ids its author sends; an answer carries none (the answerer's own new tracks need
 * an offer of its own, as in a real glare where the rolled-back transceiver stays unassociated).
 */
class FakePC {
  added: unknown[] = [];
  channels: string[] = [];
  closed = false;
  connectionState = "new";
  signalingState: "stable" | "have-local-offer" | "have-remote-offer" = "stable";
  localDescription: { type: string; sdp: string } | null = null;
  remoteDescription: { type: string; sdp: string } | null = null;
  /** Stream ids of the tracks we send, and of those both sides agreed on. */
  readonly sending = new Set<string>();
  readonly negotiated = new Set<string>();
  /** Remote stream ids ontrack fired for. */
  readonly received = new Set<string>();
  /** Every signaling step, in order: "local offer", "rollback", "remote offer", ... */
  readonly steps: string[] = [];
  private offered: string[] = [];
  private nnQueued = false;
  onnegotiationneeded: (() => void) | null = null;
  onicecandidate: unknown = null;
  onconnectionstatechange: unknown = null;
  ontrack: ((ev: { track: EventTarget; streams: EventTarget[] }) => void) | null = null;
  ondatachannel: unknown = null;
  addTrack(t: unknown, stream?: { id: string }) {
    this.added.push(t);
    if (stream) this.sending.add(stream.id);
    this.updateNegotiationNeeded();
    return { track: t, stream };
  }
  createDataChannel(label: string) {
    this.channels.push(label);
    return { label, readyState: "connecting", addEventListener() {}, removeEventListener() {}, close() {} };
  }
  removeTrack(s: { stream?: { id: string } }) {
    if (s.stream) this.sending.delete(s.stream.id);
    this.updateNegotiationNeeded();
  }
  async setLocalDescription(d?: FakeDesc) {
    await tick();
    this.check();
    const type = d?.type ?? (this.signalingState === "have-remote-offer" ? "answer" : "offer");
    if (type === "rollback") {
      if (this.signalingState !== "have-local-offer") throw new DOMException("nothing to roll back", "InvalidStateError");
      this.rollback();
      this.updateNegotiationNeeded();
    } else if (type === "offer") {
      if (this.signalingState !== "stable") throw new DOMException(`offer in ${this.signalingState}`, "InvalidStateError");
      this.offered = [...this.sending];
      this.localDescription = { type, sdp: JSON.stringify(this.offered) };
      this.signalingState = "have-local-offer";
      this.steps.push("local offer");
    } else if (type === "answer") {
      if (this.signalingState !== "have-remote-offer") throw new DOMException(`answer in ${this.signalingState}`, "InvalidStateError");
      this.localDescription = { type, sdp: "[]" };
      this.signalingState = "stable";
      this.steps.push("local answer");
      this.updateNegotiationNeeded();
    } else throw new DOMException(`unsupported ${type}`, "InvalidStateError");
  }
  async setRemoteDescription(d: FakeDesc) {
    await tick();
    this.check();
    const streams = JSON.parse(d.sdp ?? "[]") as string[];
    if (d.type === "offer") {
      if (this.signalingState === "have-local-offer") this.rollback(); // implicit rollback
      if (this.signalingState !== "stable") throw new DOMException(`remote offer in ${this.signalingState}`, "InvalidStateError");
      this.remoteDescription = { type: d.type, sdp: d.sdp ?? "" };
      this.signalingState = "have-remote-offer";
      this.steps.push("remote offer");
    } else if (d.type === "answer") {
      if (this.signalingState !== "have-local-offer") throw new DOMException(`remote answer in ${this.signalingState}`, "InvalidStateError");
      this.remoteDescription = { type: d.type, sdp: d.sdp ?? "" };
      this.signalingState = "stable";
      this.steps.push("remote answer");
      this.negotiated.clear();
      for (const id of this.offered) this.negotiated.add(id);
      this.updateNegotiationNeeded();
    } else throw new DOMException(`unsupported ${d.type}`, "InvalidStateError");
    for (const id of streams) {
      if (this.received.has(id)) continue;
      this.received.add(id);
      this.ontrack?.({ track: fakeMedia("track-" + id), streams: [fakeMedia(id)] });
    }
  }
  async addIceCandidate() {}
  restartIce() {}
  close() {
    this.closed = true;
  }
  private check() {
    if (this.closed) throw new DOMException("closed", "InvalidStateError");
  }
  private rollback() {
    this.steps.push("rollback");
    this.signalingState = "stable";
    this.localDescription = null;
    this.offered = [];
  }
  private needsNegotiation() {
    return this.sending.size !== this.negotiated.size || [...this.sending].some((id) => !this.negotiated.has(id));
  }
  private updateNegotiationNeeded() {
    if (this.nnQueued || this.closed) return;
    this.nnQueued = true;
    setTimeout(() => {
      this.nnQueued = false;
      if (this.closed || this.signalingState !== "stable" || !this.needsNegotiation()) return;
      this.steps.push("negotiationneeded");
      this.onnegotiationneeded?.();
    }, 0);
  }
}
(globalThis as unknown as { RTCPeerConnection: unknown }).RTCPeerConnection = FakePC;

const KEY = "94dd89ee5f4ea23cede2dcf38612d82c32908e05ce9b7cbf54670a1e06322994";
const unhex = (s: string) => new Uint8Array(s.match(/../g)!.map((x) => parseInt(x, 16)));

async function setup(autoRequest = true) {
  const key = await RoomKey.fromBytes(unhex(KEY));
  const sent: { to?: number; inner: P.RelayMessage }[] = [];
  const log: string[] = [];
  const ev: RoomEvents = {
    join: (m) => log.push(`join ${m.id}`),
    leave: (m) => log.push(`leave ${m.id}`),
    update: (m) => log.push(`name ${m.id} ${m.username}`),
    chat: (m, c) => log.push(`chat ${m.id} ${JSON.stringify(c)}`),
    provide: (r) => log.push(`provide ${r.info.id}`),
    provideStop: (r) => log.push(`provide_stop ${r.info.id}`),
    resourceState: (r: RemoteResource) => log.push(`state ${r.info.id} ${r.state}`),
    preview: () => {},
    fileSink: async () => null,
    fileProgress: () => {},
    uploadProgress: () => {},
    peerState: () => {},
    ignored: (from) => log.push(`ignored ${from}`),
  };
  const relayed: Promise<void>[] = [];
  const room = new Room("a".repeat(64), key, (p) => {
    const r = (p as { relay?: { recipient?: number; message: string } }).relay;
    if (r) relayed.push(key.openMessage(1, r.message).then((inner) => void sent.push({ to: r.recipient, inner: inner! })));
    return true;
  }, ev, { rtcConfig: {}, autoRequest: () => autoRequest });
  room.username = "me";
  room.reset(1);
  // A message from member `from`, sealed as the relay would deliver it.
  const deliver = async (from: number, inner: unknown) => room.handle({ kind: "message", sender: from, message: await key.seal(JSON.stringify({ sender: from, inner })) });
  const settle = async () => {
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 5));
      await Promise.all(relayed);
    }
  };
  return { room, key, sent, log, deliver, settle };
}

test("room: join identifies to the newcomer; identify and chat arrive; leave cleans up", async () => {
  const { room, sent, log, deliver, settle } = await setup();
  room.handle({ kind: "client_join", id: 1 }); // ourselves: no member
  room.handle({ kind: "client_join", id: 7 });
  await settle();
  assert.deepEqual(sent, [{ to: 7, inner: { identify: { username: "me" } } }]);
  await deliver(7, { identify: { username: "bob" } });
  await deliver(7, { chat: { text: "<b>hi</b>" } });
  await settle();
  room.handle({ kind: "client_leave", id: 7 });
  assert.deepEqual(log, ["join 7", "name 7 bob", 'chat 7 {"text":"<b>hi</b>"}', "leave 7"]);
  assert.equal(room.members.size, 0);
});

test("room: resources are requested on demand only, and sent only when requested", async () => {
  const { room, sent, deliver, settle } = await setup(false);
  room.handle({ kind: "client_join", id: 7 });
  await deliver(7, { provide: { id: "v1", kind: "track", track_kind: "video", label: "Camera" } });
  await settle();
  const m = room.members.get(7) as Member;
  assert.equal(m.resources.get("v1")!.state, "available");
  assert.ok(!sent.some((s) => "request" in s.inner), "no automatic request when the preference says no");
  room.request(m.resources.get("v1")!);
  await settle();
  assert.deepEqual(sent.at(-1), { to: 7, inner: { request: { id: "v1" } } });
  // Our own file is announced, but no channel opens until the member asks.
  room.addLocal({ id: "f1", kind: "file", label: "a.txt", size: 3, file: new Blob(["abc"]) });
  await settle();
  assert.deepEqual(sent.at(-1), { to: undefined, inner: { provide: { id: "f1", kind: "file", label: "a.txt", size: 3 } } });
  const pc = m.peer.pc as unknown as FakePC;
  assert.deepEqual(pc.channels, []);
  await deliver(7, { request: { id: "f1" } });
  await settle();
  assert.deepEqual(pc.channels, ["f1"]);
});

test("room: audio is auto-requested when the preference allows", async () => {
  const { room, sent, deliver, settle } = await setup(true);
  room.handle({ kind: "client_join", id: 7 });
  await deliver(7, { provide: { id: "a1", kind: "track", track_kind: "audio" } });
  await settle();
  assert.deepEqual(sent.at(-1), { to: 7, inner: { request: { id: "a1" } } });
});

test("room: bad ciphertext, forged sender, non-members and unknown kinds are survived with warnings", async () => {
  const { room, key, log, deliver, settle } = await setup();
  room.handle({ kind: "client_join", id: 7 });
  const warns: string[] = [];
  const orig = console.warn;
  console.warn = (...a: unknown[]) => void warns.push(a.map(String).join(" "));
  try {
    room.handle({ kind: "message", sender: 7, message: "garbage!!" });
    room.handle({ kind: "message", sender: 7, message: await key.seal(JSON.stringify({ sender: 8, inner: { chat: { text: "forged" } } })) });
    room.handle({ kind: "message", sender: 9, message: await key.seal(JSON.stringify({ sender: 9, inner: { chat: { text: "stranger" } } })) });
    await deliver(7, { teleport: { to: "mars" } });
    await deliver(7, { request: { id: "nope" } });
    await deliver(7, { chat: { text: "still alive" } });
    await settle();
  } finally {
    console.warn = orig;
  }
  assert.deepEqual(log.filter((l) => l.startsWith("chat")), ['chat 7 {"text":"still alive"}']);
  // Each dropped message is reported once, with the member it came from (the stranger's at once,
  // the others after decryption), and warned about.
  assert.deepEqual(log.filter((l) => l.startsWith("ignored")).sort(), ["ignored 7", "ignored 7", "ignored 7", "ignored 7", "ignored 9"]);
  assert.ok(warns.length >= 5, warns.join("\n"));
});

test("room: a message the relay would refuse (over 8 MiB sealed) is rejected before sending", async () => {
  const { room, sent, settle } = await setup();
  room.handle({ kind: "client_join", id: 7 });
  await settle();
  const before = sent.length;
  await assert.rejects(room.sendChat({ text: "x".repeat(7 * 1024 * 1024) }), /too large/);
  await room.sendChat({ text: "small" });
  await settle();
  assert.equal(sent.length, before + 1);
});

// ---------- perfect negotiation: two Rooms through an in-memory relay the test controls ----------

interface Wire {
  from: number;
  to: number;
  sealed: string;
  inner: P.RelayMessage | null;
}

const quietEvents = (): RoomEvents => ({
  join() {},
  leave() {},
  update() {},
  chat() {},
  provide() {},
  provideStop() {},
  resourceState() {},
  preview() {},
  fileSink: async () => null,
  fileProgress() {},
  uploadProgress() {},
  peerState() {},
});

const camera = (id: string) => ({ id, kind: "track" as const, track_kind: "video" as const, label: "Camera", track: {} as MediaStreamTrack, stream: { id } as unknown as MediaStream });

/** Rooms for `ids`, joined to each other; messages wait in `queue` until `pump` delivers them. */
async function pair(ids: number[]) {
  const key = await RoomKey.fromBytes(unhex(KEY));
  const queue: Wire[] = [];
  const wire: Wire[] = [];
  const opening: Promise<unknown>[] = [];
  const rooms = new Map<number, Room>();
  for (const id of ids) {
    const room = new Room("a".repeat(64), key, (p) => {
      const r = (p as { relay?: { recipient?: number; message: string } }).relay;
      if (!r) return true;
      for (const to of r.recipient === undefined ? ids.filter((x) => x !== id) : [r.recipient]) {
        const w: Wire = { from: id, to, sealed: r.message, inner: null };
        queue.push(w);
        wire.push(w);
        opening.push(key.openMessage(id, r.message).then((inner) => (w.inner = inner)));
      }
      return true;
    }, quietEvents(), { rtcConfig: {}, autoRequest: () => true });
    room.username = `u${id}`;
    room.reset(id);
    rooms.set(id, room);
  }
  for (const a of ids) for (const b of ids) rooms.get(a)!.handle({ kind: "client_join", id: b });
  const peer = (at: number, of: number) => rooms.get(at)!.members.get(of)!.peer;
  const pc = (at: number, of: number) => peer(at, of).pc as unknown as FakePC;
  const kind = (w: Wire) => (w.inner ? P.relayKind(w.inner) : "?");
  /**
   * Delivers queued messages in order, except those `hold` keeps back (and whatever follows
   * them on the same from→to path, so no path is reordered), until `done()` holds.
   */
  const pump = async (hold: (w: Wire) => boolean, done: () => boolean, what: string) => {
    for (let round = 0; round < 2000; round++) {
      await Promise.all(opening);
      if (done()) return;
      const blocked = new Set<string>();
      for (const w of [...queue]) {
        const path = `${w.from}>${w.to}`;
        // Not yet opened (relayed while we waited): its kind is unknown, so it waits a round.
        if (blocked.has(path) || w.inner === null || hold(w)) {
          blocked.add(path);
          continue;
        }
        queue.splice(queue.indexOf(w), 1);
        rooms.get(w.to)!.handle({ kind: "message", sender: w.from, message: w.sealed });
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    const state = ids.flatMap((a) => ids.filter((b) => b !== a).map((b) => `${a}→${b}: ${pc(a, b).signalingState} [${pc(a, b).steps.join(", ")}]`));
    assert.fail(`timed out waiting for ${what}; queued: ${queue.map((w) => `${w.from}>${w.to} ${kind(w)}`).join(", ")}; ${state.join("; ")}`);
  };
  /** The offer/answer kinds one member sent, in order. */
  const sdpFrom = (id: number) => wire.filter((w) => w.from === id && (kind(w) === "offer" || kind(w) === "answer")).map(kind);
  const idle = async () => {
    // Nothing more happens: no message in flight, no negotiation pending, for a while.
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 2));
      await Promise.all(opening);
      assert.equal(queue.length, 0, `unexpected late messages: ${queue.map((w) => `${w.from}>${w.to} ${kind(w)}`).join(", ")}`);
    }
  };
  return { rooms, queue, pc, peer, pump, sdpFrom, idle, kind };
}

test("room: messages are relayed in call order even when a later one seals first", async () => {
  const real = await RoomKey.fromBytes(unhex(KEY));
  let calls = 0;
  // The first seal (a big message, say) takes longer than the second.
  const slowFirst = {
    sealMessage: async (sender: number, inner: P.RelayMessage) => {
      const delay = calls++ === 0 ? 30 : 0;
      const sealed = await real.sealMessage(sender, inner);
      await new Promise((r) => setTimeout(r, delay));
      return sealed;
    },
  } as unknown as RoomKey;
  const order: string[] = [];
  const ev = new Proxy({}, { get: () => () => undefined }) as unknown as RoomEvents;
  const room = new Room("a".repeat(64), slowFirst, (p) => {
    const r = (p as { relay?: { message: string } }).relay;
    if (r) order.push(r.message);
    return true;
  }, ev, { rtcConfig: {}, autoRequest: () => false });
  room.reset(1);
  await Promise.all([room.send(P.answer("first")), room.send(P.offer("second"))]);
  const opened = await Promise.all(order.map((m) => real.openMessage(1, m)));
  assert.deepEqual(opened, [{ answer: "first" }, { offer: "second" }]);
});

test("room: glare — both offer at once; the polite side (lower id) rolls back and answers, the impolite side ignores the offer", async () => {
  const { rooms, queue, pc, peer, pump, sdpFrom, idle, kind } = await pair([4, 9]);
  await pump(() => false, () => rooms.get(4)!.members.get(9)!.username === "u9" && rooms.get(9)!.members.get(4)!.username === "u4", "identify");
  assert.equal(peer(4, 9).polite, true, "4 < 9: 4 is polite towards 9");
  assert.equal(peer(9, 4).polite, false);
  // Both provide a camera; each auto-requests the other's, so both add a track and offer.
  rooms.get(4)!.addLocal(camera("cam4"));
  rooms.get(9)!.addLocal(camera("cam9"));
  // Relay everything but the offers until both offers are in flight: a certain collision.
  const isOffer = (w: Wire) => kind(w) === "offer";
  await pump(isOffer, () => queue.filter(isOffer).length === 2, "both offers in flight");
  assert.deepEqual(queue.map((w) => `${w.from}>${w.to} ${kind(w)}`).sort(), ["4>9 offer", "9>4 offer"]);
  assert.equal(pc(4, 9).signalingState, "have-local-offer");
  assert.equal(pc(9, 4).signalingState, "have-local-offer");
  assert.equal(peer(4, 9).collisions + peer(9, 4).collisions, 0);
  // Now both offers arrive, each at a side that is itself waiting for an answer.
  const done = () =>
    queue.length === 0 &&
    pc(4, 9).signalingState === "stable" && pc(9, 4).signalingState === "stable" &&
    pc(4, 9).received.has("cam9") && pc(9, 4).received.has("cam4") &&
    pc(4, 9).negotiated.has("cam4") && pc(9, 4).negotiated.has("cam9");
  await pump(() => false, done, "both cameras negotiated, both sides stable");
  await idle();
  assert.ok(done(), "still settled");
  // The polite side gave its offer up (implicit rollback), answered, then offered again.
  assert.deepEqual(pc(4, 9).steps, ["negotiationneeded", "local offer", "rollback", "remote offer", "local answer", "negotiationneeded", "local offer", "remote answer"]);
  assert.deepEqual(sdpFrom(4), ["offer", "answer", "offer"]);
  // The impolite side never applied the colliding offer: its first remote description is the answer.
  assert.deepEqual(pc(9, 4).steps, ["negotiationneeded", "local offer", "remote answer", "remote offer", "local answer"]);
  assert.deepEqual(sdpFrom(9), ["offer", "answer"]);
  // One collision, seen once by each side.
  assert.equal(peer(4, 9).collisions, 1);
  assert.equal(peer(9, 4).collisions, 1);
  // Each side shows the other's camera.
  assert.equal(rooms.get(4)!.members.get(9)!.resources.get("cam9")!.state, "active");
  assert.equal(rooms.get(9)!.members.get(4)!.resources.get("cam4")!.state, "active");
  for (const r of rooms.values()) r.close();
});

for (const [offerer, answerer] of [[9, 4], [4, 9]] as const) {
  test(`room: no glare — ${offerer === 9 ? "the impolite" : "the polite"} side's offer reaches a stable peer, which answers; no collision counted`, async () => {
    const { rooms, queue, pc, peer, pump, sdpFrom, idle, kind } = await pair([4, 9]);
    await pump(() => false, () => rooms.get(answerer)!.members.get(offerer)!.username !== null && rooms.get(offerer)!.members.get(answerer)!.username !== null, "identify");
    rooms.get(offerer)!.addLocal(camera("cam"));
    const isOffer = (w: Wire) => kind(w) === "offer";
    await pump(isOffer, () => queue.some(isOffer), "the offer in flight");
    assert.equal(pc(offerer, answerer).signalingState, "have-local-offer");
    assert.equal(pc(answerer, offerer).signalingState, "stable", "the receiving side is stable when the offer arrives");
    await pump(() => false, () => queue.length === 0 && pc(offerer, answerer).signalingState === "stable" && pc(answerer, offerer).received.has("cam"), "negotiated");
    await idle();
    assert.deepEqual(pc(offerer, answerer).steps, ["negotiationneeded", "local offer", "remote answer"]);
    assert.deepEqual(pc(answerer, offerer).steps, ["remote offer", "local answer"]);
    assert.deepEqual(sdpFrom(offerer), ["offer"]);
    assert.deepEqual(sdpFrom(answerer), ["answer"]);
    assert.equal(peer(offerer, answerer).collisions, 0);
    assert.equal(peer(answerer, offerer).collisions, 0);
    assert.equal(rooms.get(answerer)!.members.get(offerer)!.resources.get("cam")!.state, "active");
    for (const r of rooms.values()) r.close();
  });
}
