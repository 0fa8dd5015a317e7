// The chat: a log read out as it grows, text and images (pasted or picked), join and leave
// lines, desktop notifications while the tab is hidden. Message text is only ever set as text.

import { Room } from "../protocol/room";
import { prefs, username } from "./common";
import { h, SAFE_IMAGE } from "./el";
import { t } from "./i18n";
import { notice } from "./notices";

/** Longest chat text sent or shown; longer received text is cut (keks-meet sets no limit). */
export const MAX_CHAT_TEXT = 10_000;
/** Images above this are scaled down first: the relay limits one message to 8 MiB. */
const IMAGE_DIRECT_MAX = 1_500_000;

export type ChatMessage = { text: string } | { image: string };

export class Chat {
  readonly el: HTMLElement;
  readonly input: HTMLInputElement;
  private readonly log: HTMLElement;
  private readonly imagePick: HTMLInputElement;

  constructor(private readonly room: () => Room | null) {
    this.log = h("div", { id: "chat-log", role: "log", "aria-live": "polite", "aria-labelledby": "chat-h" });
    this.input = h("input", { type: "text", id: "chat-input", autocomplete: "off", maxlength: MAX_CHAT_TEXT });
    // The native picker stays hidden; a visible button opens it (keeps focus visible and in order).
    this.imagePick = h("input", { type: "file", id: "image-pick", accept: "image/png,image/jpeg,image/gif,image/webp", hidden: true, tabindex: -1 });
    this.el = h(
      "section",
      { id: "chat", "aria-labelledby": "chat-h" },
      h("h2", { id: "chat-h" }, t("chat")),
      this.log,
      h(
        "form",
        { id: "chat-form", onsubmit: (ev: Event) => (ev.preventDefault(), this.sendText()) },
        h("label", { for: "chat-input" }, t("chat_input")),
        h("div", { class: "row" }, this.input, h("button", { type: "submit" }, t("send"))),
        h("button", { type: "button", id: "send-image", onclick: () => this.imagePick.click() }, t("send_image")),
        this.imagePick,
      ),
    );
    this.imagePick.addEventListener("change", () => {
      for (const f of this.imagePick.files ?? []) this.sendImage(f);
      this.imagePick.value = "";
    });
    document.addEventListener("paste", (ev) => {
      const files = [...(ev.clipboardData?.files ?? [])].filter((f) => f.type.startsWith("image/"));
      if (!files.length) return;
      ev.preventDefault();
      for (const f of files) this.sendImage(f);
    });
  }

  line(cls: string, ...content: (Node | string)[]): void {
    const p = h("p", { class: cls }, ...content);
    this.log.append(p);
    p.scrollIntoView?.({ block: "end" });
  }

  /** A message from a member: long text is cut, unsafe images are not shown. */
  received(from: string, msg: ChatMessage): void {
    if ("text" in msg && msg.text.length > MAX_CHAT_TEXT) msg = { text: `${msg.text.slice(0, MAX_CHAT_TEXT)} ${t("chat_cut", { max: MAX_CHAT_TEXT })}` };
    this.render(from, msg, false);
    notify("notify_chat", `${from}: ${"text" in msg ? msg.text : t("image")}`);
  }

  private render(from: string, msg: ChatMessage, mine: boolean): void {
    const cls = mine ? "msg mine" : "msg";
    const who = h("span", { class: "from" }, from + ": ");
    if ("text" in msg) return this.line(cls, who, h("span", { class: "text" }, msg.text));
    if (!SAFE_IMAGE.test(msg.image)) return this.line(cls, who, h("span", { class: "blocked" }, t("blocked_image")));
    const img = h("img", { src: msg.image, alt: t("image_from", { name: from }), class: "chat-image" });
    const open = h("button", { type: "button", class: "image-button", "aria-label": t("image_from", { name: from }) }, img);
    open.addEventListener("click", () => openImage(msg.image));
    this.line(cls, who, open);
  }

  private sendText(): void {
    const text = this.input.value;
    const room = this.room();
    if (!text.trim() || !room) return;
    if (text.length > MAX_CHAT_TEXT) return notice(t("chat_too_long", { max: MAX_CHAT_TEXT }), "warn");
    this.input.value = "";
    void room.sendChat({ text });
    this.render(username(), { text }, true);
  }

  private sendImage(f: File): void {
    if (!/^image\/(png|jpeg|gif|webp)$/.test(f.type)) return;
    void imageDataUrl(f).then((data) => {
      const room = this.room();
      if (!room || !data || !SAFE_IMAGE.test(data)) return;
      void room.sendChat({ image: data }).then(
        () => this.render(username(), { image: data }, true),
        (e) => notice(String(e instanceof Error ? e.message : e), "warn"),
      );
    });
  }
}

export function notify(kind: "notify_chat" | "notify_join" | "notify_leave", text: string): void {
  if (!document.hidden || !prefs.bool(kind) || typeof Notification === "undefined" || Notification.permission !== "granted") return;
  new Notification("keksbox", { body: text });
}

function openImage(data: string): void {
  const comma = data.indexOf(",");
  const mime = data.slice(5, data.indexOf(";"));
  const bin = atob(data.slice(comma + 1));
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const url = URL.createObjectURL(new Blob([bytes], { type: mime }));
  window.open(url, "_blank", prefs.bool("image_view_popup") ? "popup,width=800,height=600,noopener" : "noopener");
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function imageDataUrl(f: File): Promise<string | null> {
  if (f.size <= IMAGE_DIRECT_MAX) {
    return new Promise((resolve) => {
      const rd = new FileReader();
      rd.onload = () => resolve(String(rd.result));
      rd.onerror = () => resolve(null);
      rd.readAsDataURL(f);
    });
  }
  try {
    const bmp = await createImageBitmap(f);
    const scale = Math.min(1, 1920 / Math.max(bmp.width, bmp.height));
    const c = document.createElement("canvas");
    c.width = Math.round(bmp.width * scale);
    c.height = Math.round(bmp.height * scale);
    c.getContext("2d")?.drawImage(bmp, 0, 0, c.width, c.height);
    return c.toDataURL("image/jpeg", 0.85);
  } catch (e) {
    console.warn("keksbox: cannot scale image", e);
    return null;
  }
}
