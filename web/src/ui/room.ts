// The room page: `/room#<secret>?prefs` (or `?display` for a meeting room's screen). Builds the
// page from its parts (gallery, member list, chat, local devices, dialogs, keys, room display),
// connects the protocol's Signaling and Room to them, and handles room switches by fragment.

import { Bytes, roomHash, RoomKey } from "../protocol/crypto";
import { PrefKey } from "../protocol/prefs";
import { Room, RoomEvents } from "../protocol/room";
import { isShortSecret, parseFragment, RoomFragment } from "../protocol/secret";
import { Signaling, signalingUrl } from "../protocol/signaling";
import { Chat } from "./chat";
import { initLanguage, prefs, rtcConfig, username } from "./common";
import { helpDlg, openHelp, openSettings, openShare, settingsDlg, shareDlg } from "./dialogs";
import { DISPLAY_PARAM, RoomDisplay } from "./display";
import { h } from "./el";
import { Gallery } from "./gallery";
import { Key, t } from "./i18n";
import { installKeys } from "./keys";
import { LocalDevices } from "./local";
import { resumeAudio } from "./media";
import { Members, nameOf } from "./members";
import { notice, notices } from "./notices";

/** The fragment's preferences, without the display flag (a page mode, not a preference). */
function fragmentPrefs(f: RoomFragment | null): [string, string][] {
  return (f?.params ?? []).filter(([k]) => k !== DISPLAY_PARAM);
}

const first = parseFragment(location.hash);
const displayMode = first?.params.some(([k]) => k === DISPLAY_PARAM) ?? false;
prefs.setFragment(fragmentPrefs(first));
initLanguage();

// ---------- the parts ----------

let room: Room | null = null;
let current: RoomFragment | null = null;
let joined = false;

const gallery = new Gallery();
const chat = new Chat(() => room);
const members = new Members(() => room, gallery, chat);
const local = new LocalDevices(() => room, gallery);
const display = displayMode ? new RoomDisplay() : null;
const rtc = rtcConfig();
/** On a narrow screen the side panel is an overlay, closed at first. */
const narrow = window.matchMedia("(max-width: 40rem)");

const titleEl = h("h1", { id: "room-title" }, t("unnamed_room"));
const statusEl = h("p", { id: "status", role: "status" }, t("connecting"));
const people = h(
  "section",
  { id: "people", "aria-labelledby": "people-h" },
  h("h2", { id: "people-h" }, t("people")),
  h("h3", { id: "local-h" }, t("local_resources")),
  local.el,
  members.el,
);
const side = h("aside", { id: "side", "aria-label": t("side_panel") }, people, chat.el);

const btn = (id: string, label: Key, onclick: () => void, extra: Record<string, string> = {}) => h("button", { type: "button", id, onclick, ...extra }, t(label));
const toggles = {
  people: btn("toggle-people", "people", () => showPanel(people, people.hidden), { "aria-controls": "people", "aria-expanded": "true" }),
  chat: btn("toggle-chat", "chat_toggle", () => toggleChat(), { "aria-controls": "chat", "aria-expanded": "true" }),
};
const controls = h(
  "nav",
  { id: "controls", "aria-label": t("controls") },
  btn("add-mic", "add_microphone", () => void local.addMicrophone()),
  btn("add-camera", "add_camera", () => void local.addCamera()),
  btn("add-screen", "add_screen", () => void local.addScreen()),
  btn("add-file", "add_file", () => local.filePick.click()),
  local.filePick,
  btn("stop-all", "stop_all", () => local.stopAllTracks()),
  toggles.people,
  toggles.chat,
  btn("open-share", "share", () => openShare(roomLink())),
  btn("open-settings", "settings", () => openSettings()),
  btn("open-help", "help", () => openHelp()),
);
const stage = h("main", { id: "stage" }, notices, gallery.el, display?.el);

document.body.classList.toggle("display", displayMode);
const app = document.getElementById("app")!;
app.classList.add("room");
app.append(h("header", { id: "top" }, titleEl, statusEl), displayMode ? "" : controls, stage, side, settingsDlg, helpDlg, shareDlg);

/** Shows or hides one side panel; on a phone only one is open at a time, over the gallery. */
function showPanel(panel: HTMLElement, show: boolean): void {
  panel.hidden = !show;
  if (show && narrow.matches) for (const p of [people, chat.el]) if (p !== panel) p.hidden = true;
  toggles.people.setAttribute("aria-expanded", String(!people.hidden));
  toggles.chat.setAttribute("aria-expanded", String(!chat.el.hidden));
  side.hidden = displayMode || (people.hidden && chat.el.hidden);
  document.body.classList.toggle("side-open", !side.hidden);
}

function toggleChat(): void {
  showPanel(chat.el, chat.el.hidden);
  if (!chat.el.hidden) chat.input.focus();
}

showPanel(people, !narrow.matches && !displayMode);
showPanel(chat.el, !narrow.matches && !displayMode);
if (!displayMode) gallery.person("self", username());

// ---------- signaling and the room ----------

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

const events: RoomEvents = {
  join: (m) => {
    members.join(m);
    display?.alone(false);
  },
  leave: (m) => {
    members.leave(m);
    display?.alone((room?.members.size ?? 0) === 0);
  },
  update: (m) => members.update(m),
  chat: (from, msg) => chat.received(nameOf(from), msg),
  provide: (r) => members.provide(r),
  provideUpdate: (r) => members.provideUpdate(r),
  provideStop: (r) => members.provideStop(r),
  resourceState: (r) => members.resourceState(r),
  preview: (r, data) => members.preview(r, data),
  fileSink: (r) => members.fileSink(r),
  fileProgress: (r, bytes) => members.fileProgress(r, bytes),
  uploadProgress: (id, to, bytes, state) => local.uploadProgress(id, to, nameOf(to), bytes, state),
  peerState: (m) => members.peerState(m),
};

async function enterRoom(frag: RoomFragment): Promise<void> {
  current = frag;
  const title = frag.name ? t("room_title", { name: frag.name }) : t("unnamed_room");
  document.title = `${title} - keksbox`;
  titleEl.textContent = title;
  display?.show(title, roomLink());
  display?.alone(true);
  notices.replaceChildren();
  if (isShortSecret(frag.secret)) notice(t("warn_short"), "warn");
  if (!window.isSecureContext) notice(t("warn_insecure"), "warn");
  if (prefs.bool("warn_redirect")) notice(t("warn_redirect"), "warn");
  const old = room;
  room = null;
  old?.close();
  joined = false;
  delete document.body.dataset.state;
  // The WebSocket is already open (sig.start). The derivations may already be running (early.ts).
  const early = takeEarly(frag.secret);
  if (!early) performance.mark("keksbox-derive-start"); // read by `npm run bench`
  const [key, hash, config] = await Promise.all([early ? early.key.then((b) => RoomKey.fromBytes(b)) : RoomKey.derive(frag.secret), early?.hash ?? roomHash(frag.secret), rtc]);
  performance.mark("keksbox-derived");
  if (current !== frag) return; // switched again meanwhile
  const r = new Room(hash, key, (p) => sig.send(p), events, {
    rtcConfig: config,
    // A room display takes everything; otherwise an explicit choice for this resource (it
    // survives reconnects: resource ids do) beats the preference.
    autoRequest: (info) =>
      info.kind === "track" && (displayMode || (members.choices.get(info.id) ?? prefs.bool(info.track_kind === "audio" ? "optional_audio_default_enable" : "optional_video_default_enable"))),
  });
  r.username = displayMode && !prefs.fromFragment("username") ? t("display_name") : username();
  r.prepare(sig.id, local.resources());
  room = r;
  sig.join(hash);
}

/** The derivations early.ts started for this secret, once (a later room switch derives anew). */
function takeEarly(secret: string): { hash: Promise<string>; key: Promise<Bytes> } | null {
  const w = window as unknown as { keksboxEarly?: { secret: string; hash: Promise<string>; key: Promise<Bytes> } };
  const e = w.keksboxEarly;
  delete w.keksboxEarly;
  return e?.secret === secret ? e : null;
}

function roomLink(): string {
  return `${location.origin}/room#${encodeURIComponent(current?.secret ?? "")}`;
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

// ---------- page lifecycle ----------

if (!displayMode) {
  installKeys({
    toggleChat,
    addMicrophone: () => void local.addMicrophone(),
    addCamera: () => void local.addCamera(),
    addScreen: () => void local.addScreen(),
    stopAllTracks: () => local.stopAllTracks(),
    help: openHelp,
  });
}

window.addEventListener("beforeunload", (ev) => {
  if (prefs.bool("enable_onbeforeunload") && local.hasTracks()) {
    ev.preventDefault();
    ev.returnValue = "";
  }
});

window.addEventListener("hashchange", () => {
  const f = parseFragment(location.hash);
  prefs.setFragment(fragmentPrefs(f));
  if (!f) return;
  if (f.secret !== current?.secret) {
    chat.line("system", "-");
    members.clear();
    void enterRoom(f);
  }
});

prefs.onChange((k, v) => {
  if (k === "username" && typeof v === "string") {
    room?.setUsername(v);
    if (!displayMode) gallery.person("self", v);
  }
});

if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch((e) => console.warn("keksbox: service worker not registered", e));
}

// Audio started before any interaction begins suspended; the first one resumes it.
document.addEventListener("pointerdown", () => resumeAudio());
document.addEventListener("keydown", () => resumeAudio());

// Back on the network: do not wait for the backoff timer.
window.addEventListener("online", () => sig.reconnectNow());

sig.start();
if (!first) {
  statusEl.textContent = t("no_room");
  notices.append(h("p", {}, h("a", { href: "/" }, t("to_start"))));
} else {
  void enterRoom(first).then(() => {
    if (displayMode) return void display?.keepAwake();
    startPreferredDevice("microphone_enabled", "add_microphone", () => local.addMicrophone());
    startPreferredDevice("camera_enabled", "add_camera", () => local.addCamera());
    startPreferredDevice("screencast_enabled", "add_screen", () => local.addScreen());
  });
}

// For tests and debugging in the console.
(window as unknown as { keksbox: unknown }).keksbox = {
  sig,
  get room() {
    return room;
  },
  addFiles: (files: Iterable<File>) => local.addFiles(files),
};
