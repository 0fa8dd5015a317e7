// rift and the web client in one room: a file sent by rift is downloaded in headless Chromium
// byte for byte, and a file offered in the browser is received by `rift receive`. Runs inside
// the network namespace `npm test` creates, against a real keksbox (KEKSBOX_BIN) and the rift
// binary (RIFT_BIN).

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join as pjoin } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const WEB = pjoin(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = process.env.KEKSBOX_BIN;
const RIFT = process.env.RIFT_BIN;
const PORT = 19080 + Math.floor(Math.random() * 1000);
const BASE = `http://127.0.0.1:${PORT}`;
const T = { timeout: 120_000 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha = (b) => createHash("sha256").update(b).digest("hex");

let relay = null;
let browser = null;
let dir = null;
const logs = [];

before(async () => {
  assert.ok(BIN && RIFT, "set KEKSBOX_BIN and RIFT_BIN");
  dir = await mkdtemp(pjoin(tmpdir(), "rift-e2e-"));
  relay = spawn(BIN, ["--no-tls", "--bind", `127.0.0.1:${PORT}`, "--web-dir", pjoin(WEB, "dist")], { stdio: ["ignore", "pipe", "pipe"] });
  relay.stderr.on("data", (d) => logs.push("relay: " + d));
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${BASE}/version`)).ok) break;
    } catch {
      await sleep(50);
    }
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    ],
  });
});

after(async () => {
  await browser?.close();
  relay?.kill("SIGKILL");
  if (dir) await rm(dir, { recursive: true, force: true });
  if (process.exitCode) console.log(logs.join("\n"));
});

/** Runs rift; resolves with its exit code and output. */
function rift(args, secret, cwd = dir, bind = "127.0.0.1") {
  const p = spawn(RIFT, args, {
    cwd,
    env: { ...process.env, KEKSBOX_SERVER: BASE, RIFT_SECRET: secret, RIFT_ICE_BIND: bind, RUST_LOG: "warn", KEKSBOX_KNOWN_SERVERS: pjoin(dir, "known") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  p.stdout.on("data", (d) => (out += d));
  p.stderr.on("data", (d) => (out += d));
  const done = new Promise((resolve) => p.on("close", (code) => resolve({ code, out })));
  return { p, done, output: () => out };
}

async function joinBrowser(secret, name, via = browser) {
  const ctx = await via.newContext({ acceptDownloads: true });
  // Downloads take the service-worker path (the File System Access picker cannot be driven headless).
  await ctx.addInitScript(() => delete window.showSaveFilePicker);
  const page = await ctx.newPage();
  page.on("console", (m) => logs.push(`${name} ${m.type()}: ${m.text()}`));
  await page.goto(`${BASE}/room#${secret}?username=${name}`);
  await page.waitForSelector("body[data-state=joined]", { timeout: 20_000 });
  return { ctx, page };
}

async function until(what, f, ms = 30_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await f().catch(() => null);
    if (v) return v;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

test("a file sent by rift is downloaded by the browser byte for byte", T, async () => {
  const secret = "rift-to-browser-" + randomBytes(8).toString("hex");
  const data = randomBytes(20 * 1024 * 1024);
  await writeFile(pjoin(dir, "from-rift.bin"), data);
  const sender = rift(["send", "from-rift.bin"], secret);
  const { ctx, page } = await joinBrowser(secret, "browser");
  const riftId = await until("rift in the member list", () =>
    page.evaluate(() => [...window.keksbox.room.members.values()].find((m) => m.username === "rift")?.id),
  );
  await until("the service worker controls the page", () => page.evaluate(() => !!navigator.serviceWorker.controller));
  const sel = `#members .member[data-id="${riftId}"] .resource.file:has-text("from-rift.bin")`;
  await page.waitForSelector(`${sel}[data-state=available]`, { timeout: 20_000 });
  // rift withdraws the file once it is sent, which can remove the entry before a poll sees
  // it done: record the states the entry goes through instead.
  await page.evaluate((id) => {
    window.__riftStates = [];
    const note = () => {
      for (const el of document.querySelectorAll(`#members .member[data-id="${id}"] .resource.file`)) {
        if (el.textContent.includes("from-rift.bin")) window.__riftStates.push(el.dataset.state);
      }
    };
    new MutationObserver(note).observe(document.querySelector("#members"), { subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"] });
  }, riftId);
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 60_000 }), page.click(`${sel} button`)]);
  const got = await readFile(await download.path().catch((e) => {
    throw new Error(`${e.message}; rift said:\n${sender.output()}`);
  }));
  assert.equal(got.length, data.length);
  assert.equal(sha(got), sha(data));
  await until("the browser shows done", () => page.evaluate(() => window.__riftStates.includes("done")));
  // The browser leaves; rift, whose only file was downloaded, exits 0.
  await ctx.close();
  const { code, out } = await sender.done;
  assert.equal(code, 0, out);
  assert.match(out, /sent from-rift\.bin \(21\.0 MB\) to browser/);
});

test("a file offered in the browser is received by rift receive", T, async () => {
  const secret = "browser-to-rift-" + randomBytes(8).toString("hex");
  const { ctx, page } = await joinBrowser(secret, "browser");
  const digest = await page.evaluate(async (size) => {
    const buf = new Uint8Array(size);
    crypto.getRandomValues(buf.subarray(0, 65536));
    for (let i = 65536; i < size; i++) buf[i] = buf[i % 65536] ^ (i >> 16);
    window.keksbox.addFiles([new File([buf], "from-browser.bin")]);
    const d = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
    return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
  }, 12 * 1024 * 1024);
  const receiver = rift(["receive", pjoin(dir, "in")], secret);
  const { code, out } = await receiver.done;
  assert.equal(code, 0, out);
  assert.match(out, /received from-browser\.bin/);
  assert.equal(sha(await readFile(pjoin(dir, "in", "from-browser.bin"))), digest);
  await ctx.close();
});

// This test failed about one run in seven while the web client closed a finished file
// channel as soon as its queue drained: rift saw the close before the last 32 KiB and "end".
// The sender now leaves it open for a grace (files.ts CLOSE_GRACE_MS); 20 of 20 passed after.
test("a browser that hides its addresses behind .local names reaches rift", T, hiddenBrowserToRift);

async function hiddenBrowserToRift() {
  // Chromium hides host addresses behind mDNS names unless the page may use the camera, and
  // then gathers only on the default route's interface, which must multicast: a veth pair
  // in this namespace with the default route on it (the namespace is the test's own, and
  // nothing forwards: whatever goes out of kbv0 ends at kbv1).
  execFileSync("sh", ["-c", "ip link add kbv0 type veth peer name kbv1 && ip addr add 10.77.0.1/24 dev kbv0 && ip addr add 10.77.0.2/24 dev kbv1 && ip link set kbv0 up && ip link set kbv1 up && ip route add default dev kbv0"]);
  const hiding = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const secret = "hidden-browser-" + randomBytes(8).toString("hex");
    const ctx0 = await hiding.newContext();
    // Record the candidates the page's connections gather.
    await ctx0.addInitScript(() => {
      const Real = window.RTCPeerConnection;
      window.__candidates = [];
      window.RTCPeerConnection = function (...args) {
        const pc = new Real(...args);
        pc.addEventListener("icecandidate", (e) => e.candidate?.candidate && window.__candidates.push(e.candidate.candidate));
        return pc;
      };
      window.RTCPeerConnection.prototype = Real.prototype;
    });
    const page = await ctx0.newPage();
    page.on("console", (m) => logs.push(`hiding ${m.type()}: ${m.text()}`));
    await page.goto(`${BASE}/room#${secret}?username=hiding`);
    await page.waitForSelector("body[data-state=joined]", { timeout: 20_000 });
    const digest = await page.evaluate(async () => {
      const buf = crypto.getRandomValues(new Uint8Array(65536));
      const big = new Uint8Array(3 * 1024 * 1024);
      for (let i = 0; i < big.length; i += buf.length) big.set(buf, i);
      window.keksbox.addFiles([new File([big], "hidden.bin")]);
      const d = new Uint8Array(await crypto.subtle.digest("SHA-256", big));
      return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
    });
    const receiver = rift(["receive", pjoin(dir, "hidden")], secret, dir, "10.77.0.2");
    const { code, out } = await receiver.done;
    assert.equal(code, 0, out);
    assert.equal(sha(await readFile(pjoin(dir, "hidden", "hidden.bin"))), digest);
    const candidates = await page.evaluate(() => window.__candidates);
    const host = candidates.filter((c) => / typ host/.test(c));
    assert.ok(host.length > 0, `no host candidates: ${candidates.join("\n")}`);
    assert.ok(host.every((c) => /\.local /.test(c)), `the browser showed an address: ${host.join("\n")}`);
    await ctx0.close();
  } finally {
    await hiding.close();
    execFileSync("ip", ["link", "del", "kbv0"]);
  }
}
