// One joined room: members, their peer connections (perfect negotiation), local resources
// offered to them and remote resources they offer. Everything is sealed with the room key
// before it reaches the relay. The UI listens through RoomEvents; no DOM here.
//
// The rules are those of the Rust Session (proto/src/session.rs), and both run the scenario
// fixtures in proto/tests/data/session/ (test/unit/session-fixtures.test.ts) so they cannot
// drift: a new `init` reports every member as left (ascending id); a `client_join` for a known
// member changes nothing; user names lose control characters and are cut to 64 code points; a
// re-sent provide for a known id is an update (`provideUpdate`), not a second `provide`;
// provides of unknown kinds are ignored and a member has at most 1024 resources; a
// `provide_stop`, `request`, `request_stop` or `preview` naming no such resource is ignored.

import { RoomKey } from "./crypto";
import { ChannelLike, FileSink, receiveFile, sendFile } from "./files";
import * as P from "./packets";
import { ClientId, ProvideInfo, RelayMessage } from "./packets";

export type LocalResource =
  | { id: string; kind: "track"; track_kind: "audio" | "video"; label: string; track: MediaStreamTrack; stream: MediaStream }
  | { id: string; kind: "file"; label: string; size: number; file: Blob };

export type RemoteState = "available" | "requested" | "active" | "failed" | "done";

export interface RemoteResource {
  info: ProvideInfo;
  owner: Member;
  state: RemoteState;
  stream: MediaStream | null;
}

export interface Member {
  id: ClientId;
  username: string | null;
  resources: Map<string, RemoteResource>;
  peer: Peer;
  /** The tail of this member's message chain: messages are handled one after another. */
  queue: Promise<void>;
}

export interface RoomEvents {
  join(m: Member): void;
  leave(m: Member): void;
  update(m: Member): void;
  chat(from: Member, msg: { text: string } | { image: string }): void;
  provide(r: RemoteResource): void;
  provideStop(r: RemoteResource): void;
  resourceState(r: RemoteResource): void;
  preview(r: RemoteResource, data: string): void;
  /** A requested file starts arriving; return where its bytes go, or null to refuse. */
  fileSink(r: RemoteResource): Promise<FileSink | null>;
  fileProgress(r: RemoteResource, bytes: number): void;
  /** Per-receiver progress of a local file (sent bytes), done or failed at the end. */
  uploadProgress(local: string, to: Member, bytes: number, state: "sending" | "done" | "failed"): void;
  peerState(m: Member): void;
  /** The relay told us we are in the room (our own `client_join`). */
  ready?(id: ClientId): void;
  /** A member re-sent the provide of a resource we know: `r.info` changed. */
  provideUpdate?(r: RemoteResource): void;
  /** A message or packet was dropped (bad ciphertext, forged sender, unknown kind or resource). */
  ignored?(from: ClientId | null, reason: string): void;
}

/** The longest user name kept, in code points (the Rust Session's MAX_USERNAME_CHARS). */
export const MAX_USERNAME_CHARS = 64;
/** How many resources one member may have announced at a time (MAX_RESOURCES_PER_MEMBER). */
export const MAX_RESOURCES_PER_MEMBER = 1024;

/** A user name as shown: control characters (Unicode Cc) removed, then cut to 64 code points. */
export function cleanUsername(name: string): string {
  return Array.from(name.replace(/\p{Cc}/gu, "")).slice(0, MAX_USERNAME_CHARS).join("");
}

/** What the UI may know about the connection to one member. */
export interface PeerInfo {
  connection: RTCPeerConnectionState;
  ice: RTCIceConnectionState;
  gathering: RTCIceGatheringState;
  signaling: RTCSignalingState;
  polite: boolean;
  collisions: number;
}

export interface RoomOptions {
  rtcConfig: RTCConfiguration;
  autoRequest(info: ProvideInfo): boolean;
}

export class Room {
  readonly members = new Map<ClientId, Member>();
  readonly local = new Map<string, LocalResource>();
  myId: ClientId | null = null;
  username = "guest";
  private closed = false;

  /** Resolves when every earlier `send` has been relayed (or failed). */
  private sendOrder: Promise<void> = Promise.resolve();

  constructor(
    readonly hash: string,
    private readonly key: RoomKey,
    private readonly relay: (p: P.ServerboundPacket) => boolean,
    readonly events: RoomEvents,
    private readonly opts: RoomOptions,
  ) {}

  /** A new relay session (first connect or reconnect): everyone leaves (ascending id); the join follows. */
  reset(myId: ClientId): void {
    for (const m of [...this.members.values()].sort((a, b) => a.id - b.id)) this.removeMember(m);
    this.myId = myId;
  }

  /**
   * Before the join: our relay id (null until the relay said it) and the resources we already
   * share, announced to each member as they appear.
   */
  prepare(myId: ClientId | null, local: Iterable<LocalResource>): void {
    this.myId = myId;
    for (const r of local) this.local.set(r.id, r);
  }

  /** The connection to one member, for the UI (webrtc_debug, connection state); null if unknown. */
  peerInfo(id: ClientId): PeerInfo | null {
    const m = this.members.get(id);
    if (!m) return null;
    const pc = m.peer.pc;
    return { connection: pc.connectionState, ice: pc.iceConnectionState, gathering: pc.iceGatheringState, signaling: pc.signalingState, polite: m.peer.polite, collisions: m.peer.collisions };
  }

  /** WebRTC statistics of the connection to one member (webrtc_debug); null if unknown. */
  peerStats(id: ClientId): Promise<RTCStatsReport | null> {
    return this.members.get(id)?.peer.pc.getStats() ?? Promise.resolve(null);
  }

  close(): void {
    this.closed = true;
    for (const m of [...this.members.values()]) this.removeMember(m);
  }

  handle(p: P.ClientboundPacket): void {
    if (this.closed) return;
    switch (p.kind) {
      case "client_join":
        if (p.id === this.myId) this.events.ready?.(p.id);
        if (p.id === this.myId || this.members.has(p.id)) return;
        this.addMember(p.id);
        return;
      case "client_leave": {
        const m = this.members.get(p.id);
        if (m) this.removeMember(m);
        return;
      }
      case "message": {
        const m = this.members.get(p.sender);
        if (!m) {
          this.ignore(p.sender, "message from a non-member");
          return;
        }
        // Handle each member's messages in arrival order (negotiation depends on it), but never
        // let one stuck member hold up the others, nor itself forever.
        m.queue = m.queue.then(() => withTimeout(this.onMessage(m, p.message), HANDLER_TIMEOUT_MS)).catch((e) => console.warn("keksbox: message handling failed", e));
        return;
      }
      default:
        return;
    }
  }

  /**
   * Seals and relays; rejects messages the relay would refuse (it closes the socket on those).
   * Messages are relayed in call order (an answer before the next offer), even when a later,
   * smaller message finishes sealing first: sealing starts at once, relaying waits its turn.
   */
  send(inner: RelayMessage, to?: ClientId): Promise<void> {
    if (this.myId === null) return Promise.resolve();
    const sealing = this.key.sealMessage(this.myId, inner);
    const sent = this.sendOrder.then(async () => {
      const sealed = await sealing;
      if (sealed.length > MAX_SEALED) throw new Error(`message too large for the relay (${sealed.length} bytes)`);
      this.relay(P.relay(sealed, to));
    });
    // A failed message does not hold up the ones after it.
    this.sendOrder = sent.catch(() => undefined);
    return sent;
  }

  sendChat(msg: { text: string } | { image: string }): Promise<void> {
    return this.send("text" in msg ? P.chatText(msg.text) : P.chatImage(msg.image));
  }

  setUsername(name: string): void {
    this.username = name;
    void this.send(P.identify(name));
  }

  addLocal(r: LocalResource): void {
    this.local.set(r.id, r);
    void this.send(P.provide(provideInfo(r)));
  }

  removeLocal(id: string): void {
    if (!this.local.delete(id)) return;
    void this.send(P.provideStop(id));
    for (const m of this.members.values()) m.peer.stopSending(id);
  }

  /** Stop sending local resource `id` to one member (the sender's per-receiver cancel). */
  cancelUpload(id: string, to: ClientId): void {
    this.members.get(to)?.peer.stopSending(id);
  }

  /** Ask the owner to start (or stop) sending a remote resource to us. */
  request(r: RemoteResource): void {
    if (r.state === "requested" || r.state === "active") return;
    r.state = "requested";
    this.events.resourceState(r);
    void this.send(P.request(r.info.id), r.owner.id);
  }

  requestStop(r: RemoteResource): void {
    void this.send(P.requestStop(r.info.id), r.owner.id);
    r.owner.peer.dropIncoming(r.info.id);
    r.stream = null;
    r.state = "available";
    this.events.resourceState(r);
  }

  private addMember(id: ClientId): Member {
    const m: Member = { id, username: null, resources: new Map(), peer: null as unknown as Peer, queue: Promise.resolve() };
    m.peer = new Peer(this, m, this.myId !== null && this.myId < id, this.opts.rtcConfig);
    this.members.set(id, m);
    this.events.join(m);
    // Tell the newcomer (or, on our own join, each member already there) who we are and what we offer.
    void this.send(P.identify(this.username), id);
    for (const r of [...this.local.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) void this.send(P.provide(provideInfo(r)), id);
    return m;
  }

  private removeMember(m: Member): void {
    this.members.delete(m.id);
    m.peer.close();
    for (const r of m.resources.values()) this.events.provideStop(r);
    m.resources.clear();
    this.events.leave(m);
  }

  private ignore(from: ClientId | null, reason: string): void {
    console.warn(`keksbox: ignoring ${reason}${from === null ? "" : ` from ${from}`}`);
    this.events.ignored?.(from, reason);
  }

  private async onMessage(m: Member, sealed: string): Promise<void> {
    const msg = await this.key.openMessage(m.id, sealed);
    if (this.closed || this.members.get(m.id) !== m) return;
    if (!msg) {
      this.ignore(m.id, "a message that does not open, is forged or is not understood");
      return;
    }
    if ("chat" in msg) this.events.chat(m, msg.chat);
    else if ("identify" in msg) {
      m.username = cleanUsername(msg.identify.username);
      this.events.update(m);
    } else if ("provide" in msg) {
      const id = msg.provide.id;
      const old = m.resources.get(id);
      if (old) {
        old.info = msg.provide;
        this.events.provideUpdate?.(old);
        return;
      }
      if (m.resources.size >= MAX_RESOURCES_PER_MEMBER) {
        this.ignore(m.id, `more than ${MAX_RESOURCES_PER_MEMBER} resources`);
        return;
      }
      const r: RemoteResource = { info: msg.provide, owner: m, state: "available", stream: null };
      m.resources.set(id, r);
      this.events.provide(r);
      if (this.opts.autoRequest(r.info)) this.request(r);
    } else if ("provide_stop" in msg) {
      const r = m.resources.get(msg.provide_stop.id);
      if (!r) {
        this.ignore(m.id, "provide_stop for an unknown resource");
        return;
      }
      m.resources.delete(r.info.id);
      m.peer.dropIncoming(r.info.id);
      this.events.provideStop(r);
    } else if ("request" in msg) {
      const l = this.local.get(msg.request.id);
      if (!l) {
        this.ignore(m.id, "request for a resource we do not provide");
        return;
      }
      m.peer.startSending(l);
    } else if ("request_stop" in msg) {
      if (!this.local.has(msg.request_stop.id)) {
        this.ignore(m.id, "request_stop for a resource we do not provide");
        return;
      }
      m.peer.stopSending(msg.request_stop.id);
    } else if ("offer" in msg) await m.peer.onDescription({ type: "offer", sdp: msg.offer });
    else if ("answer" in msg) await m.peer.onDescription({ type: "answer", sdp: msg.answer });
    else if ("ice_candidate" in msg) await m.peer.onCandidate(msg.ice_candidate);
    else if ("preview" in msg) {
      const r = m.resources.get(msg.preview.id);
      if (r) this.events.preview(r, msg.preview.data);
      else this.ignore(m.id, "preview for an unknown resource");
    }
  }
}

const HANDLER_TIMEOUT_MS = 15_000;
/** Stay below the relay's 8 MiB message limit, leaving room for the JSON around it. */
const MAX_SEALED = 8 * 1024 * 1024 - 4096;

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      console.warn(`keksbox: a message took over ${ms} ms to handle; going on`);
      resolve();
    }, ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function provideInfo(r: LocalResource): ProvideInfo {
  return r.kind === "track"
    ? { id: r.id, kind: "track", track_kind: r.track_kind, label: r.label }
    : { id: r.id, kind: "file", label: r.label, size: r.size };
}

/**
 * The peer connection to one member, with the "perfect negotiation" pattern: both sides may
 * offer; on a collision the polite side (the lower id) rolls back and answers, the impolite
 * side ignores the other's offer. Wire-compatible with peers that do no glare handling.
 */
export class Peer {
  readonly pc: RTCPeerConnection;
  private makingOffer = false;
  private ignoreOffer = false;
  private settingAnswer = false;
  /** How many offer collisions this pair has resolved (shown in webrtc_debug, read by tests). */
  collisions = 0;
  private readonly senders = new Map<string, RTCRtpSender>();
  private readonly outChannels = new Map<string, RTCDataChannel>();
  private readonly inChannels = new Map<string, RTCDataChannel>();

  constructor(
    private readonly room: Room,
    private readonly member: Member,
    readonly polite: boolean,
    config: RTCConfiguration,
  ) {
    const pc = new RTCPeerConnection(config);
    this.pc = pc;
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        const d = pc.localDescription;
        if (d) await room.send(d.type === "offer" ? P.offer(d.sdp) : P.answer(d.sdp), member.id);
      } catch (e) {
        console.warn("keksbox: negotiation failed", e);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = (ev) => {
      if (!ev.candidate) return;
      const c = ev.candidate.toJSON();
      if (!c.candidate) return;
      void room.send(P.iceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null, usernameFragment: c.usernameFragment ?? null }), member.id);
    };
    pc.onconnectionstatechange = () => {
      room.events.peerState(member);
      if (pc.connectionState === "failed") pc.restartIce();
    };
    pc.ontrack = (ev) => {
      const sid = ev.streams[0]?.id;
      const r = sid === undefined ? undefined : member.resources.get(sid);
      if (!r || !ev.streams[0]) {
        console.warn("keksbox: track for no known resource");
        return;
      }
      r.stream = ev.streams[0];
      r.state = "active";
      ev.track.addEventListener("ended", () => this.trackEnded(r));
      ev.streams[0].addEventListener("removetrack", () => this.trackEnded(r));
      room.events.resourceState(r);
    };
    pc.ondatachannel = (ev) => void this.incomingChannel(ev.channel);
  }

  close(): void {
    for (const c of this.outChannels.values()) c.close();
    for (const c of this.inChannels.values()) c.close();
    this.pc.close();
  }

  async onDescription(desc: RTCSessionDescriptionInit): Promise<void> {
    const pc = this.pc;
    try {
      const ready = !this.makingOffer && (pc.signalingState === "stable" || this.settingAnswer);
      const collision = desc.type === "offer" && !ready;
      if (collision) this.collisions++;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      this.settingAnswer = desc.type === "answer";
      await pc.setRemoteDescription(desc);
      this.settingAnswer = false;
      if (desc.type === "offer") {
        await pc.setLocalDescription();
        const d = pc.localDescription;
        if (d) await this.room.send(P.answer(d.sdp), this.member.id);
      }
    } catch (e) {
      this.settingAnswer = false;
      console.warn("keksbox: cannot apply remote description", e);
    }
  }

  async onCandidate(c: P.IceCandidateJson): Promise<void> {
    try {
      await this.pc.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null, usernameFragment: c.usernameFragment ?? null });
    } catch (e) {
      if (!this.ignoreOffer) console.warn("keksbox: cannot add ICE candidate", e);
    }
  }

  startSending(l: LocalResource): void {
    if (l.kind === "track") {
      if (this.senders.has(l.id)) return;
      this.senders.set(l.id, this.pc.addTrack(l.track, l.stream));
      return;
    }
    if (this.outChannels.has(l.id)) return;
    const ch = this.pc.createDataChannel(l.id);
    this.outChannels.set(l.id, ch);
    const m = this.member;
    this.room.events.uploadProgress(l.id, m, 0, "sending");
    sendFile(ch as unknown as ChannelLike, l.file, (n) => this.room.events.uploadProgress(l.id, m, n, "sending")).then(
      () => this.room.events.uploadProgress(l.id, m, l.size, "done"),
      () => this.room.events.uploadProgress(l.id, m, 0, "failed"),
    ).finally(() => {
      if (this.outChannels.get(l.id) === ch) this.outChannels.delete(l.id);
    });
  }

  stopSending(id: string): void {
    const s = this.senders.get(id);
    if (s) {
      this.senders.delete(id);
      try {
        this.pc.removeTrack(s);
      } catch (e) {
        console.warn("keksbox: removeTrack failed", e);
      }
    }
    const ch = this.outChannels.get(id);
    if (ch) {
      this.outChannels.delete(id);
      ch.close();
    }
  }

  dropIncoming(id: string): void {
    const ch = this.inChannels.get(id);
    if (ch) {
      this.inChannels.delete(id);
      ch.close();
    }
  }

  private trackEnded(r: RemoteResource): void {
    if (r.state !== "active") return;
    r.state = "available";
    r.stream = null;
    this.room.events.resourceState(r);
  }

  private async incomingChannel(ch: RTCDataChannel): Promise<void> {
    const r = this.member.resources.get(ch.label);
    if (!r || r.info.kind !== "file" || r.state !== "requested") {
      console.warn("keksbox: closing data channel nobody asked for");
      ch.close();
      return;
    }
    ch.binaryType = "arraybuffer";
    this.inChannels.set(ch.label, ch);
    // Buffer what arrives while the UI picks a sink.
    const early: MessageEvent[] = [];
    let closedEarly = false;
    const hold = (ev: MessageEvent) => early.push(ev);
    const holdClose = () => (closedEarly = true);
    ch.addEventListener("message", hold);
    ch.addEventListener("close", holdClose);
    const sink = await this.room.events.fileSink(r);
    ch.removeEventListener("message", hold);
    ch.removeEventListener("close", holdClose);
    if (!sink) {
      ch.close();
      r.state = "available";
      this.room.events.resourceState(r);
      return;
    }
    r.state = "active";
    this.room.events.resourceState(r);
    const done = receiveFile(ch as unknown as ChannelLike, sink, r.info.size, (n) => this.room.events.fileProgress(r, n));
    for (const ev of early) ch.dispatchEvent(new MessageEvent("message", { data: ev.data }));
    if (closedEarly) ch.dispatchEvent(new Event("close"));
    const ok = await done;
    this.inChannels.delete(ch.label);
    r.state = ok ? "done" : "failed";
    this.room.events.resourceState(r);
  }
}
