// Our own devices and files: microphone (mute, gain), camera, screen, shared files with
// per-receiver progress. Our videos also appear in the gallery; thumbnails of them go to
// members who have not enabled them.

import { LocalResource, Member, Room } from "../protocol/room";
import { prefs } from "./common";
import { append, formatBytes, h, labelled, SAFE_IMAGE } from "./el";
import { Gallery } from "./gallery";
import { t } from "./i18n";
import { camera, microphone, Microphone, screen, thumbnail, watchSpeaking } from "./media";
import { notice } from "./notices";

interface Entry {
  res: LocalResource;
  li: HTMLElement;
  stop: () => void;
  video?: HTMLVideoElement;
  uploads?: HTMLElement;
}

export class LocalDevices {
  readonly el = h("ul", { id: "local-resources", class: "resources" });
  readonly filePick: HTMLInputElement;
  private readonly entries = new Map<string, Entry>();
  private mics = 0;

  constructor(
    private readonly room: () => Room | null,
    private readonly gallery: Gallery,
  ) {
    this.filePick = h("input", { type: "file", id: "file-pick", multiple: true, hidden: true, tabindex: -1 });
    this.filePick.addEventListener("change", () => {
      this.addFiles(this.filePick.files ?? []);
      this.filePick.value = "";
    });
    // Thumbnails of our video resources for members who have not enabled them.
    setInterval(() => this.sendThumbnails(), 5000);
  }

  resources(): LocalResource[] {
    return [...this.entries.values()].map((e) => e.res);
  }

  hasTracks(): boolean {
    return [...this.entries.values()].some((e) => e.res.kind === "track");
  }

  async addMicrophone(): Promise<void> {
    let mic: Microphone;
    try {
      mic = await microphone();
    } catch (e) {
      return mediaError(t("add_microphone"), e);
    }
    const res: LocalResource = { id: mic.stream.id, kind: "track", track_kind: "audio", label: t("add_microphone"), track: mic.track, stream: mic.stream };
    const stopSpeak = watchSpeaking(mic.stream, (s) => {
      document.getElementById("local-h")?.classList.toggle("speaking", s);
      this.gallery.speaking("self", s);
    });
    let muted = false;
    this.mics++;
    this.gallery.muted("self", false);
    this.add(res, () => (stopSpeak(), mic.stop(), --this.mics || this.gallery.muted("self", true)), (li) => {
      const mute = h("button", { type: "button", class: "small mute", "aria-pressed": "false" }, t("mute"));
      mute.addEventListener("click", () => {
        muted = !muted;
        mic.setMuted(muted);
        mute.textContent = muted ? t("unmute") : t("mute");
        mute.setAttribute("aria-pressed", String(muted));
        this.gallery.muted("self", muted);
      });
      const [gainField, gain] = labelled(t("gain"), h("input", { type: "range", min: 0, max: 5, step: 0.1, value: prefs.num("microphone_gain") ?? 1 }));
      gain.addEventListener("input", () => mic.setGain(Number(gain.value)));
      li.dataset.rnnoise = String(mic.rnnoise);
      append(li, " ", mute, gainField);
      return {};
    });
  }

  async addCamera(): Promise<void> {
    try {
      this.addVideoTrack(await camera(), t("add_camera"), false);
    } catch (e) {
      mediaError(t("add_camera"), e);
    }
  }

  async addScreen(): Promise<void> {
    let s: MediaStream;
    try {
      s = await screen();
    } catch (e) {
      return mediaError(t("add_screen"), e);
    }
    const v = s.getVideoTracks()[0];
    const a = s.getAudioTracks()[0];
    if (v) this.addVideoTrack(v, t("add_screen"), true);
    if (a) {
      const stream = new MediaStream([a]);
      this.add({ id: stream.id, kind: "track", track_kind: "audio", label: `${t("add_screen")} (audio)`, track: a, stream }, () => a.stop());
    }
  }

  addFiles(files: Iterable<File>): void {
    for (const f of files) {
      const id = "f" + crypto.randomUUID();
      this.add({ id, kind: "file", label: f.name, size: f.size, file: f }, () => {}, (li) => {
        const uploads = h("ul", { class: "uploads", "aria-label": f.name });
        li.append(" ", formatBytes(f.size), uploads);
        return { uploads };
      });
    }
  }

  stopAllTracks(): void {
    for (const [id, e] of [...this.entries]) if (e.res.kind === "track") this.remove(id);
  }

  uploadProgress(id: string, to: Member, name: string, bytes: number, state: "sending" | "done" | "failed"): void {
    const l = this.entries.get(id);
    if (!l?.uploads) return;
    let row = l.uploads.querySelector<HTMLElement>(`[data-to="${to.id}"]`);
    if (!row) {
      const cancel = h("button", { type: "button", class: "small cancel", "aria-label": `${t("cancel")}: ${l.res.label} -> ${name}` }, t("cancel"));
      cancel.addEventListener("click", () => this.room()?.cancelUpload(id, to.id));
      row = h("li", { "data-to": to.id }, h("span", { class: "text" }), " ", cancel);
      l.uploads.append(row);
    }
    const size = l.res.kind === "file" ? l.res.size : 0;
    row.dataset.state = state;
    const stateText = state === "sending" ? t("progress", { done: formatBytes(bytes), total: formatBytes(size) }) : t(state === "done" ? "upload_done" : "upload_failed");
    row.querySelector(".text")!.textContent = t("sent_to", { name, state: stateText });
    (row.querySelector(".cancel") as HTMLElement).hidden = state !== "sending";
  }

  private addVideoTrack(track: MediaStreamTrack, label: string, isScreen: boolean): void {
    const stream = new MediaStream([track]);
    const res: LocalResource = { id: stream.id, kind: "track", track_kind: "video", label, track, stream };
    track.addEventListener("ended", () => this.remove(res.id));
    const key = `self:${res.id}`;
    this.add(res, () => (track.stop(), this.gallery.removeVideo(key)), () => ({ video: this.gallery.addVideo(key, "self", stream, label, isScreen) }));
  }

  private add(res: LocalResource, stop: () => void, extra: (li: HTMLElement) => { video?: HTMLVideoElement; uploads?: HTMLElement } = () => ({})): void {
    const stopBtn = h("button", { type: "button", class: "small", "aria-label": `${t("stop")}: ${res.label}` }, t("stop"));
    const li = h("li", { class: `resource local ${res.kind}`, "data-res": res.id }, h("span", { class: "label" }, res.label), " ", stopBtn);
    this.el.append(li);
    this.entries.set(res.id, { res, li, stop, ...extra(li) });
    stopBtn.addEventListener("click", () => this.remove(res.id));
    this.room()?.addLocal(res);
  }

  private remove(id: string): void {
    const l = this.entries.get(id);
    if (!l) return;
    this.entries.delete(id);
    l.stop();
    l.li.remove();
    this.room()?.removeLocal(id);
  }

  private sendThumbnails(): void {
    const room = this.room();
    if (!room) return;
    for (const l of this.entries.values()) {
      if (!l.video) continue;
      const d = thumbnail(l.video);
      if (d && SAFE_IMAGE.test(d)) void room.send({ preview: { id: l.res.id, data: d } });
    }
  }
}

function mediaError(what: string, e: unknown): void {
  notice(t("error_media", { what, err: e instanceof Error ? e.message : String(e) }), "warn");
}
