// The Room state machine with a fake RTCPeerConnection: membership, identify, provide →
// request on demand, and survival of bad input from the relay or from members.

import assert from "node:assert/strict";
import { test } from "node:test";

import { RoomKey } from "../../src/protocol/crypto";
import * as P from "../../src/protocol/packets";
import { Member, RemoteResource, Room, RoomEvents } from "../../src/protocol/room";

class FakePC {
  added: unknown[] = [];
  channels: string[] = [];
  closed = false;
  connectionState = "new";
  signalingState = "stable";
  onnegotiationneeded: unknown = null;
  onicecandidate: unknown = null;
  onconnectionstatechange: unknown = null;
  ontrack: unknown = null;
  ondatachannel: unknown = null;
  addTrack(t: unknown) {
    this.added.push(t);
    return { track: t };
  }
  createDataChannel(label: string) {
    this.channels.push(label);
    return { label, readyState: "connecting", addEventListener() {}, removeEventListener() {}, close() {} };
  }
  removeTrack() {}
  close() {
    this.closed = true;
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
  assert.equal(warns.length, 5, warns.join("\n"));
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
