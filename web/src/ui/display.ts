// Room display mode (`/room#<secret>?display`): the meeting room's TV or projector. It shares
// nothing and never asks for a camera or microphone, enables every video and audio, shows the
// gallery alone on the screen, keeps the screen awake, and while nobody else is in the room
// shows the room's name, its link and a large QR code so people in the room join by phone.

import { h } from "./el";
import { t } from "./i18n";
import { qrCanvas } from "./dialogs";

/** The fragment parameter that turns a room page into a room display. */
export const DISPLAY_PARAM = "display";

interface WakeLockSentinelLike {
  released: boolean;
  release(): Promise<void>;
}
type WakeLockLike = { request(type: "screen"): Promise<WakeLockSentinelLike> };

export class RoomDisplay {
  readonly el = h("section", { id: "invite", "aria-labelledby": "invite-h" });
  private lock: WakeLockSentinelLike | null = null;

  constructor() {
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") void this.keepAwake();
    });
    // Full screen needs a user gesture: the first click or key on the display makes it so.
    const full = () => void document.documentElement.requestFullscreen?.().catch(() => {});
    document.addEventListener("click", full, { once: true });
    document.addEventListener("keydown", full, { once: true });
  }

  /** The room shown in the invitation (again on a room switch). */
  show(title: string, link: string): void {
    this.el.replaceChildren(h("h2", { id: "invite-h" }, title), h("p", {}, t("display_join")), h("p", { class: "invite-link" }, h("code", {}, link)), qrCanvas(link, "invite-qr"));
  }

  /** The invitation shows while nobody else is in the room. */
  alone(yes: boolean): void {
    this.el.hidden = !yes;
  }

  /** Asks the browser to keep the screen on (released by it when the page is hidden). */
  async keepAwake(): Promise<void> {
    const wl = (navigator as unknown as { wakeLock?: WakeLockLike }).wakeLock;
    if (!wl || (this.lock && !this.lock.released)) return;
    try {
      this.lock = await wl.request("screen");
    } catch (e) {
      console.info("keksbox: the screen may turn off (no wake lock)", e);
    }
  }
}
