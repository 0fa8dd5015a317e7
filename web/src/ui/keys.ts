// Keyboard shortcuts (keks-meet's set). Ignored while typing in a field, except Ctrl+Enter,
// and while a dialog is open.

import { Key } from "./i18n";

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

export interface KeyActions {
  toggleChat(): void;
  addMicrophone(): void;
  addCamera(): void;
  addScreen(): void;
  stopAllTracks(): void;
  help(): void;
}

export function installKeys(a: KeyActions): void {
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey && ev.key === "Enter") {
      ev.preventDefault();
      a.toggleChat();
      return;
    }
    if (inField(ev.target) || ev.altKey || ev.metaKey || document.querySelector("dialog[open]")) return;
    if (ev.ctrlKey) {
      if (ev.key === "c" && !window.getSelection()?.toString()) {
        ev.preventDefault();
        a.stopAllTracks();
      }
      return;
    }
    switch (ev.key.toLowerCase()) {
      case "m":
      case "r":
        a.addMicrophone();
        break;
      case "c":
        a.addCamera();
        break;
      case "s":
        a.addScreen();
        break;
      case "?":
        a.help();
        break;
      default:
        return;
    }
    ev.preventDefault();
  });
}

function inField(t: EventTarget | null): boolean {
  const e = t as HTMLElement | null;
  return !!e && (e.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(e.tagName));
}
