// Where a download goes, chosen when the user clicks (so the file picker has its user
// gesture): the File System Access API where present, else a service-worker stream into the
// browser's download manager, else (no service worker, e.g. plain http on a LAN) memory.

import { FileSink } from "../protocol/files";

interface SaveHandle {
  createWritable(): Promise<{ write(d: Uint8Array): Promise<void>; close(): Promise<void>; abort(): Promise<void> }>;
}
type SavePicker = (o: { suggestedName: string }) => Promise<SaveHandle>;

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
  return memorySink(name);
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

function memorySink(name: string): FileSink {
  const parts: BlobPart[] = [];
  return {
    write: (c) => void parts.push(c.slice()),
    close: () => {
      const url = URL.createObjectURL(new Blob(parts));
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    },
    abort: () => void (parts.length = 0),
  };
}
