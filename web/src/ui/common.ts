// What both pages share: preferences backed by localStorage, language, client config.

import { Prefs } from "../protocol/prefs";
import { setLanguage } from "./i18n";

export const prefs = new Prefs(safeStorage());

function safeStorage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

/** The username, generating and persisting a "guest-…" name on first use. */
export function username(): string {
  const stored = safeStorage()?.getItem("keksbox.pref.username");
  if (prefs.fromFragment("username") || stored) return prefs.str("username") ?? "guest";
  const n = "guest-" + Math.floor(Math.random() * 1e4).toString().padStart(4, "0");
  prefs.set("username", n);
  return n;
}

export function initLanguage(): void {
  setLanguage(prefs.str("language"), navigator.languages ?? [navigator.language]);
  document.documentElement.lang = prefs.str("language")?.slice(0, 2) ?? (navigator.language.startsWith("de") ? "de" : "en");
}

export interface ClientConfig {
  /** keks-meet's keys; keksbox adds `ice_servers` (every server, TURN over UDP and TCP). */
  webrtc: { stun?: string; turn?: string; turn_user?: string; turn_cred?: string; ice_servers?: RTCIceServer[] };
  /** keksbox only: its TLS certificate, so people can compare it with what the browser shows. */
  appliance?: { fingerprint_sha256?: string; summon?: boolean };
}

/** /config.json, or an empty config when the server has none. */
export async function clientConfig(): Promise<ClientConfig> {
  try {
    const r = await fetch("/config.json");
    if (r.ok) return (await r.json()) as ClientConfig;
  } catch (e) {
    console.warn("keksbox: no /config.json, using no ICE servers", e);
  }
  return { webrtc: {} };
}

/** ICE servers from /config.json; none when the appliance has none configured (LAN). */
export async function rtcConfig(): Promise<RTCConfiguration> {
  const cfg = await clientConfig();
  const servers: RTCIceServer[] = [];
  const w = cfg.webrtc ?? {};
  if (Array.isArray(w.ice_servers) && w.ice_servers.length > 0) return { iceServers: w.ice_servers };
  if (w.stun) servers.push({ urls: w.stun });
  if (w.turn) servers.push({ urls: w.turn, username: w.turn_user, credential: w.turn_cred });
  return { iceServers: servers };
}

declare global {
  interface Window {
    change_pref: (key: string, value: unknown) => boolean;
  }
}
window.change_pref = (key, value) => prefs.set(key, value);
