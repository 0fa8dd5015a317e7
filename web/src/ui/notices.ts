// The notice area above the gallery: warnings and offers (a link's device request, audio the
// browser blocked). Read out by screen readers as it changes.

import { h } from "./el";
import { t } from "./i18n";
import { resumeAudio } from "./media";

export const notices = h("div", { id: "notices", "aria-live": "polite" });

export function notice(text: string, kind: "warn" | "info" = "info"): void {
  notices.append(h("p", { class: `notice ${kind}` }, text));
}

/** The browser refused to play audio before any interaction: offer a button that does. */
export function audioBlocked(): void {
  if (document.getElementById("unblock-audio")) return;
  const b = h("button", { type: "button", id: "unblock-audio", class: "primary" }, t("enable_audio"));
  b.addEventListener("click", () => {
    resumeAudio();
    for (const a of document.querySelectorAll("audio")) void a.play().catch(() => {});
    b.remove();
  });
  notices.append(b);
}
