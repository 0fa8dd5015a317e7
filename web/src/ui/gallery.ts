// The gallery: the main area as a grid of video tiles that always fits (re-laid out as tiles
// come and go and as the area resizes), a screen share spotlighted with the rest in a strip,
// and a row of small name tiles for people without video. Each tile has the name, a mark when
// no audio is heard from that person, the speaking highlight, full screen and picture-in-picture.

import { h } from "./el";
import { t } from "./i18n";
import { icon } from "./icons";
import { GRID, gridLayout, spotlightLayout } from "./layout";

/** A member's id, or ourselves. */
export type Owner = number | "self";

interface Tile {
  el: HTMLElement;
  video: HTMLVideoElement;
  owner: Owner;
  label: string;
  screen: boolean;
  caption: HTMLElement;
  /** Order of arrival: the newest screen share is the one spotlighted. */
  seq: number;
}

interface Person {
  name: string;
  speaking: boolean;
  muted: boolean;
  /** The name tile shown while this person has no video tile. */
  el: HTMLElement;
}

export class Gallery {
  readonly el: HTMLElement;
  private readonly grid: HTMLElement;
  private readonly strip: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly tiles = new Map<string, Tile>();
  private readonly people = new Map<Owner, Person>();
  private seq = 0;
  private scheduled = false;

  constructor() {
    this.grid = h("div", { id: "grid" });
    this.strip = h("ul", { id: "strip", "aria-label": t("people_without_video") });
    this.empty = h("p", { class: "empty" }, t("no_video"));
    this.el = h("section", { id: "gallery", "aria-label": t("gallery") }, this.grid, this.strip, this.empty);
    new ResizeObserver(() => this.layout()).observe(this.grid);
    this.relayout();
  }

  /** Adds or renames a person (a member, or ourselves as "self"). */
  person(owner: Owner, name: string): void {
    let p = this.people.get(owner);
    if (!p) {
      const el = h("li", { class: "person", "data-owner": owner }, h("span", { class: "name" }), this.muteMark());
      p = { name, speaking: false, muted: true, el };
      this.people.set(owner, p);
      this.strip.append(el);
    }
    p.name = name;
    p.el.querySelector(".name")!.textContent = owner === "self" ? t("you", { name }) : name;
    for (const tile of this.tiles.values()) if (tile.owner === owner) this.caption(tile);
    this.relayout();
  }

  removePerson(owner: Owner): void {
    for (const [key, tile] of [...this.tiles]) if (tile.owner === owner) this.removeVideo(key);
    this.people.get(owner)?.el.remove();
    this.people.delete(owner);
    this.relayout();
  }

  speaking(owner: Owner, on: boolean): void {
    const p = this.people.get(owner);
    if (!p) return;
    p.speaking = on;
    p.el.classList.toggle("speaking", on);
    for (const tile of this.tiles.values()) if (tile.owner === owner) tile.el.classList.toggle("speaking", on);
  }

  /** Marks a person whose audio we do not hear (none shared, not enabled, or muted). */
  muted(owner: Owner, on: boolean): void {
    const p = this.people.get(owner);
    if (!p || p.muted === on) return;
    p.muted = on;
    p.el.classList.toggle("muted", on);
    for (const tile of this.tiles.values()) if (tile.owner === owner) tile.el.classList.toggle("muted", on);
  }

  /** Shows a video; returns its element (the local camera's is also used for thumbnails). */
  addVideo(key: string, owner: Owner, stream: MediaStream, label: string, screen: boolean): HTMLVideoElement {
    const old = this.tiles.get(key);
    if (old) {
      if (old.video.srcObject !== stream) old.video.srcObject = stream;
      return old.video;
    }
    const video = h("video", { autoplay: true, playsinline: true, muted: true });
    video.muted = true;
    video.srcObject = stream;
    // The videos' shape decides the column count: lay out again when it is known or changes.
    video.addEventListener("resize", () => this.relayout());
    const caption = h("figcaption", {});
    const fs = h("button", { type: "button", class: "tile-button fullscreen" }, icon("fullscreen"));
    const actions = h("div", { class: "tile-actions" }, fs);
    const el = h("figure", { class: `tile video${screen ? " screen" : ""}${owner === "self" ? " self" : ""}`, "data-owner": owner, "data-res": key }, video, caption, actions);
    const tile: Tile = { el, video, owner, label, screen, caption, seq: ++this.seq };
    fs.addEventListener("click", () => void this.fullscreen(tile));
    el.addEventListener("dblclick", () => void this.fullscreen(tile));
    if (document.pictureInPictureEnabled) {
      // A toggle: the same button brings the video back; its state follows the browser's
      // own controls too (closing the floating window).
      const pip = h("button", { type: "button", class: "tile-button pip", "aria-pressed": "false" }, icon("pip"));
      pip.addEventListener("click", () => void this.pictureInPicture(tile));
      video.addEventListener("enterpictureinpicture", () => pip.setAttribute("aria-pressed", "true"));
      video.addEventListener("leavepictureinpicture", () => pip.setAttribute("aria-pressed", "false"));
      actions.append(pip);
    }
    this.tiles.set(key, tile);
    this.caption(tile);
    const p = this.people.get(owner);
    el.classList.toggle("speaking", !!p?.speaking);
    el.classList.toggle("muted", p?.muted ?? true);
    this.grid.append(el);
    this.relayout();
    return video;
  }

  removeVideo(key: string): void {
    const tile = this.tiles.get(key);
    if (!tile) return;
    if (document.fullscreenElement === tile.el) void document.exitFullscreen().catch(() => {});
    // A floating window of a video that is gone would show its last frame.
    if (document.pictureInPictureElement === tile.video) void document.exitPictureInPicture().catch(() => {});
    tile.video.srcObject = null;
    tile.el.remove();
    this.tiles.delete(key);
    this.relayout();
  }

  video(key: string): HTMLVideoElement | null {
    return this.tiles.get(key)?.video ?? null;
  }

  /** Number of video tiles (the display mode shows its invitation when there are none). */
  get videoCount(): number {
    return this.tiles.size;
  }

  private async fullscreen(tile: Tile): Promise<void> {
    try {
      if (document.fullscreenElement === tile.el) await document.exitFullscreen();
      else await tile.el.requestFullscreen();
    } catch (e) {
      console.warn("keksbox: full screen refused", e);
    }
  }

  private async pictureInPicture(tile: Tile): Promise<void> {
    try {
      if (document.pictureInPictureElement === tile.video) await document.exitPictureInPicture();
      else await tile.video.requestPictureInPicture();
    } catch (e) {
      console.warn("keksbox: picture-in-picture refused", e);
    }
  }

  private caption(tile: Tile): void {
    const p = this.people.get(tile.owner);
    const name = tile.owner === "self" ? t("you", { name: p?.name ?? "" }) : (p?.name ?? t("unknown_user"));
    const text = tile.screen ? `${name}: ${tile.label}` : name;
    tile.caption.replaceChildren(h("span", { class: "name" }, text), this.muteMark());
    tile.video.setAttribute("aria-label", t("video_of", { label: tile.label, name }));
    const [fs, pip] = tile.el.querySelectorAll(".tile-button");
    fs?.setAttribute("aria-label", t("fullscreen_of", { name: text }));
    pip?.setAttribute("aria-label", t("pip_of", { name: text }));
  }

  private muteMark(): HTMLElement {
    return h("span", { class: "mute-mark", title: t("no_audio") }, icon("micOff"), h("span", { class: "visually-hidden" }, t("no_audio")));
  }

  /** Lays out once per frame however many changes came in. */
  private relayout(): void {
    for (const [owner, p] of this.people) {
      const hasVideo = [...this.tiles.values()].some((x) => x.owner === owner);
      p.el.hidden = hasVideo;
    }
    this.strip.hidden = ![...this.people.values()].some((p) => !p.el.hidden);
    this.empty.hidden = this.tiles.size > 0;
    this.grid.hidden = this.tiles.size === 0;
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.layout();
    });
  }

  private layout(): void {
    const w = this.grid.clientWidth;
    const hgt = this.grid.clientHeight;
    const tiles = [...this.tiles.values()];
    const screens = tiles.filter((x) => x.screen).sort((a, b) => b.seq - a.seq);
    const spot = screens[0];
    const order = spot ? [spot, ...tiles.filter((x) => x !== spot)] : tiles;
    const known = tiles.filter((x) => x.video.videoWidth > 0 && x.video.videoHeight > 0 && !x.screen);
    const videoAspect = known.length ? known.reduce((a, x) => a + x.video.videoWidth / x.video.videoHeight, 0) / known.length : GRID.videoAspect;
    const opts = { ...GRID, videoAspect, maxAspect: Math.max(GRID.maxAspect, videoAspect) };
    const boxes = spot ? spotlightLayout(order.length - 1, w, hgt, opts) : gridLayout(order.length, w, hgt, opts);
    order.forEach((tile, i) => {
      const b = boxes[i];
      tile.el.classList.toggle("spotlight", tile === spot);
      if (!b) return;
      const s = tile.el.style;
      s.left = `${b.x}px`;
      s.top = `${b.y}px`;
      s.width = `${b.w}px`;
      s.height = `${b.h}px`;
    });
  }
}
