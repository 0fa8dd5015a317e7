// `make bench`: rift to headless Chromium and back, MB/s for one file through a real keksbox
// (KEKSBOX_BIN, RIFT_BIN) on 127.0.0.1. Run inside a network namespace with only loopback
// (the Makefile does). The time runs from the click (or from starting `rift receive`) to the
// file complete on the other side, so it includes connecting.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const WEB = join(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = process.env.KEKSBOX_BIN;
const RIFT = process.env.RIFT_BIN;
const MB = Number(process.env.RIFT_BENCH_BROWSER_MB ?? 100);
if (!BIN || !RIFT) {
  console.log("rift and Chromium: skipped (set KEKSBOX_BIN and RIFT_BIN)");
  process.exit(0);
}
const PORT = 19000 + Math.floor(Math.random() * 1000);
const BASE = `http://127.0.0.1:${PORT}`;
const sha = (b) => createHash("sha256").update(b).digest("hex");
const dir = await mkdtemp(join(tmpdir(), "rift-bench-"));
const relay = spawn(BIN, ["--no-tls", "--bind", `127.0.0.1:${PORT}`, "--web-dir", join(WEB, "dist")], { stdio: "ignore" });
const rift = (args, secret) => {
  const p = spawn(RIFT, args, {
    cwd: dir,
    env: { ...process.env, KEKSBOX_SERVER: BASE, RIFT_SECRET: secret, RIFT_ICE_BIND: "127.0.0.1", RUST_LOG: "error", KEKSBOX_KNOWN_SERVERS: join(dir, "known") },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  p.stderr.on("data", (d) => (err += d));
  return { p, done: new Promise((r) => p.on("close", (code) => r({ code, err }))) };
};
let browser;
try {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${BASE}/version`)).ok) break;
    } catch {
      if (i > 200) throw new Error("relay did not start");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"],
  });
  const join_ = async (secret) => {
    const ctx = await browser.newContext({ acceptDownloads: true });
    await ctx.addInitScript(() => delete window.showSaveFilePicker);
    const page = await ctx.newPage();
    await page.goto(`${BASE}/room#${secret}?username=browser`);
    await page.waitForSelector("body[data-state=joined]", { timeout: 30_000 });
    return { ctx, page };
  };

  // rift to Chromium.
  const data = randomBytes(MB * 1000 * 1000);
  await writeFile(join(dir, "bench.bin"), data);
  let secret = "bench-to-browser-" + randomBytes(6).toString("hex");
  const sender = rift(["send", "bench.bin"], secret);
  let { ctx, page } = await join_(secret);
  const riftId = await (async () => {
    for (let i = 0; i < 300; i++) {
      const id = await page.evaluate(() => [...window.keksbox.room.members.values()].find((m) => m.username === "rift")?.id);
      if (id) return id;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("rift did not join");
  })();
  for (let i = 0; i < 100 && !(await page.evaluate(() => !!navigator.serviceWorker.controller)); i++) await new Promise((r) => setTimeout(r, 100));
  const sel = `#members .member[data-id="${riftId}"] .resource.file:has-text("bench.bin")`;
  await page.waitForSelector(`${sel}[data-state=available]`, { timeout: 30_000 });
  let start = performance.now();
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 120_000 }), page.click(`${sel} button`)]);
  const got = await readFile(await download.path());
  let secs = (performance.now() - start) / 1000;
  if (sha(got) !== sha(data)) throw new Error(`the browser got ${got.length} bytes that differ`);
  console.log(`rift to Chromium, ${MB} MB over loopback (click to file complete): ${(MB / secs).toFixed(1)} MB/s`);
  await ctx.close();
  sender.p.kill("SIGINT");
  await sender.done;

  // Chromium to rift.
  secret = "bench-from-browser-" + randomBytes(6).toString("hex");
  ({ ctx, page } = await join_(secret));
  const digest = await page.evaluate(async (size) => {
    const chunk = crypto.getRandomValues(new Uint8Array(65536));
    const buf = new Uint8Array(size);
    for (let i = 0; i < size; i += chunk.length) buf.set(chunk.subarray(0, Math.min(chunk.length, size - i)), i);
    window.keksbox.addFiles([new File([buf], "from-browser.bin")]);
    const d = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
    return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
  }, MB * 1000 * 1000);
  start = performance.now();
  const { code, err } = await rift(["receive", join(dir, "in")], secret).done;
  secs = (performance.now() - start) / 1000;
  if (code !== 0) throw new Error(`rift receive failed: ${err}`);
  if (sha(await readFile(join(dir, "in", "from-browser.bin"))) !== digest) throw new Error("rift received different bytes");
  console.log(`Chromium to rift, ${MB} MB over loopback (rift start to file complete, with joining): ${(MB / secs).toFixed(1)} MB/s`);
  await ctx.close();
} finally {
  await browser?.close();
  relay.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
}
