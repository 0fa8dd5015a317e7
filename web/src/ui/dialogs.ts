// The dialogs: settings (every preference), help (keyboard shortcuts), invite (link and QR
// code). Modal <dialog> elements: focus moves in and returns, Escape closes.

import { generate } from "lean-qr";

import { PREFS, PrefDef, PrefKey } from "../protocol/prefs";
import { prefs } from "./common";
import { h, labelled } from "./el";
import { Key, t } from "./i18n";
import { KEYBINDINGS } from "./keys";

export const settingsDlg = h("dialog", { id: "settings", "aria-labelledby": "settings-h" });
export const helpDlg = h("dialog", { id: "help", "aria-labelledby": "help-h" });
export const shareDlg = h("dialog", { id: "share", "aria-labelledby": "share-h" });

function frame(dlg: HTMLDialogElement, id: string, title: string, ...body: (Node | string)[]): void {
  dlg.replaceChildren(h("h2", { id }, title), ...body, h("form", { method: "dialog" }, h("button", { type: "submit" }, t("close"))));
}

export function openSettings(): void {
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
  frame(settingsDlg, "settings-h", t("settings"), h("div", { class: "prefs" }, ...rows), typeof Notification !== "undefined" ? notif : "");
  settingsDlg.showModal();
}

export function openHelp(): void {
  if (!helpDlg.firstChild) {
    const rows = KEYBINDINGS.map(([k, d]) => h("tr", {}, h("th", { scope: "row" }, h("kbd", {}, k)), h("td", {}, t(d))));
    frame(helpDlg, "help-h", t("help"), h("h3", {}, t("keybindings")), h("table", {}, h("tbody", {}, ...rows)));
  }
  helpDlg.showModal();
}

export function openShare(link: string): void {
  const [field, input] = labelled(t("copy_link"), h("input", { type: "text", readonly: true, value: link, id: "share-link" }));
  const status = h("span", { role: "status" });
  const copy = h("button", { type: "button" }, t("copy_link"));
  copy.addEventListener("click", () => {
    input.select();
    void navigator.clipboard?.writeText(link).then(() => (status.textContent = t("copied")), () => document.execCommand("copy"));
  });
  frame(shareDlg, "share-h", t("share"), field, copy, status, qrCanvas(link, "share-qr"));
  shareDlg.showModal();
}

/** A QR code of `text` on a canvas (one pixel per module; CSS scales it without smoothing). */
export function qrCanvas(text: string, id: string): HTMLCanvasElement {
  const canvas = h("canvas", { id, role: "img", "aria-label": t("qr_label") });
  try {
    generate(text).toCanvas(canvas);
  } catch (e) {
    console.warn("keksbox: QR code failed", e);
  }
  return canvas;
}
