// Where a download goes, chosen when the user clicks (so the file picker has its user
// gesture): the File System Access API where present, else a service-worker stream into the
// browser's download manager, else (no service worker, e.g. plain http on a LAN) memory.

import { FileSink } from "../protocol/files";
import { formatBytes } from "./el";
import { t } from "./i18n";

/**
 * The in-memory fallback holds the whole file until it is complete, so it is bounded: a larger
 * (or lying) download fails with a message instead of exhausting a phone's memory.
 */
export const MEMORY_SINK_MAX = 256 * 1024 * 1024;

interface SaveHandle {
  createWritable(): Promise<{ write(d: Uint8Array): Promise<void>; close(): Promise<void>; abort(): Promise<void> }>;
}
type SavePicker = (o: { suggestedName: string }) => Promise<SaveHandle>;

/** Where the file goes; null if the user cancelled the picker. Throws (with a message for people) if it cannot be received. */
export async function prepareSink(name: string, size: number | undefined): Promise<FileSink | null> {
  const picker = (window as unknown as { showSaveFilePicker?: SavePicker }).showSaveFilePicker;
  if (picker) {
    let handle: SaveHandle;
    try {
      handle = await picker({ suggestedName: name });
    } catch {
      return null; // cancelled by the user
    }
    const w = await handle.createWritable();
    return { write: (c) => w.write(c), close: () => w.close(), abort: () => void w.abort().catch(() => {}) };
  }
  const sw = navigator.serviceWorker?.controller;
  if (sw) return swSink(sw, name, size);
  if (size !== undefined && size > MEMORY_SINK_MAX) throw new Error(t("download_too_large", { max: formatBytes(MEMORY_SINK_MAX) }));
  return memorySink(MEMORY_SINK_MAX, (blob) => saveBlob(name, blob));
}

async function swSink(sw: ServiceWorker, name: string, size: number | undefined): Promise<FileSink> {
  const id = crypto.randomUUID();
  const ch = new MessageChannel();
  const ready = new Promise<void>((resolve) => (ch.port1.onmessage = () => resolve()));
  sw.postMessage({ type: "download", id, name, size }, [ch.port2]);
  await ready;
  let cancelled = false;
  ch.port1.onmessage = (m) => {
    if ((m.data as { cancel?: boolean }).cancel) cancelled = true;
  };
  const frame = document.createElement("iframe");
  frame.hidden = true;
  frame.title = name;
  frame.src = "/__download/" + id;
  document.body.append(frame);
  const done = () => setTimeout(() => frame.remove(), 60_000);
  return {
    write: (c) => {
      if (cancelled) throw new Error("download cancelled in the browser");
      const copy = c.slice().buffer;
      ch.port1.postMessage({ chunk: copy }, [copy]);
    },
    close: () => {
      ch.port1.postMessage({ end: true });
      done();
    },
    abort: (reason) => {
      ch.port1.postMessage({ abort: reason });
      done();
    },
  };
}

/** Collects at most `limit` bytes; past it every write throws, so the transfer fails. */
export function memorySink(limit: number, save: (b: Blob) => void): FileSink {
  let parts: Uint8Array<ArrayBuffer>[] = [];
  let total = 0;
  let refused = false;
  return {
    write: (c) => {
      if (refused || total + c.byteLength > limit) {
        refused = true;
        parts = [];
        throw new Error(`download exceeds the in-memory limit of ${formatBytes(limit)}`);
      }
      total += c.byteLength;
      parts.push(c.slice());
    },
    close: () => save(new Blob(parts)),
    abort: () => {
      parts = [];
    },
  };
}

function saveBlob(name: string, blob: Blob): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
