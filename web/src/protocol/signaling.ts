// The WebSocket to the relay: pings every 30 s, reconnects with backoff when the socket
// drops, and re-sends the current join and watch set after each new `init`, so a relay
// restart or a Wi-Fi blip costs a rejoin, not a page reload. Socket and timers are injected
// so the unit tests drive it without a network or a clock.

import { ClientboundPacket, ClientId, encodeServerbound, join, parseClientbound, ping, RoomHash, ServerboundPacket, watchRooms } from "./packets";

export interface SocketLike {
  send(data: string): void;
  close(): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export interface Timers {
  setTimeout(f: () => void, ms: number): unknown;
  clearTimeout(h: unknown): void;
  setInterval(f: () => void, ms: number): unknown;
  clearInterval(h: unknown): void;
}

export interface SignalingHandler {
  /** A new session: `id` is ours until the next reconnect. Called again after every reconnect. */
  onInit(id: ClientId, version: string, reconnect: boolean): void;
  /** Every packet after `init`. */
  onPacket(p: ClientboundPacket): void;
  /** The socket dropped; a reconnect is scheduled in `retryMs`. */
  onDisconnect(retryMs: number): void;
}

export interface SignalingOptions {
  pingMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  timers?: Timers;
  random?: () => number;
}

export const PING_INTERVAL_MS = 30_000;

/** `ws(s)://host/signaling` for a page location. */
export function signalingUrl(loc: { protocol: string; host: string }): string {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/signaling`;
}

export class Signaling {
  private sock: SocketLike | null = null;
  private open = false;
  private pingTimer: unknown = null;
  private retryTimer: unknown = null;
  private attempt = 0;
  private sessions = 0;
  private closed = false;
  private room: RoomHash | null = null;
  private watches: RoomHash[] = [];
  private readonly timers: Timers;
  private readonly pingMs: number;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;
  /** Our id in the current session, null while not connected. */
  id: ClientId | null = null;
  version = "";

  constructor(
    private readonly url: string,
    private readonly factory: (url: string) => SocketLike,
    private readonly handler: SignalingHandler,
    opts: SignalingOptions = {},
  ) {
    this.timers = opts.timers ?? (globalThis as unknown as Timers);
    this.pingMs = opts.pingMs ?? PING_INTERVAL_MS;
    this.initialMs = opts.backoffInitialMs ?? 200;
    this.maxMs = opts.backoffMaxMs ?? 2000;
    this.random = opts.random ?? Math.random;
  }

  start(): void {
    this.connect();
  }

  /** Join (or switch to, or with null leave) a room; remembered across reconnects. */
  join(hash: RoomHash | null): void {
    this.room = hash;
    if (this.id !== null) this.send(join(hash));
  }

  /** Replace the watched set; remembered across reconnects. */
  watch(hashes: RoomHash[]): void {
    this.watches = [...hashes];
    if (this.id !== null) this.send(watchRooms(this.watches));
  }

  /** Sends if connected; returns whether it was sent. Callers resync after a reconnect. */
  send(p: ServerboundPacket): boolean {
    if (!this.sock || !this.open) return false;
    try {
      this.sock.send(encodeServerbound(p));
      return true;
    } catch (e) {
      console.warn("keksbox: send failed", e);
      return false;
    }
  }

  /** Skip the remaining backoff (e.g. the browser reports it is online again). */
  reconnectNow(): void {
    if (this.closed || this.sock || this.retryTimer === null) return;
    this.timers.clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.connect();
  }

  close(): void {
    this.closed = true;
    this.stopPing();
    if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
    this.sock?.close();
  }

  /** The next backoff delay: exponential with jitter, capped. */
  nextDelay(): number {
    const base = Math.min(this.maxMs, this.initialMs * 2 ** this.attempt);
    this.attempt++;
    return Math.round(base * (0.75 + 0.25 * this.random()));
  }

  private connect(): void {
    this.retryTimer = null;
    let s: SocketLike;
    try {
      s = this.factory(this.url);
    } catch (e) {
      console.warn("keksbox: cannot open signaling socket", e);
      this.scheduleReconnect();
      return;
    }
    this.sock = s;
    s.onopen = () => {
      if (this.sock !== s) return;
      this.open = true;
      this.stopPing();
      this.pingTimer = this.timers.setInterval(() => this.send(ping()), this.pingMs);
    };
    s.onmessage = (ev) => {
      if (this.sock !== s) return;
      if (typeof ev.data !== "string") {
        console.warn("keksbox: ignoring binary frame from relay");
        return;
      }
      const p = parseClientbound(ev.data);
      if (!p) return;
      if (p.kind === "init") {
        this.attempt = 0;
        this.id = p.your_id;
        this.version = p.version;
        const reconnect = this.sessions++ > 0;
        if (this.watches.length) this.send(watchRooms(this.watches));
        // The handler may prepare room state before the join goes out.
        this.handler.onInit(p.your_id, p.version, reconnect);
        if (this.room !== null) this.send(join(this.room));
        return;
      }
      if (this.id === null) {
        console.warn(`keksbox: ignoring ${p.kind} before init`);
        return;
      }
      this.handler.onPacket(p);
    };
    s.onerror = () => {};
    s.onclose = () => {
      if (this.sock !== s) return;
      this.sock = null;
      this.open = false;
      this.id = null;
      this.stopPing();
      if (!this.closed) this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    const d = this.nextDelay();
    this.handler.onDisconnect(d);
    this.retryTimer = this.timers.setTimeout(() => this.connect(), d);
  }

  private stopPing(): void {
    if (this.pingTimer !== null) this.timers.clearInterval(this.pingTimer);
    this.pingTimer = null;
  }
}
