// The room page: `/room#<secret>?prefs`. Builds the DOM, drives the protocol's Room and
// Signaling, and renders members, resources and chat. Message text is only ever set as text.

import { generate } from "lean-qr";

import { roomHash, RoomKey } from "../protocol/crypto";
import { FileSink } from "../protocol/files";
import { PREFS, PrefDef, PrefKey } from "../protocol/prefs";
import { LocalResource, Member, RemoteResource, Room, RoomEvents } from "../protocol/room";
import { isShortSecret, parseFragment, RoomFragment } from "../protocol/secret";
import { Signaling, signalingUrl } from "../protocol/signaling";
import { initLanguage, prefs, rtcConfig, username } from "./common";
import { prepareSink } from "./download";
import { append, clear, formatBytes, h, labelled, SAFE_IMAGE } from "./el";
import { Key, t } from "./i18n";
import { camera, microphone, Microphone, resumeAudio, screen, thumbnail, watchSpeaking } from "./media";

prefs.setFragment(parseFragment(location.hash)?.params ?? []);
initLanguage();

// ---------- static layout ----------

const titleEl = h("h1", { id: "room-title" }, t("unnamed_room"));
const statusEl = h("p", { id: "status", role: "status" }, t("connecting"));
const notices = h("div", { id: "notices", "aria-live": "polite" });
const members = h("ul", { id: "members", class: "members" });
const localList = h("ul", { id: "local-resources", class: "resources" });
const chatLog = h("div", { id: "chat-log", role: "log", "aria-live": "polite", "aria-labelledby": "chat-h" });
const chatInput = h("input", { type: "text", id: "chat-input", autocomplete: "off", maxlength: 10_000 });
// The native pickers stay hidden; visible buttons open them (keeps focus visible and in order).
const imagePick = h("input", { type: "file", id: "image-pick", accept: "image/png,image/jpeg,image/gif,image/webp", hidden: true, tabindex: -1 });
const filePick = h("input", { type: "file", id: "file-pick", multiple: true, hidden: true, tabindex: -1 });
const chatAside = h(
  "aside",
  { id: "chat", "aria-labelledby": "chat-h" },
  h("h2", { id: "chat-h" }, t("chat")),
  chatLog,
  h(
    "form",
    { id: "chat-form", onsubmit: (ev: Event) => (ev.preventDefault(), sendChatText()) },
    h("label", { for: "chat-input" }, t("chat_input")),
    h("div", { class: "row" }, chatInput, h("button", { type: "submit" }, t("send"))),
    h("button", { type: "button", id: "send-image", onclick: () => imagePick.click() }, t("send_image")),
    imagePick,
  ),
);

const btn = (id: string, label: Key, onclick: () => void, extra: Record<string, string> = {}) =>
  h("button", { type: "button", id, onclick, ...extra }, t(label));

const settingsDlg = h("dialog", { id: "settings", "aria-labelledby": "settings-h" });
const helpDlg = h("dialog", { id: "help", "aria-labelledby": "help-h" });
const shareDlg = h("dialog", { id: "share", "aria-labelledby": "share-h" });

document.getElementById("app")!.append(
  h(
    "header",
    {},
    titleEl,
    statusEl,
    h(
      "nav",
      { "aria-label": t("local_resources") },
      btn("add-mic", "add_microphone", () => void addMicrophone()),
      btn("add-camera", "add_camera", () => void addCamera()),
      btn("add-screen", "add_screen", () => void addScreen()),
      h("button", { type: "button", id: "add-file", onclick: () => filePick.click() }, t("add_file")),
      filePick,
      btn("stop-all", "stop_all", () => stopAllTracks()),
      btn("toggle-chat", "chat_toggle", () => toggleChat(), { "aria-controls": "chat", "aria-expanded": "true" }),
      btn("open-share", "share", () => openShare()),
      btn("open-settings", "settings", () => openSettings()),
      btn("open-help", "help", () => helpDlg.showModal()),
    ),
  ),
  h(
    "main",
    {},
    notices,
    h("section", { "aria-labelledby": "local-h" }, h("h2", { id: "local-h" }, t("local_resources")), localList),
    h("section", { "aria-labelledby": "people-h" }, h("h2", { id: "people-h" }, t("people")), members),
  ),
  chatAside,
  settingsDlg,
  helpDlg,
  shareDlg,
);

// ---------- state ----------

let room: Room | null = null;
let current: RoomFragment | null = null;
let joined = false;
const local = new Map<string, { res: LocalResource; li: HTMLElement; stop: () => void; video?: HTMLVideoElement; uploads?: HTMLElement }>();
const memberUi = new Map<number, { li: HTMLElement; name: HTMLElement; state: HTMLElement; res: HTMLElement; debug: HTMLElement; announced: boolean; speaking: Set<() => void> }>();
const resUi = new Map<RemoteResource, { li: HTMLElement; body: HTMLElement; button: HTMLButtonElement; progress?: HTMLProgressElement; stopSpeak?: () => void }>();
const pendingSinks = new Map<RemoteResource, FileSink>();
/** Tracks the user enabled (true) or disabled (false) by hand, by resource id. */
const choices = new Map<string, boolean>();
const rtc = rtcConfig();

const nameOf = (m: Member) => m.username ?? t("unknown_user");

function notice(text: string, kind: "warn" | "info" = "info"): void {
  notices.append(h("p", { class: `notice ${kind}` }, text));
}

function chatLine(cls: string, ...content: (Node | string)[]): void {
  const li = h("p", { class: cls }, ...content);
  chatLog.append(li);
  li.scrollIntoView?.({ block: "end" });
}

function notify(kind: "notify_chat" | "notify_join" | "notify_leave", text: string): void {
  if (!document.hidden || !prefs.bool(kind) || typeof Notification === "undefined" || Notification.permission !== "granted") return;
  new Notification("keksbox", { body: text });
}

// ---------- signaling ----------

const sig = new Signaling(signalingUrl(location), (u) => new WebSocket(u), {
  onInit: (id) => {
    room?.reset(id);
    statusEl.textContent = t("connected");
  },
  onPacket: (p) => {
    if (p.kind === "client_join" && p.id === sig.id && !joined) {
      joined = true;
      statusEl.textContent = t("joined");
      document.body.dataset.state = "joined";
      if (!performance.getEntriesByName("keksbox-joined").length) performance.mark("keksbox-joined");
    }
    room?.handle(p);
  },
  onDisconnect: (ms) => {
    joined = false;
    document.body.dataset.state = "reconnecting";
    statusEl.textContent = t("reconnecting", { s: (ms / 1000).toFixed(1) });
  },
});

async function enterRoom(frag: RoomFragment): Promise<void> {
  current = frag;
  document.title = `${frag.name ? t("room_title", { name: frag.name }) : t("unnamed_room")} – keksbox`;
  titleEl.textContent = frag.name ? t("room_title", { name: frag.name }) : t("unnamed_room");
  clear(notices);
  if (isShortSecret(frag.secret)) notice(t("warn_short"), "warn");
  if (!window.isSecureContext) notice(t("warn_insecure"), "warn");
  if (prefs.bool("warn_redirect")) notice(t("warn_redirect"), "warn");
  const old = room;
  room = null;
  old?.close();
  joined = false;
  delete document.body.dataset.state;
  const [key, hash, config] = await Promise.all([RoomKey.derive(frag.secret), roomHash(frag.secret), rtc]);
  if (current !== frag) return; // switched again meanwhile
  const r = new Room(hash, key, (p) => sig.send(p), events, {
    rtcConfig: config,
    // An explicit choice for this resource (it survives reconnects: resource ids do) beats the preference.
    autoRequest: (info) => info.kind === "track" && (choices.get(info.id) ?? prefs.bool(info.track_kind === "audio" ? "optional_audio_default_enable" : "optional_video_default_enable")),
  });
  r.username = username();
  r.myId = sig.id;
  for (const l of local.values()) r.local.set(l.res.id, l.res);
  room = r;
  sig.join(hash);
}

const events: RoomEvents = {
  join(m) {
    const name = h("span", { class: "name" }, t("unknown_user"));
    const state = h("span", { class: "state" }, "");
    const res = h("ul", { class: "resources", "aria-labelledby": `member-${m.id}` });
    const debug = h("pre", { class: "debug", hidden: true });
    const li = h("li", { class: "member", "data-id": m.id }, h("h3", { id: `member-${m.id}` }, name, " ", state), res, debug);
    members.append(li);
    memberUi.set(m.id, { li, name, state, res, debug, announced: false, speaking: new Set() });
  },
  leave(m) {
    const u = memberUi.get(m.id);
    if (!u) return;
    memberUi.delete(m.id);
    for (const s of u.speaking) s();
    u.li.remove();
    if (u.announced) {
      chatLine("leave", t("left_line", { name: nameOf(m) }));
      notify("notify_leave", t("left_line", { name: nameOf(m) }));
    }
  },
  update(m) {
    const u = memberUi.get(m.id);
    if (!u) return;
    u.name.textContent = nameOf(m);
    refreshResourceLabels(m);
    if (!u.announced) {
      u.announced = true;
      chatLine("join", t("joined_line", { name: nameOf(m) }));
      notify("notify_join", t("joined_line", { name: nameOf(m) }));
    }
  },
  chat(from, msg) {
    if ("text" in msg && msg.text.length > MAX_CHAT_TEXT) msg = { text: `${msg.text.slice(0, MAX_CHAT_TEXT)} ${t("chat_cut", { max: MAX_CHAT_TEXT })}` };
    renderChat(nameOf(from), msg, false);
    notify("notify_chat", `${nameOf(from)}: ${"text" in msg ? msg.text : "🖼"}`);
  },
  provide(r) {
    const u = memberUi.get(r.owner.id);
    if (!u) return;
    const button = h("button", { type: "button", class: "small" }, "");
    const body = h("div", { class: "res-body" });
    const li = h("li", { class: `resource ${r.info.kind} ${r.info.track_kind ?? ""}`, "data-res": r.info.id }, h("span", { class: "label" }, resLabel(r)), " ", button, body);
    button.addEventListener("click", () => void toggleRemote(r));
    u.res.append(li);
    resUi.set(r, { li, body, button });
    events.resourceState(r);
  },
  provideStop(r) {
    const u = resUi.get(r);
    u?.stopSpeak?.();
    u?.li.remove();
    resUi.delete(r);
    pendingSinks.get(r)?.abort("stopped");
    pendingSinks.delete(r);
  },
  resourceState(r) {
    const u = resUi.get(r);
    if (!u) return;
    const f = r.info.kind === "file";
    const busy = r.state === "requested" || r.state === "active";
    u.button.textContent = f ? (busy ? t("cancel") : t("download")) : busy ? t("disable") : t("enable");
    u.button.setAttribute("aria-label", `${u.button.textContent}: ${r.info.label ?? r.info.id}`);
    u.li.dataset.state = r.state;
    if (f) {
      if (r.state === "done") u.body.replaceChildren(h("span", { class: "ok" }, t("received", { label: r.info.label ?? "" })));
      if (r.state === "failed") u.body.replaceChildren(h("span", { class: "error" }, t("failed", { label: r.info.label ?? "" })));
      return;
    }
    if (r.state === "active" && r.stream) {
      if (u.body.querySelector("video,audio")) return;
      u.stopSpeak?.();
      if (r.info.track_kind === "video") {
        const v = h("video", { autoplay: true, playsinline: true, muted: true, "aria-label": t("video_of", { label: r.info.label ?? "", name: nameOf(r.owner) }) });
        v.muted = true;
        v.srcObject = r.stream;
        u.body.replaceChildren(v);
      } else {
        const a = h("audio", { autoplay: true });
        a.srcObject = r.stream;
        u.body.replaceChildren(a);
        a.play().catch(() => audioBlocked());
        const mu = memberUi.get(r.owner.id);
        const stop = watchSpeaking(r.stream, (s) => mu?.li.classList.toggle("speaking", s));
        u.stopSpeak = stop;
        mu?.speaking.add(stop);
      }
    } else if (r.state !== "active") {
      u.stopSpeak?.();
      u.stopSpeak = undefined;
      u.body.querySelector("video,audio")?.remove();
    }
  },
  preview(r, data) {
    const u = resUi.get(r);
    if (!u || r.state === "active" || !SAFE_IMAGE.test(data)) return;
    u.body.replaceChildren(h("img", { class: "preview", src: data, alt: t("preview_of", { label: r.info.label ?? "" }) }));
  },
  async fileSink(r) {
    const s = pendingSinks.get(r) ?? null;
    pendingSinks.delete(r);
    return s;
  },
  fileProgress(r, bytes) {
    const u = resUi.get(r);
    if (!u) return;
    if (!u.progress || !u.progress.isConnected) {
      u.progress = h("progress", { max: r.info.size ?? 0, "aria-label": r.info.label ?? r.info.id });
      u.body.replaceChildren(u.progress);
    }
    u.progress.value = bytes;
    u.progress.title = t("progress", { done: formatBytes(bytes), total: formatBytes(r.info.size ?? 0) });
  },
  uploadProgress(id, to, bytes, state) {
    const l = local.get(id);
    if (!l?.uploads) return;
    let row = l.uploads.querySelector<HTMLElement>(`[data-to="${to.id}"]`);
    if (!row) {
      const text = h("span", { class: "text" });
      const cancel = h("button", { type: "button", class: "small cancel", "aria-label": `${t("cancel")}: ${l.res.label} → ${nameOf(to)}` }, t("cancel"));
      cancel.addEventListener("click", () => room?.cancelUpload(id, to.id));
      row = h("li", { "data-to": to.id }, text, " ", cancel);
      l.uploads.append(row);
    }
    const size = l.res.kind === "file" ? l.res.size : 0;
    row.dataset.state = state;
    const stateText = state === "sending" ? t("progress", { done: formatBytes(bytes), total: formatBytes(size) }) : t(state === "done" ? "upload_done" : "upload_failed");
    row.querySelector(".text")!.textContent = t("sent_to", { name: nameOf(to), state: stateText });
    (row.querySelector(".cancel") as HTMLElement).hidden = state !== "sending";
  },
  peerState(m) {
    const u = memberUi.get(m.id);
    if (u) u.state.textContent = `(${m.peer.pc.connectionState})`;
  },
};

/** The browser refused to play audio before any interaction: offer a button that does. */
function audioBlocked(): void {
  if (document.getElementById("unblock-audio")) return;
  const b = h("button", { type: "button", id: "unblock-audio", class: "primary" }, t("enable_audio"));
  b.addEventListener("click", () => {
    resumeAudio();
    for (const a of document.querySelectorAll("audio")) void a.play().catch(() => {});
    b.remove();
  });
  notices.append(b);
}

function refreshResourceLabels(m: Member): void {
  for (const r of m.resources.values()) {
    const u = resUi.get(r);
    const l = u?.li.querySelector(".label");
    if (l) l.textContent = resLabel(r);
  }
}

function resLabel(r: RemoteResource): string {
  const label = r.info.label ?? r.info.id;
  if (r.info.kind === "file") return t("resource_file", { label, size: formatBytes(r.info.size ?? 0) });
  return t(r.info.track_kind === "audio" ? "resource_audio" : "resource_video", { label });
}

async function toggleRemote(r: RemoteResource): Promise<void> {
  if (!room) return;
  if (r.info.kind === "track") choices.set(r.info.id, !(r.state === "requested" || r.state === "active"));
  if (r.state === "requested" || r.state === "active") {
    room.requestStop(r);
    pendingSinks.get(r)?.abort("cancelled");
    pendingSinks.delete(r);
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
    pendingSinks.set(r, sink);
  }
  room.request(r);
}

/**
 * A device preference the person set in their settings starts the device; one that comes from
 * the link only offers a button: a link must not publish someone's camera to a room.
 */
function startPreferredDevice(pref: PrefKey, what: Key, start: () => Promise<void>): void {
  if (!prefs.bool(pref)) return;
  if (!prefs.fromFragment(pref)) return void start();
  const b = h("button", { type: "button", class: "primary", "data-pref": pref }, t("turn_on", { what: t(what) }));
  const p = h("p", { class: "notice link-device" }, t("link_asks", { what: t(what) }), " ", b);
  b.addEventListener("click", () => {
    p.remove();
    void start();
  });
  notices.append(p);
}

// ---------- chat ----------

/** Longest chat text sent or shown; longer received text is cut (keks-meet sets no limit). */
export const MAX_CHAT_TEXT = 10_000;

function renderChat(from: string, msg: { text: string } | { image: string }, mine: boolean): void {
  const who = h("span", { class: "from" }, from + ": ");
  if ("text" in msg) {
    chatLine(mine ? "msg mine" : "msg", who, h("span", { class: "text" }, msg.text));
    return;
  }
  if (!SAFE_IMAGE.test(msg.image)) {
    chatLine(mine ? "msg mine" : "msg", who, h("span", { class: "blocked" }, t("blocked_image")));
    return;
  }
  const img = h("img", { src: msg.image, alt: t("image_from", { name: from }), class: "chat-image" });
  const open = h("button", { type: "button", class: "image-button", "aria-label": t("image_from", { name: from }) }, img);
  open.addEventListener("click", () => openImage(msg.image));
  chatLine(mine ? "msg mine" : "msg", who, open);
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

function sendChatText(): void {
  const text = chatInput.value;
  if (!text.trim() || !room) return;
  if (text.length > MAX_CHAT_TEXT) return notice(t("chat_too_long", { max: MAX_CHAT_TEXT }), "warn");
  chatInput.value = "";
  void room.sendChat({ text });
  renderChat(username(), { text }, true);
}

/** Images above this are scaled down first: the relay limits one message to 8 MiB. */
const IMAGE_DIRECT_MAX = 1_500_000;

function sendImageFile(f: File): void {
  if (!/^image\/(png|jpeg|gif|webp)$/.test(f.type)) return;
  void imageDataUrl(f).then((data) => {
    if (!room || !data || !SAFE_IMAGE.test(data)) return;
    void room.sendChat({ image: data }).then(
      () => renderChat(username(), { image: data }, true),
      (e) => notice(String(e instanceof Error ? e.message : e), "warn"),
    );
  });
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

imagePick.addEventListener("change", () => {
  for (const f of imagePick.files ?? []) sendImageFile(f);
  imagePick.value = "";
});

document.addEventListener("paste", (ev) => {
  const files = [...(ev.clipboardData?.files ?? [])].filter((f) => f.type.startsWith("image/"));
  if (!files.length) return;
  ev.preventDefault();
  for (const f of files) sendImageFile(f);
});

function toggleChat(): void {
  const hidden = !chatAside.hidden;
  chatAside.hidden = hidden;
  document.getElementById("toggle-chat")?.setAttribute("aria-expanded", String(!hidden));
  if (!hidden) chatInput.focus();
}

// ---------- local resources ----------

function newLocal(res: LocalResource, stop: () => void, extra: (li: HTMLElement) => { video?: HTMLVideoElement; uploads?: HTMLElement } = () => ({})): void {
  const stopBtn = h("button", { type: "button", class: "small", "aria-label": `${t("stop")}: ${res.label}` }, t("stop"));
  const li = h("li", { class: `resource local ${res.kind}`, "data-res": res.id }, h("span", { class: "label" }, res.label), " ", stopBtn);
  localList.append(li);
  const entry = { res, li, stop, ...extra(li) };
  local.set(res.id, entry);
  stopBtn.addEventListener("click", () => removeLocal(res.id));
  room?.addLocal(res);
}

function removeLocal(id: string): void {
  const l = local.get(id);
  if (!l) return;
  local.delete(id);
  l.stop();
  l.li.remove();
  room?.removeLocal(id);
}

function mediaError(what: string, e: unknown): void {
  notice(t("error_media", { what, err: e instanceof Error ? e.message : String(e) }), "warn");
}

async function addMicrophone(): Promise<void> {
  let mic: Microphone;
  try {
    mic = await microphone();
  } catch (e) {
    return mediaError(t("add_microphone"), e);
  }
  const res: LocalResource = { id: mic.stream.id, kind: "track", track_kind: "audio", label: t("add_microphone"), track: mic.track, stream: mic.stream };
  const stopSpeak = watchSpeaking(mic.stream, (s) => document.getElementById("local-h")?.classList.toggle("speaking", s));
  newLocal(res, () => (stopSpeak(), mic.stop()), (li) => {
    let muted = false;
    const mute = h("button", { type: "button", class: "small mute", "aria-pressed": "false" }, t("mute"));
    mute.addEventListener("click", () => {
      muted = !muted;
      mic.setMuted(muted);
      mute.textContent = muted ? t("unmute") : t("mute");
      mute.setAttribute("aria-pressed", String(muted));
    });
    const [gainField, gain] = labelled(t("gain"), h("input", { type: "range", min: 0, max: 5, step: 0.1, value: prefs.num("microphone_gain") ?? 1 }));
    gain.addEventListener("input", () => mic.setGain(Number(gain.value)));
    li.dataset.rnnoise = String(mic.rnnoise);
    append(li, " ", mute, gainField);
    return {};
  });
}

function addVideoTrack(track: MediaStreamTrack, label: string, extraStop: () => void = () => {}): void {
  const stream = new MediaStream([track]);
  const res: LocalResource = { id: stream.id, kind: "track", track_kind: "video", label, track, stream };
  track.addEventListener("ended", () => removeLocal(res.id));
  newLocal(res, () => (track.stop(), extraStop()), (li) => {
    const video = h("video", { autoplay: true, playsinline: true, muted: true, class: "self", "aria-label": label });
    video.muted = true;
    video.srcObject = stream;
    li.append(video);
    return { video };
  });
}

async function addCamera(): Promise<void> {
  try {
    addVideoTrack(await camera(), t("add_camera"));
  } catch (e) {
    mediaError(t("add_camera"), e);
  }
}

async function addScreen(): Promise<void> {
  let s: MediaStream;
  try {
    s = await screen();
  } catch (e) {
    return mediaError(t("add_screen"), e);
  }
  const v = s.getVideoTracks()[0];
  const a = s.getAudioTracks()[0];
  if (v) addVideoTrack(v, t("add_screen"));
  if (a) {
    const stream = new MediaStream([a]);
    newLocal({ id: stream.id, kind: "track", track_kind: "audio", label: `${t("add_screen")} (audio)`, track: a, stream }, () => a.stop());
  }
}

function addFiles(files: Iterable<File>): void {
  for (const f of files) {
    const id = "f" + crypto.randomUUID();
    newLocal({ id, kind: "file", label: f.name, size: f.size, file: f }, () => {}, (li) => {
      const uploads = h("ul", { class: "uploads", "aria-label": f.name });
      li.append(" ", formatBytes(f.size), uploads);
      return { uploads };
    });
  }
}

filePick.addEventListener("change", () => {
  addFiles(filePick.files ?? []);
  filePick.value = "";
});

function stopAllTracks(): void {
  for (const [id, l] of [...local]) if (l.res.kind === "track") removeLocal(id);
}

// Thumbnails of our video resources for members who have not enabled them.
setInterval(() => {
  if (!room) return;
  for (const l of local.values()) {
    if (!l.video) continue;
    const d = thumbnail(l.video);
    if (d && SAFE_IMAGE.test(d)) void room.send({ preview: { id: l.res.id, data: d } });
  }
}, 5000);

// ---------- webrtc_debug ----------

setInterval(async () => {
  const on = prefs.bool("webrtc_debug");
  if (!room) return;
  for (const m of room.members.values()) {
    const u = memberUi.get(m.id);
    if (!u) continue;
    u.debug.hidden = !on;
    if (!on) continue;
    const pc = m.peer.pc;
    const lines = [`connection: ${pc.connectionState}`, `ice: ${pc.iceConnectionState} (${pc.iceGatheringState})`, `signaling: ${pc.signalingState}`, `polite: ${m.peer.polite}, offer collisions: ${m.peer.collisions}`];
    try {
      const stats = await pc.getStats();
      const byId = new Map<string, any>();
      stats.forEach((s: any) => byId.set(s.id, s));
      stats.forEach((s: any) => {
        if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
          const l = byId.get(s.localCandidateId);
          const r = byId.get(s.remoteCandidateId);
          lines.push(`selected: ${l?.candidateType} ${l?.address}:${l?.port} ⇄ ${r?.candidateType} ${r?.address}:${r?.port} (${l?.protocol}), rtt ${s.currentRoundTripTime ?? "?"} s`);
        }
        if (s.type === "codec") lines.push(`codec: ${s.mimeType} ${s.clockRate ?? ""}`);
        if (s.type === "inbound-rtp") lines.push(`in ${s.kind}: ${s.bytesReceived} B, ${s.packetsLost ?? 0} lost${s.framesDecoded !== undefined ? `, ${s.framesDecoded} frames` : ""}`);
        if (s.type === "outbound-rtp") lines.push(`out ${s.kind}: ${s.bytesSent} B`);
      });
    } catch (e) {
      lines.push(String(e));
    }
    u.debug.textContent = lines.join("\n");
  }
}, 2000);

// ---------- dialogs ----------

function dialogFrame(dlg: HTMLDialogElement, id: string, title: string, ...body: (Node | string)[]): void {
  dlg.replaceChildren(h("h2", { id }, title), ...body, h("form", { method: "dialog" }, h("button", { type: "submit" }, t("close"))));
}

function openSettings(): void {
  const rows: HTMLElement[] = [];
  for (const [k, d] of Object.entries(PREFS) as [PrefKey, PrefDef][]) {
    if (d.internal) continue;
    const v = prefs.get(k);
    const note = prefs.fromFragment(k) ? ` ${t("pref_from_url")}` : "";
    let input: HTMLInputElement;
    if (d.type === "boolean") {
      input = h("input", { type: "checkbox", name: k });
      input.checked = v === true;
      input.addEventListener("change", () => prefs.set(k, input.checked));
    } else {
      input = h("input", { type: d.type === "number" ? "number" : "text", name: k, step: "any", value: v === undefined ? "" : String(v) });
      input.addEventListener("change", () => prefs.set(k, input.value === "" ? undefined : input.value));
    }
    rows.push(labelled(`${t(`pref_${k}` as Key)} (${k})${note}`, input)[0]);
  }
  const notif = h("button", { type: "button" }, t("notifications"));
  notif.addEventListener("click", () => void Notification.requestPermission());
  dialogFrame(settingsDlg, "settings-h", t("settings"), h("div", { class: "prefs" }, ...rows), typeof Notification !== "undefined" ? notif : "");
  settingsDlg.showModal();
}

export const KEYBINDINGS: [string, Key][] = [
  ["Ctrl+Enter", "key_chat"],
  ["M", "key_mic"],
  ["R", "key_mic_left"],
  ["C", "key_camera"],
  ["S", "key_screen"],
  ["Ctrl+C", "key_end"],
  ["Ctrl+V", "key_paste"],
  ["?", "key_help"],
];

dialogFrame(
  helpDlg,
  "help-h",
  t("help"),
  h("h3", {}, t("keybindings")),
  h("table", {}, h("tbody", {}, ...KEYBINDINGS.map(([k, d]) => h("tr", {}, h("th", { scope: "row" }, h("kbd", {}, k)), h("td", {}, t(d)))))),
);

function roomLink(): string {
  return `${location.origin}/room#${encodeURIComponent(current?.secret ?? "")}`;
}

function openShare(): void {
  const link = roomLink();
  const [field, input] = labelled(t("copy_link"), h("input", { type: "text", readonly: true, value: link, id: "share-link" }));
  const canvas = h("canvas", { id: "share-qr", role: "img", "aria-label": t("qr_label") });
  try {
    generate(link).toCanvas(canvas);
  } catch (e) {
    console.warn("keksbox: QR code failed", e);
  }
  const status = h("span", { role: "status" });
  const copy = h("button", { type: "button" }, t("copy_link"));
  copy.addEventListener("click", () => {
    input.select();
    void navigator.clipboard?.writeText(link).then(() => (status.textContent = t("copied")), () => document.execCommand("copy"));
  });
  dialogFrame(shareDlg, "share-h", t("share"), field, copy, status, canvas);
  shareDlg.showModal();
}

// ---------- keyboard ----------

function inField(t: EventTarget | null): boolean {
  const e = t as HTMLElement | null;
  return !!e && (e.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(e.tagName));
}

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey && ev.key === "Enter") {
    ev.preventDefault();
    toggleChat();
    return;
  }
  if (inField(ev.target) || ev.altKey || ev.metaKey || document.querySelector("dialog[open]")) return;
  if (ev.ctrlKey) {
    if (ev.key === "c" && !window.getSelection()?.toString()) {
      ev.preventDefault();
      stopAllTracks();
    }
    return;
  }
  switch (ev.key.toLowerCase()) {
    case "m":
    case "r":
      void addMicrophone();
      break;
    case "c":
      void addCamera();
      break;
    case "s":
      void addScreen();
      break;
    case "?":
      helpDlg.showModal();
      break;
    default:
      return;
  }
  ev.preventDefault();
});

// ---------- lifecycle ----------

window.addEventListener("beforeunload", (ev) => {
  if (prefs.bool("enable_onbeforeunload") && [...local.values()].some((l) => l.res.kind === "track")) {
    ev.preventDefault();
    ev.returnValue = "";
  }
});

window.addEventListener("hashchange", () => {
  const f = parseFragment(location.hash);
  prefs.setFragment(f?.params ?? []);
  if (!f) return;
  if (f.secret !== current?.secret) {
    chatLine("system", "—");
    clear(members);
    void enterRoom(f);
  }
});

prefs.onChange((k, v) => {
  if (k === "username" && typeof v === "string" && room) room.setUsername(v);
});

if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch((e) => console.warn("keksbox: service worker not registered", e));
}

// Audio started before any interaction (microphone_enabled) begins suspended; the first one resumes it.
document.addEventListener("pointerdown", () => resumeAudio());
document.addEventListener("keydown", () => resumeAudio());

// Back on the network: do not wait for the backoff timer.
window.addEventListener("online", () => sig.reconnectNow());

const first = parseFragment(location.hash);
sig.start();
if (!first) {
  statusEl.textContent = t("no_room");
  notices.append(h("p", {}, h("a", { href: "/" }, t("to_start"))));
} else {
  void enterRoom(first).then(() => {
    startPreferredDevice("microphone_enabled", "add_microphone", addMicrophone);
    startPreferredDevice("camera_enabled", "add_camera", addCamera);
    startPreferredDevice("screencast_enabled", "add_screen", addScreen);
  });
}

// For tests and debugging in the console.
(window as unknown as { keksbox: unknown }).keksbox = { sig, get room() { return room; }, addFiles };
