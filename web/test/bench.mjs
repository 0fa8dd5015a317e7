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
const roomFiles = ["room.html", "assets/early.js", "assets/room.js", "assets/style.css"];
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
  // The page's first script (early.js) starts both PBKDF2 derivations while room.js loads;
  // blocking it makes the page start them itself once room.js runs, as before. Alternate the
  // two so a busy machine slows both alike.
  const RUNS = 7;
  const modes = { early: "derivations started by early.js (now)", late: "started by room.js, as before (early.js blocked)" };
  const joined = { early: [], late: [] };
  const started = { early: [], late: [] };
  for (let i = 0; i < 2 * RUNS; i++) {
    const mode = i % 2 ? "late" : "early";
    const ctx = await browser.newContext();
    if (mode === "late") await ctx.route("**/assets/early.js", (r) => r.abort());
    const page = await ctx.newPage();
    await page.goto(`http://127.0.0.1:${port}/room#bench-room-${i}-with-a-long-enough-secret`);
    await page.waitForSelector("body[data-state=joined]", { timeout: 20_000 });
    const [j, s] = await page.evaluate(() => ["keksbox-joined", "keksbox-derive-start"].map((n) => performance.getEntriesByName(n)[0].startTime));
    joined[mode].push(j);
    started[mode].push(s);
    await ctx.close();
  }
  await browser.close();
  const median = (l) => [...l].sort((a, b) => a - b)[l.length >> 1].toFixed(0);
  const range = (l) => `${Math.min(...l).toFixed(0)}-${Math.max(...l).toFixed(0)}`;
  console.log(`navigation to joined (headless Chromium, ${RUNS} runs each, alternating; two PBKDF2 derivations of 250000 rounds):`);
  for (const m of ["early", "late"]) console.log(`  ${modes[m].padEnd(48)} median ${median(joined[m])} ms (${range(joined[m])}), derivations from ${median(started[m])} ms`);
} finally {
  relay.kill();
}
