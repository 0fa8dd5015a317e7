// `npm run bench`: gzipped size of what a browser downloads (without the RNNoise worklet and
// wasm, which load only with a microphone) and the time from navigation to "joined" in
// headless Chromium against a real keksbox (KEKSBOX_BIN) on 127.0.0.1.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(web, "dist");
if (!existsSync(join(dist, "room.html"))) spawnSync(process.execPath, [join(web, "build.mjs")], { stdio: "inherit" });

const gz = (f) => gzipSync(readFileSync(join(dist, f)), { level: 9 }).length;
const roomFiles = ["room.html", "assets/room.js", "assets/style.css", "assets/pbkdf2-worker.js"];
const startFiles = ["index.html", "assets/start.js", "assets/style.css"];
const sum = (l) => l.reduce((a, f) => a + gz(f), 0);
console.log(`bundle (gzip -9, without RNNoise): room page ${sum(roomFiles)} B, start page ${sum(startFiles)} B, sw.js ${gz("sw.js")} B`);
console.log(`RNNoise (loaded with a microphone only): worklet ${gz("assets/rnnoise/workletProcessor.js")} B, wasm ${gz("assets/rnnoise/rnnoise.wasm")} B gzip`);

const bin = process.env.KEKSBOX_BIN;
if (!bin) {
  console.log("join time: skipped (set KEKSBOX_BIN to a keksbox binary)");
  process.exit(0);
}
const port = 19000 + Math.floor(Math.random() * 1000);
const relay = spawn(bin, ["--no-tls", "--bind", `127.0.0.1:${port}`, "--web-dir", dist], { stdio: "ignore" });
try {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/version`)).ok) break;
    } catch {
      if (i > 200) throw new Error("relay did not start");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
  // The room key and hash run in two workers; blocking the worker script makes the page derive
  // both itself, as it did before (WebCrypto then runs them one after the other). Alternate the
  // two so a busy machine slows both alike.
  const RUNS = 7;
  const times = { workers: [], page: [] };
  const derive = { workers: [], page: [] };
  for (let i = 0; i < 2 * RUNS; i++) {
    const mode = i % 2 ? "page" : "workers";
    const ctx = await browser.newContext();
    if (mode === "page") await ctx.route("**/assets/pbkdf2-worker.js", (r) => r.abort());
    const page = await ctx.newPage();
    await page.goto(`http://127.0.0.1:${port}/room#bench-room-${i}-with-a-long-enough-secret`);
    await page.waitForSelector("body[data-state=joined]", { timeout: 20_000 });
    const [joined, derived] = await page.evaluate(() => {
      const at = (n) => performance.getEntriesByName(n)[0].startTime;
      return [at("keksbox-joined"), at("keksbox-derived") - at("keksbox-derive-start")];
    });
    times[mode].push(joined);
    derive[mode].push(derived);
    await ctx.close();
  }
  await browser.close();
  const stats = (l) => {
    l.sort((a, b) => a - b);
    return `median ${l[l.length >> 1].toFixed(0)} ms, min ${l[0].toFixed(0)} ms, max ${l[l.length - 1].toFixed(0)} ms`;
  };
  console.log(`navigation to joined (headless Chromium, ${RUNS} runs each; two PBKDF2 derivations of 250000 rounds):`);
  console.log(`  key and hash in two workers (now):            ${stats(times.workers)}; the derivations ${stats(derive.workers)}`);
  console.log(`  both on the page, as before (worker blocked): ${stats(times.page)}; the derivations ${stats(derive.page)}`);
} finally {
  relay.kill();
}
