// Preferences: every option of keks-meet's table with its default. Sources in order of
// precedence: the URL fragment (for this page only), localStorage (what the settings panel and
// window.change_pref write), the default. Storage is injected; nothing here touches the DOM.

export type PrefType = "string" | "boolean" | "number";
export interface PrefDef {
  type: PrefType;
  /** undefined: no default, the browser decides. */
  default?: string | boolean | number;
  /** Only a server redirect sets it; not shown in the settings panel. */
  internal?: boolean;
}

export const PREFS = {
  username: { type: "string", default: "guest" },
  warn_redirect: { type: "boolean", default: false, internal: true },
  image_view_popup: { type: "boolean", default: true },
  webrtc_debug: { type: "boolean", default: false },
  microphone_enabled: { type: "boolean", default: false },
  screencast_enabled: { type: "boolean", default: false },
  camera_enabled: { type: "boolean", default: false },
  rnnoise: { type: "boolean", default: true },
  native_noise_suppression: { type: "boolean", default: false },
  microphone_gain: { type: "number", default: 1 },
  video_fps: { type: "number" },
  video_resolution: { type: "number" },
  camera_facing_mode: { type: "string" },
  auto_gain_control: { type: "boolean" },
  echo_cancellation: { type: "boolean" },
  audio_activity_threshold: { type: "number", default: 0.003 },
  optional_audio_default_enable: { type: "boolean", default: true },
  optional_video_default_enable: { type: "boolean", default: false },
  notify_chat: { type: "boolean", default: true },
  notify_join: { type: "boolean", default: true },
  notify_leave: { type: "boolean", default: true },
  enable_onbeforeunload: { type: "boolean", default: true },
  room_watches: { type: "string", default: "public" },
  language: { type: "string" },
} satisfies Record<string, PrefDef>;

export type PrefKey = keyof typeof PREFS;
export type PrefValue = string | number | boolean | undefined;

export interface StorageLike {
  getItem(k: string): string | null;
  setItem(k: string, v: string): void;
  removeItem(k: string): void;
}

const STORAGE_PREFIX = "keksbox.pref.";

export const isPrefKey = (k: string): k is PrefKey => Object.prototype.hasOwnProperty.call(PREFS, k);

/** Parses a textual value for `key`; undefined if it does not parse (or is empty). */
export function parsePrefValue(key: PrefKey, raw: string): PrefValue {
  const def: PrefDef = PREFS[key];
  switch (def.type) {
    case "boolean": {
      const v = raw.trim().toLowerCase();
      if (["1", "true", "yes", "on"].includes(v)) return true;
      if (["0", "false", "no", "off"].includes(v)) return false;
      return undefined;
    }
    case "number": {
      if (raw.trim() === "") return undefined;
      const n = Number(raw);
      return Number.isFinite(n) ? n : undefined;
    }
    case "string":
      return raw;
  }
}

export class Prefs {
  private fragment = new Map<PrefKey, PrefValue>();
  private listeners: ((k: PrefKey, v: PrefValue) => void)[] = [];

  constructor(private readonly storage: StorageLike | null) {}

  /** Replaces the fragment overrides (called on every fragment change). */
  setFragment(params: [string, string][]): void {
    const before = new Map(this.fragment);
    this.fragment.clear();
    for (const [k, raw] of params) {
      if (!isPrefKey(k)) {
        console.warn(`keksbox: unknown preference "${k}" in the URL`);
        continue;
      }
      const v = parsePrefValue(k, raw);
      if (v === undefined) console.warn(`keksbox: cannot parse preference ${k}=${raw}`);
      else this.fragment.set(k, v);
    }
    for (const k of new Set([...before.keys(), ...this.fragment.keys()])) {
      if (before.get(k) !== this.fragment.get(k)) this.emit(k);
    }
  }

  get<K extends PrefKey>(key: K): PrefValue {
    if (this.fragment.has(key)) return this.fragment.get(key);
    const stored = this.storage?.getItem(STORAGE_PREFIX + key);
    if (stored !== null && stored !== undefined) {
      const v = parsePrefValue(key, stored);
      if (v !== undefined) return v;
    }
    return (PREFS[key] as PrefDef).default;
  }

  bool(key: PrefKey): boolean {
    return this.get(key) === true;
  }
  num(key: PrefKey): number | undefined {
    const v = this.get(key);
    return typeof v === "number" ? v : undefined;
  }
  str(key: PrefKey): string | undefined {
    const v = this.get(key);
    return typeof v === "string" ? v : undefined;
  }

  /** Whether the value comes from the URL (the settings panel then says so). */
  fromFragment(key: PrefKey): boolean {
    return this.fragment.has(key);
  }

  /** Persists a value (undefined resets to the default) and overrides the fragment's. */
  set(key: string, value: unknown): boolean {
    if (!isPrefKey(key)) {
      console.warn(`keksbox: unknown preference "${key}"`);
      return false;
    }
    let v: PrefValue;
    if (value === undefined || value === null) v = undefined;
    else if (typeof value === "string") v = parsePrefValue(key, value);
    else v = parsePrefValue(key, String(value));
    if (value !== undefined && value !== null && v === undefined) {
      console.warn(`keksbox: cannot set preference ${key} to ${String(value)}`);
      return false;
    }
    this.fragment.delete(key);
    if (v === undefined) this.storage?.removeItem(STORAGE_PREFIX + key);
    else this.storage?.setItem(STORAGE_PREFIX + key, String(v));
    this.emit(key);
    return true;
  }

  onChange(f: (k: PrefKey, v: PrefValue) => void): void {
    this.listeners.push(f);
  }

  private emit(k: PrefKey): void {
    const v = this.get(k);
    for (const f of this.listeners) f(k, v);
  }
}
