// The room key and the room hash are two PBKDF2 derivations of 250,000 rounds each: most of
// the time from opening a room link to being in the room. Chromium runs one page's WebCrypto
// PBKDF2 calls one after another (measured in headless Chromium: two started together took
// 490-525 ms, as long as two in a row, 450-730 ms; two in two workers 320 ms, as one), so the
// room page runs each in a worker of its own, started with the page so they are ready by the
// time the secret is known. If a worker cannot start or fails, that derivation runs here.

import { Bytes, Derive, pbkdf2 } from "../protocol/crypto";

type Reply = { id: number; bytes?: Bytes; error?: string };

/** One worker; jobs are answered in any order, matched by id. */
class DeriveWorker {
  private readonly worker: Worker | null;
  private readonly waiting = new Map<number, { resolve: (b: Bytes) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private broken = false;

  constructor(url: string) {
    let w: Worker | null = null;
    try {
      w = new Worker(url);
      w.onmessage = (ev: MessageEvent<Reply>) => {
        const job = this.waiting.get(ev.data.id);
        if (!job) return;
        this.waiting.delete(ev.data.id);
        if (ev.data.bytes) job.resolve(ev.data.bytes);
        else job.reject(new Error(ev.data.error ?? "no result"));
      };
      w.onerror = (ev) => {
        ev.preventDefault();
        this.fail(new Error(`derivation worker failed: ${ev.message || "cannot load"}`));
      };
    } catch (e) {
      console.warn("keksbox: no derivation worker, deriving on the page", e);
      this.broken = true;
    }
    this.worker = w;
  }

  derive(secret: string, salt: string): Promise<Bytes> {
    if (this.broken || !this.worker) return pbkdf2(secret, salt);
    const id = ++this.nextId;
    const worker = this.worker;
    const viaWorker = new Promise<Bytes>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      worker.postMessage({ id, secret, salt });
    });
    return viaWorker.catch((e: unknown) => {
      console.warn("keksbox: deriving on the page instead:", e instanceof Error ? e.message : e);
      return pbkdf2(secret, salt);
    });
  }

  private fail(e: Error): void {
    this.broken = true;
    this.worker?.terminate();
    for (const job of this.waiting.values()) job.reject(e);
    this.waiting.clear();
  }
}

const WORKER_URL = "/assets/pbkdf2-worker.js";
let pool: [DeriveWorker, DeriveWorker] | null = null;

/** Starts the two workers now (their script loads while the page does the rest). */
export function warmUp(): void {
  pool ??= [new DeriveWorker(WORKER_URL), new DeriveWorker(WORKER_URL)];
}

/** Derivations for the room key (first worker) and the room hash (second worker). */
export function workerDerives(): [Derive, Derive] {
  warmUp();
  const [a, b] = pool!; // set by warmUp just above
  return [(s, salt) => a.derive(s, salt), (s, salt) => b.derive(s, salt)];
}
