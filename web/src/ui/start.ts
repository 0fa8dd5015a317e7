// The start page: a generated room name (or your own), your name, and the known rooms with
// live member counts from the relay's room watches.

import { roomHash } from "../protocol/crypto";
import { formatRoomWatches, generateSecret, parseRoomWatches } from "../protocol/secret";
import { Signaling, signalingUrl } from "../protocol/signaling";
import { clientConfig, initLanguage, prefs, username } from "./common";
import { clear, h, labelled } from "./el";
import { t } from "./i18n";

initLanguage();
document.title = t("app_name");

const app = document.getElementById("app")!;
const [nameField, nameInput] = labelled(t("your_name"), h("input", { type: "text", autocomplete: "nickname", maxlength: 100, value: username() }));
const [roomField, roomInput] = labelled(t("room_name"), h("input", { type: "text", autocomplete: "off", spellcheck: "false", value: generateSecret(), class: "secret" }));
const list = h("ul", { class: "known", id: "known-rooms" });
const counts = new Map<string, HTMLElement>();
// Shown when the box offers its own camera and microphone (/config.json appliance.summon).
const [codeField, codeInput] = labelled(t("summon_code"), h("input", { type: "text", autocomplete: "off", spellcheck: "false", id: "summon-code", inputmode: "numeric" }));
const summonStatus = h("p", { id: "summon-status", "aria-live": "polite" });
const summon = h(
  "section",
  { id: "summon", "aria-labelledby": "summon-h", hidden: true },
  h("h2", { id: "summon-h" }, t("summon_heading")),
  h("p", {}, t("summon_help")),
  codeField,
  h("button", { type: "button", id: "summon-button", onclick: () => void summonPeer() }, t("summon_button")),
  summonStatus,
);
// Filled in when the appliance serves HTTPS with its own certificate.
const fingerprint = h("section", { id: "fingerprint", "aria-labelledby": "fingerprint-h", hidden: true });

app.append(
  h("header", {}, h("h1", {}, t("app_name"))),
  h(
    "main",
    {},
    h("h2", {}, t("start_heading")),
    h("p", {}, t("start_intro")),
    h(
      "form",
      { id: "start-form", onsubmit: (ev: Event) => (ev.preventDefault(), go()) },
      nameField,
      roomField,
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", id: "new-name", onclick: () => (roomInput.value = generateSecret()) }, t("new_name")),
        h("button", { type: "submit", id: "join", class: "primary" }, t("join")),
        h("button", { type: "button", id: "open-display", onclick: () => go(true) }, t("open_display")),
      ),
    ),
    summon,
    h("section", { "aria-labelledby": "known-h" }, h("h2", { id: "known-h" }, t("known_rooms")), list),
    fingerprint,
  ),
);

/** Joins the room, or opens it as the meeting room's display (`?display`: shares nothing). */
function go(display = false): void {
  const secret = roomInput.value.trim();
  // "?" starts the preferences in a room link, so it cannot be part of a secret.
  roomInput.setCustomValidity(secret.includes("?") ? "?" : "");
  if (!secret || !roomInput.reportValidity()) return;
  if (nameInput.value.trim()) prefs.set("username", nameInput.value.trim());
  const rooms = parseRoomWatches(prefs.str("room_watches") ?? "");
  if (!rooms.some((r) => r.secret === secret)) {
    const hash = secret.indexOf("#");
    const name = hash > 0 ? secret.slice(0, hash) : secret.length > 20 ? secret.slice(0, 8) + "…" : secret;
    rooms.unshift({ name, secret });
    prefs.set("room_watches", formatRoomWatches(rooms.slice(0, 20)));
  }
  location.href = "/room#" + encodeURIComponent(secret) + (display ? "?display" : "");
}

const sig = new Signaling(signalingUrl(location), (u) => new WebSocket(u), {
  onInit: () => {},
  onPacket: (p) => {
    if (p.kind !== "room_info") return;
    const el = counts.get(p.hash);
    if (el) el.textContent = p.user_count > 0 ? t("members_count", { n: p.user_count }) : t("members_unknown");
  },
  onDisconnect: () => {},
});

async function render(): Promise<void> {
  const rooms = parseRoomWatches(prefs.str("room_watches") ?? "");
  clear(list);
  counts.clear();
  if (!rooms.length) list.append(h("li", {}, t("no_known_rooms")));
  const hashes = await Promise.all(
    rooms.map(async (r) => {
      const count = h("span", { class: "count", "aria-live": "polite" }, t("members_unknown"));
      const li = h(
        "li",
        {},
        h("a", { href: "/room#" + encodeURIComponent(r.secret), "aria-label": t("open_room", { name: r.name }) }, r.name),
        " ",
        count,
        " ",
        h("button", { type: "button", class: "small", "aria-label": t("forget", { name: r.name }), onclick: () => forget(r.secret) }, t("forget_button")),
      );
      list.append(li);
      const hash = await roomHash(r.secret);
      li.dataset.hash = hash;
      counts.set(hash, count);
      return hash;
    }),
  );
  sig.watch(hashes);
}

function forget(secret: string): void {
  prefs.set("room_watches", formatRoomWatches(parseRoomWatches(prefs.str("room_watches") ?? "").filter((r) => r.secret !== secret)));
  void render();
}

sig.start();
void render();

/** Shows the appliance's certificate fingerprint, for comparison with the browser's view. */
async function showFingerprint(): Promise<void> {
  const fp = (await clientConfig()).appliance?.fingerprint_sha256;
  if (!fp) return;
  fingerprint.append(h("h2", { id: "fingerprint-h" }, t("fingerprint_heading")), h("p", {}, t("fingerprint_help")), h("code", { class: "fingerprint" }, fp));
  fingerprint.hidden = false;
}

void showFingerprint();

/**
 * Invites the box's camera and microphone into the room named above: the secret and the room
 * code go to the box (same origin: over TLS when it serves TLS), which hands the secret to
 * keksbox-peer. On success this browser joins the room too.
 */
async function summonPeer(): Promise<void> {
  const secret = roomInput.value.trim();
  if (!secret || secret.includes("?")) return void roomInput.reportValidity();
  summonStatus.textContent = "";
  let reason: string;
  try {
    const r = await fetch("/summon", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ code: codeInput.value.trim(), secret }) });
    if (r.ok) {
      summonStatus.textContent = t("summon_ok");
      summonStatus.dataset.state = "ok";
      go();
      return;
    }
    reason = (await r.text()).trim();
  } catch (e) {
    reason = String(e);
  }
  summonStatus.dataset.state = "refused";
  summonStatus.textContent = t("summon_refused", { reason });
}

async function showSummon(): Promise<void> {
  if ((await clientConfig()).appliance?.summon) summon.hidden = false;
}

void showSummon();
