// The scenario fixtures of proto/tests/data/session/, run through the web client's Room: the
// Rust Session runs the same files (proto/tests/session_fixtures.rs), so the two cannot drift.
// The fixture format is described there. Here, what signaling.ts does around the Room is done
// by the test: an `init` becomes `room.reset(id)` plus the join packet, a packet the parser
// drops is reported as ignored. What the Room hands to a member's Peer (requests, SDP, ICE) is
// recorded by replacing those Peer methods.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { RoomKey, unhex } from "../../src/protocol/crypto";
import * as P from "../../src/protocol/packets";
import { cleanUsername, LocalResource, Member, Peer, RemoteResource, Room, RoomEvents } from "../../src/protocol/room";

const DIR = join(process.env.KEKSBOX_FIXTURES ?? join(process.cwd(), "..", "proto", "tests", "data"), "session");

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

interface Step {
  relay?: Obj;
  message?: { from: number; inner?: Json; claims?: number; key?: string; plaintext?: string; sealed?: string };
  provide?: P.ProvideInfo;
  provide_stop?: string;
  events?: Json[];
  sent?: Json[];
}

interface Fixture {
  about: string;
  key: string;
  hash: string;
  username: string;
  steps: Step[];
}

/** A peer connection that only needs to exist: nothing here negotiates. */
class InertPC {
  signalingState = "stable";
  connectionState = "new";
  close() {}
}
(globalThis as unknown as { RTCPeerConnection: unknown }).RTCPeerConnection = InertPC;

/** Where the replaced Peer methods record; null while the test itself causes the calls. */
let peerLog: Json[] | null = null;
const memberOf = (p: Peer) => (p as unknown as { member: Member }).member.id;
Peer.prototype.startSending = function (this: Peer, l: LocalResource) {
  peerLog?.push({ request: { from: memberOf(this), id: l.id } });
};
Peer.prototype.stopSending = function (this: Peer, id: string) {
  peerLog?.push({ request_stop: { from: memberOf(this), id } });
};
Peer.prototype.onDescription = async function (this: Peer, d: RTCSessionDescriptionInit) {
  peerLog?.push({ [d.type]: { from: memberOf(this), sdp: d.sdp ?? "" } });
};
Peer.prototype.onCandidate = async function (this: Peer, c: P.IceCandidateJson) {
  peerLog?.push({ ice_candidate: { from: memberOf(this), candidate: c as unknown as Json } });
};

function localResource(info: P.ProvideInfo): LocalResource {
  if (info.kind === "track") {
    return { id: info.id, kind: "track", track_kind: info.track_kind!, label: info.label ?? "", track: {} as MediaStreamTrack, stream: { id: info.id } as MediaStream };
  }
  return { id: info.id, kind: "file", label: info.label ?? "", size: info.size ?? 0, file: new Blob([]) };
}

async function run(name: string): Promise<number> {
  const fx = JSON.parse(readFileSync(join(DIR, name), "utf8")) as Fixture;
  const key = await RoomKey.fromBytes(unhex(fx.key));
  const events: Json[] = [];
  const sent: Promise<Json>[] = [];
  // Resources whose provideStop came from a member's removal, reported with its leave.
  const leaving = new Map<number, string[]>();
  let room: Room;
  const stopped = (r: RemoteResource) => {
    if (room.members.get(r.owner.id) === r.owner) events.push({ provide_stop: { from: r.owner.id, id: r.info.id } });
    else leaving.set(r.owner.id, [...(leaving.get(r.owner.id) ?? []), r.info.id]);
  };
  const ev: RoomEvents = {
    join: (m) => void events.push({ join: m.id }),
    leave: (m) => {
      events.push({ leave: { id: m.id, resources: (leaving.get(m.id) ?? []).sort() } });
      leaving.delete(m.id);
    },
    update: (m) => void events.push({ identify: { id: m.id, username: m.username } }),
    chat: (m, msg) => void events.push({ chat: { from: m.id, message: msg } }),
    provide: (r) => void events.push({ provide: { from: r.owner.id, info: { ...r.info } as unknown as Json } }),
    provideUpdate: (r) => void events.push({ provide_update: { from: r.owner.id, info: { ...r.info } as unknown as Json } }),
    provideStop: stopped,
    resourceState: () => {},
    preview: (r, data) => void events.push({ preview: { from: r.owner.id, id: r.info.id, data } }),
    fileSink: async () => null,
    fileProgress: () => {},
    uploadProgress: () => {},
    peerState: () => {},
    ready: (id) => void events.push({ ready: id }),
    ignored: (from) => void events.push({ ignored: from }),
  };
  room = new Room(fx.hash, key, (p) => {
    if ("relay" in p) {
      const me = room.myId;
      const to = p.relay.recipient ?? null;
      sent.push(
        key.open(p.relay.message).then((plain) => {
          const w = JSON.parse(plain!) as { sender: number; inner: Json };
          assert.equal(w.sender, me, "sealed as ourselves");
          return { relay: { to, inner: w.inner } };
        }),
      );
    } else sent.push(Promise.resolve(p as unknown as Json));
    return true;
  }, ev, { rtcConfig: {}, autoRequest: () => false });
  room.username = fx.username;

  const settle = async () => {
    for (let i = 0; i < 4; i++) {
      await Promise.all([...room.members.values()].map((m) => m.queue));
      await (room as unknown as { sendOrder: Promise<void> }).sendOrder;
      await new Promise((r) => setTimeout(r, 0));
    }
  };

  for (const [i, step] of fx.steps.entries()) {
    events.length = 0;
    sent.length = 0;
    const quiet = warningsOff();
    try {
      if (step.relay) {
        peerLog = events;
        const p = P.parseClientbound(JSON.stringify(step.relay));
        if (p === null) events.push({ ignored: null });
        else if (p.kind === "init") {
          room.reset(p.your_id);
          sent.push(Promise.resolve(P.join(room.hash) as unknown as Json));
        } else room.handle(p);
      } else if (step.message) {
        peerLog = events;
        const m = step.message;
        let sealed = m.sealed;
        if (sealed === undefined) {
          const k = m.key ? await RoomKey.fromBytes(unhex(m.key)) : key;
          sealed = await k.seal(m.plaintext ?? JSON.stringify({ sender: m.claims ?? m.from, inner: m.inner }));
        }
        const p = P.parseClientbound(JSON.stringify({ message: { sender: m.from, message: sealed } }));
        assert.ok(p, "a message packet parses");
        room.handle(p);
      } else if (step.provide) {
        peerLog = null;
        room.addLocal(localResource(step.provide));
      } else if (step.provide_stop !== undefined) {
        peerLog = null; // removeLocal stops sending to everyone: that is not a member's request_stop
        room.removeLocal(step.provide_stop);
      } else assert.fail(`${name}: step ${i}: unknown step ${JSON.stringify(step)}`);
      await settle();
    } finally {
      quiet();
      peerLog = null;
    }
    const out = await Promise.all(sent);
    const what = `${name}: step ${i}: ${JSON.stringify(step.relay ?? step.message ?? step.provide ?? step.provide_stop)}`;
    assert.deepEqual(events, step.events ?? [], `${what}: events`);
    assert.deepEqual(out, step.sent ?? [], `${what}: sent`);
  }
  room.close();
  return fx.steps.length;
}

/** The Room warns about everything it ignores; the fixtures check those through `ignored`. */
function warningsOff(): () => void {
  const orig = console.warn;
  console.warn = () => {};
  return () => {
    console.warn = orig;
  };
}

const files = readdirSync(DIR).filter((f) => f.endsWith(".json")).sort();

test("session fixtures: there are enough of them", () => {
  assert.ok(files.length >= 10, `only ${files.length} fixtures in ${DIR}`);
});

for (const f of files) {
  test(`session fixture ${f}`, async () => {
    const steps = await run(f);
    assert.ok(steps > 3);
  });
}

test("cleanUsername counts code points and cuts after removing controls", () => {
  const cases: [string, string][] = [
    ["alice", "alice"],
    ["a\u0000b\u001bc\u007fd\u0085e\n", "abcde"],
    ["é".repeat(65), "é".repeat(64)],
    ["\u{1F36A}".repeat(100), "\u{1F36A}".repeat(64)],
    ["\u0001".repeat(10) + "x".repeat(64), "x".repeat(64)],
    ["", ""],
  ];
  for (const [raw, want] of cases) assert.equal(cleanUsername(raw), want, JSON.stringify(raw));
});
