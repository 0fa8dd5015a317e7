// File transfer over one data channel per request (docs/PROTOCOL.md "File transfer"): binary
// messages of at most 32 KiB, then the text "end", then close. A close without "end" is a
// failed transfer. Flow control by bufferedAmount / bufferedAmountLowThreshold (64 KiB).

export const CHUNK = 32 * 1024;
export const LOW_WATER = 64 * 1024;
const HIGH_WATER = 1024 * 1024;
const READ_SLICE = 1024 * 1024;

/** The subset of RTCDataChannel the transfer needs (so tests can fake it). */
export interface ChannelLike {
  readonly readyState: string;
  readonly bufferedAmount: number;
  bufferedAmountLowThreshold: number;
  binaryType: string;
  send(d: string | ArrayBuffer): void;
  close(): void;
  addEventListener(t: string, f: (ev: any) => void, o?: { once?: boolean }): void;
  removeEventListener(t: string, f: (ev: any) => void): void;
}

export interface BlobLike {
  readonly size: number;
  slice(a: number, b: number): { arrayBuffer(): Promise<ArrayBuffer> };
}

function waitFor(ch: ChannelLike, ev: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const ok = () => {
      ch.removeEventListener("close", fail);
      resolve();
    };
    const fail = () => {
      ch.removeEventListener(ev, ok);
      reject(new Error("channel closed"));
    };
    ch.addEventListener(ev, ok, { once: true });
    ch.addEventListener("close", fail, { once: true });
  });
}

/**
 * How long a finished channel stays open for the receiver before the sender closes it. With
 * the close right after the queue drained, a native receiver (the webrtc crate) now and then
 * saw the close before the last 32 KiB and "end" (one run in about eight of a rift e2e test),
 * and failed a complete transfer. A receiver that closes first ends the wait.
 */
export const CLOSE_GRACE_MS = 5000;

/**
 * Sends `blob` on `ch`; resolves when all was handed over (the close follows after
 * `closeGrace` ms unless the receiver closes first).
 */
export async function sendFile(
  ch: ChannelLike,
  blob: BlobLike,
  onProgress: (sent: number) => void,
  closeGrace = CLOSE_GRACE_MS,
): Promise<void> {
  ch.binaryType = "arraybuffer";
  ch.bufferedAmountLowThreshold = LOW_WATER;
  if (ch.readyState === "connecting") await waitFor(ch, "open");
  let off = 0;
  while (off < blob.size) {
    const buf = await blob.slice(off, Math.min(blob.size, off + READ_SLICE)).arrayBuffer();
    for (let i = 0; i < buf.byteLength; i += CHUNK) {
      if (ch.readyState !== "open") throw new Error("channel closed");
      if (ch.bufferedAmount > HIGH_WATER) await waitFor(ch, "bufferedamountlow");
      ch.send(buf.slice(i, Math.min(buf.byteLength, i + CHUNK)));
    }
    off += buf.byteLength;
    onProgress(off);
  }
  if (ch.readyState !== "open") throw new Error("channel closed");
  ch.send("end");
  // Let the queue drain so closing cannot cut the tail off.
  if (ch.bufferedAmount > LOW_WATER) await waitFor(ch, "bufferedamountlow");
  while (ch.bufferedAmount > 0 && ch.readyState === "open") await new Promise((r) => setTimeout(r, 20));
  const later = setTimeout(() => {
    if (ch.readyState === "open") ch.close();
  }, closeGrace);
  ch.addEventListener("close", () => clearTimeout(later), { once: true });
}

/** Where received bytes go: a disk stream, a service worker stream, or memory. */
export interface FileSink {
  write(chunk: Uint8Array): void | Promise<void>;
  close(): void | Promise<void>;
  abort(reason: string): void;
}

/**
 * Receives a file from `ch` into `sink`. Resolves true on a complete transfer ("end" seen),
 * false if the channel closed early, the size is wrong (more bytes than announced fail at
 * once, so a sender cannot fill the sink past what the receiver agreed to), or the sink
 * refused a write (full disk, memory limit, download cancelled in the browser).
 */
export function receiveFile(ch: ChannelLike, sink: FileSink, size: number | undefined, onProgress: (got: number) => void): Promise<boolean> {
  ch.binaryType = "arraybuffer";
  let got = 0;
  /** "end" seen or the transfer failed: nothing more is accepted. */
  let ended = false;
  let failed = false;
  let chain: Promise<unknown> = Promise.resolve();
  return new Promise((resolve) => {
    const fail = (why: string) => {
      if (failed) return;
      ended = failed = true;
      console.warn(`keksbox: file transfer failed: ${why}`);
      sink.abort(why);
      ch.close();
      resolve(false);
    };
    ch.addEventListener("message", (ev: { data: unknown }) => {
      if (ended) return;
      if (typeof ev.data === "string") {
        if (ev.data !== "end") {
          console.warn("keksbox: ignoring unexpected text on file channel");
          return;
        }
        if (size !== undefined && got !== size) return fail(`file ended at ${got} bytes, ${size} announced`);
        ended = true;
        chain = chain.then(() => (failed ? undefined : sink.close())).then(
          () => resolve(!failed),
          () => resolve(false),
        );
        return;
      }
      const data = ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : ArrayBuffer.isView(ev.data) ? new Uint8Array(ev.data.buffer) : null;
      if (!data) return;
      if (size !== undefined && got + data.byteLength > size) return fail(`more than the ${size} bytes announced`);
      got += data.byteLength;
      onProgress(got);
      chain = chain.then(() => (failed ? undefined : sink.write(data))).catch((e: unknown) => fail(`cannot write: ${e instanceof Error ? e.message : String(e)}`));
    });
    ch.addEventListener("close", () => {
      if (!ended) fail("closed before end");
    });
  });
}
