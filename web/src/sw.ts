/// <reference lib="webworker" />
// Service worker: streams downloads to disk. The page hands over a MessagePort per download;
// a navigation to /__download/<id> is answered with a ReadableStream fed from that port, so
// the browser's download manager writes the file while it arrives (a 4 GB file never sits in
// memory).

const sw = self as unknown as ServiceWorkerGlobalScope;
interface Pending {
  stream: ReadableStream<Uint8Array>;
  name: string;
  size?: number;
}
const pending = new Map<string, Pending>();

sw.addEventListener("install", () => void sw.skipWaiting());
sw.addEventListener("activate", (ev) => ev.waitUntil(sw.clients.claim()));

sw.addEventListener("message", (ev) => {
  const d = ev.data as { type?: string; id?: string; name?: string; size?: number };
  const port = ev.ports[0];
  if (d?.type !== "download" || !d.id || !port) return;
  const stream = new ReadableStream<Uint8Array>({
    start(ctrl) {
      port.onmessage = (m) => {
        const x = m.data as { chunk?: ArrayBuffer; end?: boolean; abort?: string };
        if (x.chunk) ctrl.enqueue(new Uint8Array(x.chunk));
        else if (x.end) {
          ctrl.close();
          port.close();
        } else if (x.abort) {
          ctrl.error(new Error(x.abort));
          port.close();
        }
      };
    },
    cancel() {
      port.postMessage({ cancel: true });
    },
  });
  pending.set(d.id, { stream, name: d.name ?? "download", size: d.size });
  port.postMessage({ ready: true });
});

sw.addEventListener("fetch", (ev) => {
  const url = new URL(ev.request.url);
  if (url.origin !== location.origin || !url.pathname.startsWith("/__download/")) return;
  const id = url.pathname.slice("/__download/".length);
  const p = pending.get(id);
  pending.delete(id);
  if (!p) {
    ev.respondWith(new Response("no such download", { status: 404 }));
    return;
  }
  const headers: Record<string, string> = {
    "Content-Type": "application/octet-stream",
    "Content-Disposition": `attachment; filename*=UTF-8''${encodeURIComponent(p.name)}`,
    "X-Content-Type-Options": "nosniff",
  };
  if (p.size !== undefined) headers["Content-Length"] = String(p.size);
  ev.respondWith(new Response(p.stream, { headers }));
});
