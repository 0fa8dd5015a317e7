// The member list in the side panel: each person with their connection state and every
// resource they offer, with its own Enable/Disable or Download/Cancel control, previews, file
// progress and webrtc_debug details. Videos are shown in the gallery, audio plays from here.

import { FileSink } from "../protocol/files";
import { Member, RemoteResource, Room } from "../protocol/room";
import { prefs } from "./common";
import { Chat, notify } from "./chat";
import { prepareSink } from "./download";
import { formatBytes, h, SAFE_IMAGE } from "./el";
import { Gallery } from "./gallery";
import { t } from "./i18n";
import { watchSpeaking } from "./media";
import { audioBlocked, notice } from "./notices";

interface MemberUi {
  li: HTMLElement;
  name: HTMLElement;
  state: HTMLElement;
  /** How media reaches this person: directly, or relayed by the box (TURN). */
  path: HTMLElement;
  res: HTMLElement;
  debug: HTMLElement;
  announced: boolean;
}

interface ResourceUi {
  li: HTMLElement;
  body: HTMLElement;
  button: HTMLButtonElement;
  progress?: HTMLProgressElement;
  stopSpeak?: () => void;
}

export const nameOf = (m: Member): string => m.username ?? t("unknown_user");

/** A screen share is spotlighted; keks-meet marks none, so its label says it. */
export const isScreen = (label: string | undefined): boolean => /screen|bildschirm|display/i.test(label ?? "");

export class Members {
  readonly el = h("ul", { id: "members", class: "members" });
  private readonly members = new Map<number, MemberUi>();
  private readonly resources = new Map<RemoteResource, ResourceUi>();
  private readonly pendingSinks = new Map<RemoteResource, FileSink>();
  /** Tracks the user enabled (true) or disabled (false) by hand, by resource id: survives reconnects. */
  readonly choices = new Map<string, boolean>();

  constructor(
    private readonly room: () => Room | null,
    private readonly gallery: Gallery,
    private readonly chat: Chat,
  ) {
    setInterval(() => void this.debugTick(), 2000);
    setInterval(() => void this.pathTick(), 2000);
  }

  clear(): void {
    this.el.replaceChildren();
  }

  join(m: Member): void {
    const name = h("span", { class: "name" }, t("unknown_user"));
    const state = h("span", { class: "state" }, "");
    const path = h("span", { class: "path", hidden: true }, "");
    const res = h("ul", { class: "resources", "aria-labelledby": `member-${m.id}` });
    const debug = h("pre", { class: "debug", hidden: true });
    const li = h("li", { class: "member", "data-id": m.id }, h("h3", { id: `member-${m.id}` }, name, " ", state, " ", path), res, debug);
    this.el.append(li);
    this.members.set(m.id, { li, name, state, path, res, debug, announced: false });
    this.gallery.person(m.id, t("unknown_user"));
  }

  leave(m: Member): void {
    const u = this.members.get(m.id);
    if (!u) return;
    this.members.delete(m.id);
    u.li.remove();
    this.gallery.removePerson(m.id);
    if (u.announced) {
      this.chat.line("leave", t("left_line", { name: nameOf(m) }));
      notify("notify_leave", t("left_line", { name: nameOf(m) }));
    }
  }

  update(m: Member): void {
    const u = this.members.get(m.id);
    if (!u) return;
    u.name.textContent = nameOf(m);
    this.gallery.person(m.id, nameOf(m));
    for (const r of m.resources.values()) {
      const l = this.resources.get(r)?.li.querySelector(".label");
      if (l) l.textContent = resLabel(r);
    }
    if (!u.announced) {
      u.announced = true;
      this.chat.line("join", t("joined_line", { name: nameOf(m) }));
      notify("notify_join", t("joined_line", { name: nameOf(m) }));
    }
  }

  provide(r: RemoteResource): void {
    const u = this.members.get(r.owner.id);
    if (!u) return;
    const button = h("button", { type: "button", class: "small" }, "");
    const body = h("div", { class: "res-body" });
    const li = h("li", { class: `resource ${r.info.kind} ${r.info.track_kind ?? ""}`, "data-res": r.info.id }, h("span", { class: "label" }, resLabel(r)), " ", button, body);
    button.addEventListener("click", () => void this.toggle(r));
    u.res.append(li);
    this.resources.set(r, { li, body, button });
    this.resourceState(r);
  }

  /** A member announced a resource again with new details (its label). */
  provideUpdate(r: RemoteResource): void {
    const l = this.resources.get(r)?.li.querySelector(".label");
    if (l) l.textContent = resLabel(r);
  }

  provideStop(r: RemoteResource): void {
    const u = this.resources.get(r);
    u?.stopSpeak?.();
    u?.li.remove();
    this.resources.delete(r);
    this.gallery.removeVideo(videoKey(r));
    this.pendingSinks.get(r)?.abort("stopped");
    this.pendingSinks.delete(r);
    this.markMuted(r.owner);
  }

  resourceState(r: RemoteResource): void {
    const u = this.resources.get(r);
    if (!u) return;
    const file = r.info.kind === "file";
    const busy = r.state === "requested" || r.state === "active";
    u.button.textContent = file ? (busy ? t("cancel") : t("download")) : busy ? t("disable") : t("enable");
    u.button.setAttribute("aria-label", `${u.button.textContent}: ${r.info.label ?? r.info.id}`);
    u.li.dataset.state = r.state;
    if (file) {
      if (r.state === "done") u.body.replaceChildren(h("span", { class: "ok" }, t("received", { label: r.info.label ?? "" })));
      if (r.state === "failed") u.body.replaceChildren(h("span", { class: "error" }, t("failed", { label: r.info.label ?? "" })));
      return;
    }
    const video = r.info.track_kind === "video";
    if (r.state === "active" && r.stream) {
      if (video) {
        this.gallery.addVideo(videoKey(r), r.owner.id, r.stream, r.info.label ?? r.info.id, isScreen(r.info.label));
        u.body.replaceChildren(h("span", { class: "in-gallery" }, t("in_gallery")));
      } else if (!u.body.querySelector("audio")) {
        u.stopSpeak?.();
        const a = h("audio", { autoplay: true });
        a.srcObject = r.stream;
        u.body.replaceChildren(a);
        a.play().catch(() => audioBlocked());
        const owner = r.owner.id;
        u.stopSpeak = watchSpeaking(r.stream, (s) => {
          this.members.get(owner)?.li.classList.toggle("speaking", s);
          this.gallery.speaking(owner, s);
        });
      }
    } else if (r.state !== "active") {
      u.stopSpeak?.();
      u.stopSpeak = undefined;
      if (video) this.gallery.removeVideo(videoKey(r));
      u.body.querySelector("audio,.in-gallery")?.remove();
    }
    this.markMuted(r.owner);
  }

  preview(r: RemoteResource, data: string): void {
    const u = this.resources.get(r);
    if (!u || r.state === "active" || !SAFE_IMAGE.test(data)) return;
    u.body.replaceChildren(h("img", { class: "preview", src: data, alt: t("preview_of", { label: r.info.label ?? "" }) }));
  }

  async fileSink(r: RemoteResource): Promise<FileSink | null> {
    const s = this.pendingSinks.get(r) ?? null;
    this.pendingSinks.delete(r);
    return s;
  }

  fileProgress(r: RemoteResource, bytes: number): void {
    const u = this.resources.get(r);
    if (!u) return;
    if (!u.progress || !u.progress.isConnected) {
      u.progress = h("progress", { max: r.info.size ?? 0, "aria-label": r.info.label ?? r.info.id });
      u.body.replaceChildren(u.progress);
    }
    u.progress.value = bytes;
    u.progress.title = t("progress", { done: formatBytes(bytes), total: formatBytes(r.info.size ?? 0) });
  }

  peerState(m: Member): void {
    const u = this.members.get(m.id);
    const info = this.room()?.peerInfo(m.id);
    if (u && info) u.state.textContent = `(${info.connection})`;
  }

  /** Enables or disables a remote resource (downloads pick their sink here, on the click). */
  private async toggle(r: RemoteResource): Promise<void> {
    const room = this.room();
    if (!room) return;
    if (r.info.kind === "track") this.choices.set(r.info.id, !(r.state === "requested" || r.state === "active"));
    if (r.state === "requested" || r.state === "active") {
      room.requestStop(r);
      this.pendingSinks.get(r)?.abort("cancelled");
      this.pendingSinks.delete(r);
      return;
    }
    if (r.info.kind === "file") {
      let sink: FileSink | null;
      try {
        sink = await prepareSink(r.info.label ?? "download", r.info.size);
      } catch (e) {
        return notice(e instanceof Error ? e.message : String(e), "warn");
      }
      if (!sink) return;
      this.pendingSinks.set(r, sink);
    }
    room.request(r);
  }

  /** The gallery marks people whose audio we do not hear. */
  private markMuted(m: Member): void {
    const hearing = [...m.resources.values()].some((r) => r.info.track_kind === "audio" && r.state === "active");
    this.gallery.muted(m.id, !hearing);
  }

  /** Shows, per person, whether the call goes direct or through the box (a relay candidate on
   *  either end of the selected pair), so a person knows why a call is slow. */
  private async pathTick(): Promise<void> {
    const room = this.room();
    if (!room) return;
    for (const m of room.members.values()) {
      const u = this.members.get(m.id);
      if (!u) continue;
      let path: ConnectionPath | null = null;
      try {
        path = selectedPath(await room.peerStats(m.id))?.path ?? null;
      } catch {
        path = null;
      }
      u.path.hidden = path === null;
      u.path.dataset.path = path ?? "";
      u.path.textContent = path === null ? "" : t(path === "relay" ? "path_relay" : "path_direct");
      u.path.title = path === "relay" ? t("path_relay_help") : "";
    }
  }

  private async debugTick(): Promise<void> {
    const room = this.room();
    if (!room) return;
    const on = prefs.bool("webrtc_debug");
    for (const m of room.members.values()) {
      const u = this.members.get(m.id);
      if (!u) continue;
      u.debug.hidden = !on;
      if (on) u.debug.textContent = await debugText(room, m.id);
    }
  }
}

const videoKey = (r: RemoteResource): string => `${r.owner.id}:${r.info.id}`;

function resLabel(r: RemoteResource): string {
  const label = r.info.label ?? r.info.id;
  if (r.info.kind === "file") return t("resource_file", { label, size: formatBytes(r.info.size ?? 0) });
  return t(r.info.track_kind === "audio" ? "resource_audio" : "resource_video", { label });
}

async function debugText(room: Room, id: number): Promise<string> {
  const p = room.peerInfo(id);
  if (!p) return "";
  const lines = [`connection: ${p.connection}`, `ice: ${p.ice} (${p.gathering})`, `signaling: ${p.signaling}`, `polite: ${p.polite}, offer collisions: ${p.collisions}`];
  try {
    const stats = await room.peerStats(id);
    const sel = selectedPath(stats);
    if (sel) lines.push(`path: ${sel.path === "relay" ? "through the box (TURN relay)" : "direct"}`);
    const byId = new Map<string, any>();
    stats?.forEach((s: any) => byId.set(s.id, s));
    stats?.forEach((s: any) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        const l = byId.get(s.localCandidateId);
        const r = byId.get(s.remoteCandidateId);
        lines.push(`selected: ${l?.candidateType} ${l?.address}:${l?.port} <-> ${r?.candidateType} ${r?.address}:${r?.port} (${l?.protocol}), rtt ${s.currentRoundTripTime ?? "?"} s`);
      }
      if (s.type === "codec") lines.push(`codec: ${s.mimeType} ${s.clockRate ?? ""}`);
      if (s.type === "inbound-rtp") lines.push(`in ${s.kind}: ${s.bytesReceived} B, ${s.packetsLost ?? 0} lost${s.framesDecoded !== undefined ? `, ${s.framesDecoded} frames` : ""}`);
      if (s.type === "outbound-rtp") lines.push(`out ${s.kind}: ${s.bytesSent} B`);
    });
  } catch (e) {
    lines.push(String(e));
  }
  return lines.join("\n");
}

/** "direct", or "relay" when the box carries the call (TURN). */
export type ConnectionPath = "direct" | "relay";

/** The selected candidate pair of a peer connection's stats (the transport's, else the
 *  nominated succeeded pair) and what it means for the path. */
export function selectedPath(stats: RTCStatsReport | null | undefined): { path: ConnectionPath; local: string; remote: string } | null {
  if (!stats) return null;
  const byId = new Map<string, any>();
  stats.forEach((s: any) => byId.set(s.id, s));
  let pair: any = null;
  stats.forEach((s: any) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) ?? pair;
  });
  if (!pair) {
    stats.forEach((s: any) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    });
  }
  if (!pair) return null;
  const local = byId.get(pair.localCandidateId)?.candidateType ?? "";
  const remote = byId.get(pair.remoteCandidateId)?.candidateType ?? "";
  return { path: local === "relay" || remote === "relay" ? "relay" : "direct", local, remote };
}
