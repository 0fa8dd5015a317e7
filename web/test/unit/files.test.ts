// Receiving files against a sender that lies about the size, and the bounded in-memory
// download sink (issue 11): a transfer fails instead of growing what the receiver holds.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ChannelLike, FileSink, receiveFile } from "../../src/protocol/files";
import { memorySink } from "../../src/ui/download";

/** The receiving end of a data channel: the test pushes messages into it. */
class Inbound extends EventTarget implements ChannelLike {
  readyState = "open";
  bufferedAmount = 0;
  bufferedAmountLowThreshold = 0;
  binaryType = "blob";
  closed = false;
  send(): void {}
  close(): void {
    this.closed = true;
  }
  push(data: string | ArrayBuffer): void {
    this.dispatchEvent(Object.assign(new Event("message"), { data }));
  }
}

function recordingSink(failAfter = Infinity) {
  const s = { written: 0, closed: false, aborted: "" };
  const sink: FileSink = {
    write: (c) => {
      if (s.written + c.byteLength > failAfter) throw new Error("disk full");
      s.written += c.byteLength;
    },
    close: () => void (s.closed = true),
    abort: (r) => void (s.aborted = r),
  };
  return { s, sink };
}

const quietly = async <T>(f: () => Promise<T>): Promise<T> => {
  const orig = console.warn;
  console.warn = () => {};
  try {
    return await f();
  } finally {
    console.warn = orig;
  }
};

test("a file that sends more than its announced size fails at once and the channel is closed", async () => {
  const ch = new Inbound();
  const { s, sink } = recordingSink();
  const progress: number[] = [];
  const ok = await quietly(async () => {
    const done = receiveFile(ch, sink, 10, (n) => progress.push(n));
    ch.push(new Uint8Array(8).buffer);
    ch.push(new Uint8Array(8).buffer); // 16 > 10
    ch.push(new Uint8Array(1 << 20).buffer); // ignored: the transfer already failed
    ch.push("end");
    return done;
  });
  assert.equal(ok, false);
  assert.ok(s.written <= 8, `nothing past the announced size reached the sink (${s.written})`);
  assert.match(s.aborted, /more than the 10 bytes announced/);
  assert.equal(s.closed, false);
  assert.ok(ch.closed, "the channel is closed on the sender");
  assert.deepEqual(progress, [8]);
});

test("exactly the announced size, then end: complete", async () => {
  const ch = new Inbound();
  const { s, sink } = recordingSink();
  const done = receiveFile(ch, sink, 10, () => {});
  ch.push(new Uint8Array(4).buffer);
  ch.push(new Uint8Array(6).buffer);
  ch.push("end");
  assert.equal(await done, true);
  assert.deepEqual(s, { written: 10, closed: true, aborted: "" });
});

test("a sink that refuses a write fails the transfer even when end follows", async () => {
  const ch = new Inbound();
  const { s, sink } = recordingSink(5);
  const ok = await quietly(async () => {
    const done = receiveFile(ch, sink, 10, () => {});
    ch.push(new Uint8Array(4).buffer);
    ch.push(new Uint8Array(6).buffer);
    ch.push("end");
    return done;
  });
  assert.equal(ok, false);
  assert.equal(s.closed, false, "a failed file is never closed as if complete");
  assert.match(s.aborted, /disk full/);
  assert.ok(ch.closed);
});

test("the in-memory sink keeps at most its limit and throws past it", async () => {
  const saved: Blob[] = [];
  const sink = memorySink(100, (b) => saved.push(b));
  await sink.write(new Uint8Array(60).fill(1));
  await sink.write(new Uint8Array(40).fill(2));
  assert.throws(() => sink.write(new Uint8Array(1)), /in-memory limit of 100 B/);
  assert.throws(() => sink.write(new Uint8Array(1)), /in-memory limit/, "stays refused");
  sink.abort("too big");
  assert.equal(saved.length, 0);
  const ok = memorySink(100, (b) => saved.push(b));
  await ok.write(new Uint8Array(100).fill(3));
  await ok.close();
  assert.equal(saved.length, 1);
  assert.deepEqual(new Uint8Array(await saved[0]!.arrayBuffer()), new Uint8Array(100).fill(3));
});

test("a receive into the in-memory sink past its limit fails the transfer", async () => {
  const ch = new Inbound();
  const saved: Blob[] = [];
  const ok = await quietly(async () => {
    const done = receiveFile(ch, memorySink(1000, (b) => saved.push(b)), undefined, () => {});
    for (let i = 0; i < 5; i++) ch.push(new Uint8Array(300).buffer);
    ch.push("end");
    return done;
  });
  assert.equal(ok, false);
  assert.equal(saved.length, 0, "nothing offered for saving");
});
