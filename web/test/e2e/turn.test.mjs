// The box carries the call (issue 9), for real: three network namespaces, A and B each joined
// by a veth pair to "box" only, and no forwarding in box. keksbox runs in box; a headless
// Chromium runs inside A and one inside B (each launched in its namespace through
// `ip netns exec`). Each decodes the other's camera, and the selected candidate pair has a
// relay candidate. With TURN off the same call fails; with forwarding on the pair is direct.
// rift in A sends a file to rift in B through the box, byte for byte.
//
// Needs root (ip netns), KEKSBOX_BIN, and RIFT_BIN for the rift test. The namespaces carry
// this process's id in their names and are deleted afterwards; nothing leaves them.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join as pjoin } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const WEB = pjoin(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = process.env.KEKSBOX_BIN;
const RIFT = process.env.RIFT_BIN;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ID = process.pid % 100000;
const NS = { a: `kbt-a-${ID}`, box: `kbt-box-${ID}`, b: `kbt-b-${ID}` };
const BOX_A = "10.91.1.1";
const BOX_B = "10.91.2.1";
const PORT = 8080;
const T = { timeout: 150_000 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Resolves with `value` after `ms` without keeping the process alive: for races. */
const timeout = (ms, value) => new Promise((r) => setTimeout(() => r(value), ms).unref());
const sha = (b) => createHash("sha256").update(b).digest("hex");
const dir = mkdtempSync(pjoin(tmpdir(), "keksbox-turn-"));
const logs = [];

const ip = (...args) => execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] }).toString();

/** A, box and B; veth A<->box and B<->box; forwarding in box only when asked. A and B route
 *  everything to the box (a LAN's gateway), so only forwarding decides whether A reaches B. */
function topology(forwarding) {
  teardown();
  for (const ns of Object.values(NS)) {
    ip("netns", "add", ns);
    ip("-n", ns, "link", "set", "lo", "up");
  }
  for (const [side, ns, box, peer] of [["a", NS.a, BOX_A, "10.91.1.2"], ["b", NS.b, BOX_B, "10.91.2.2"]]) {
    ip("-n", ns, "link", "add", `${side}0`, "type", "veth", "peer", "name", `${side}1`, "netns", NS.box);
    ip("-n", ns, "addr", "add", `${peer}/24`, "dev", `${side}0`);
    ip("-n", ns, "link", "set", `${side}0`, "up");
    ip("-n", NS.box, "addr", "add", `${box}/24`, "dev", `${side}1`);
    ip("-n", NS.box, "link", "set", `${side}1`, "up");
    ip("-n", ns, "route", "add", "default", "via", box);
  }
  // /proc/sys/net is the namespace's own (no procps needed on a fresh machine).
  execFileSync("ip", ["netns", "exec", NS.box, "sh", "-c", `echo ${forwarding ? 1 : 0} > /proc/sys/net/ipv4/ip_forward`]);
}

function teardown() {
  for (const ns of Object.values(NS)) {
    try {
      ip("netns", "del", ns);
    } catch {}
  }
}

/** keksbox in the box namespace, plain HTTP on every address, TURN on or off. */
async function startBox(turn) {
  const state = mkdtempSync(pjoin(dir, "state-"));
  const config = pjoin(state, "keksbox.toml");
  writeFileSync(config, `[mdns]\nenabled = false\n[turn]\nenabled = ${turn}\n`);
  const p = spawn("ip", ["netns", "exec", NS.box, BIN, "--no-tls", "--bind", `0.0.0.0:${PORT}`, "--web-dir", pjoin(WEB, "dist"), "--config", config, "--state-dir", state], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: "info" },
  });
  p.stderr.on("data", (d) => logs.push("box: " + d));
  for (let i = 0; i < 200; i++) {
    try {
      execFileSync("ip", ["netns", "exec", NS.a, "curl", "-sf", "-o", "/dev/null", `http://${BOX_A}:${PORT}/version`]);
      return p;
    } catch {
      await sleep(50);
    }
  }
  throw new Error("keksbox did not come up in the box namespace:\n" + logs.join(""));
}

/** Chromium inside `ns`: a wrapper that enters the namespace, then execs Chromium with the
 *  arguments (and the pipe descriptors) Playwright gave it. */
async function browserIn(ns, origin) {
  const wrapper = pjoin(dir, `chromium-${ns}`);
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return chromium.launch({
    executablePath: wrapper,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--disable-features=WebRtcHideLocalIpsWithMdns",
      // Plain HTTP on a LAN address is not a secure context: no camera without this.
      `--unsafely-treat-insecure-origin-as-secure=${origin}`,
    ],
  });
}

async function until(what, f, ms = 40_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await f().catch(() => null);
    if (v) return v;
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function join(browser, origin, secret, name) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on("console", (m) => logs.push(`${name} ${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`${name} PAGEERROR: ${e}`));
  await page.goto(`${origin}/room#${secret}?username=${name}`);
  await page.waitForSelector("body[data-state=joined]", { timeout: 20_000 });
  await page.evaluate(() => window.change_pref("optional_video_default_enable", true));
  return { page, name, id: await page.evaluate(() => window.keksbox.sig.id) };
}

/** Video frames this page decoded from `otherId`, and the selected pair's candidate types. */
const peerView = (u, otherId) =>
  u.page.evaluate(async (id) => {
    const m = window.keksbox.room.members.get(id);
    if (!m) return null;
    const s = await m.peer.pc.getStats();
    const byId = new Map();
    s.forEach((r) => byId.set(r.id, r));
    let frames = 0;
    let pair = null;
    s.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded ?? 0;
      if (r.type === "transport" && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId);
    });
    const local = pair && byId.get(pair.localCandidateId);
    const remote = pair && byId.get(pair.remoteCandidateId);
    return { frames, state: m.peer.pc.connectionState, local: local?.candidateType ?? null, remote: remote?.candidateType ?? null, localAddress: local?.address, remoteAddress: remote?.address };
  }, otherId);

/** Both join, both share a camera; resolves with what each sees of the other. */
async function call({ turn, forwarding, expectMedia }) {
  topology(forwarding);
  const box = await startBox(turn);
  const originA = `http://${BOX_A}:${PORT}`;
  const originB = `http://${BOX_B}:${PORT}`;
  const [ba, bb] = await Promise.all([browserIn(NS.a, originA), browserIn(NS.b, originB)]);
  try {
    const secret = "turn-e2e-" + randomBytes(8).toString("hex");
    const a = await join(ba, originA, secret, "alice");
    const b = await join(bb, originB, secret, "bob");
    await until("each sees the other", async () => (await a.page.evaluate(() => window.keksbox.room.members.size)) === 1 && (await b.page.evaluate(() => window.keksbox.room.members.size)) === 1);
    const config = await a.page.evaluate(() => fetch("/config.json").then((r) => r.json()));
    await Promise.all([a.page.click("#add-camera"), b.page.click("#add-camera")]);
    if (!expectMedia) {
      // Give ICE the time a working relay needed (a few seconds) several times over.
      await sleep(20_000);
      return { a: await peerView(a, b.id), b: await peerView(b, a.id), config };
    }
    const va = await until("alice decodes bob's camera", async () => {
      const v = await peerView(a, b.id);
      return v && v.frames > 0 && v.local && v;
    });
    const vb = await until("bob decodes alice's camera", async () => {
      const v = await peerView(b, a.id);
      return v && v.frames > 0 && v.local && v;
    });
    // The member list says how alice reaches bob.
    const path = await until("the path in the member list", () => a.page.$eval(`#members .member[data-id="${b.id}"] .path`, (e) => !e.hidden && e.dataset.path && { path: e.dataset.path, text: e.textContent }));
    return { a: va, b: vb, config, path };
  } finally {
    await Promise.all([ba.close(), bb.close()]);
    box.kill("SIGTERM");
    await new Promise((r) => box.on("close", r));
  }
}

/** rift processes still running, killed at the end whatever happened. */
const running = new Set();

after(() => {
  for (const p of running) p.kill("SIGKILL");
  teardown();
  rmSync(dir, { recursive: true, force: true });
  if (process.exitCode) console.log(logs.join("\n"));
});

const relayed = (v) => v.local === "relay" || v.remote === "relay";

test("client isolation: the box relays the call, each decodes the other's camera", T, async () => {
  assert.ok(BIN, "set KEKSBOX_BIN");
  const r = await call({ turn: true, forwarding: false, expectMedia: true });
  const w = r.config.webrtc;
  assert.equal(w.turn, `turn:${BOX_A}:3478`, "the address alice reached, not a .local name");
  assert.match(w.turn_user, /^\d+:[0-9a-f]+$/);
  console.log(`# isolated: alice ${r.a.local}->${r.a.remote} (${r.a.frames} frames), bob ${r.b.local}->${r.b.remote} (${r.b.frames} frames)`);
  assert.ok(relayed(r.a), `alice's pair has a relay candidate: ${JSON.stringify(r.a)}`);
  assert.ok(relayed(r.b), `bob's pair has a relay candidate: ${JSON.stringify(r.b)}`);
  assert.equal(r.path.path, "relay");
  assert.equal(r.path.text, "through the box");
});

test("client isolation with TURN off: the call fails", T, async () => {
  const r = await call({ turn: false, forwarding: false, expectMedia: false });
  assert.equal(r.config.webrtc.turn, undefined, "no TURN offered");
  console.log(`# isolated, TURN off: alice ${JSON.stringify(r.a)}, bob ${JSON.stringify(r.b)}`);
  assert.equal(r.a?.frames ?? 0, 0, "alice decoded nothing");
  assert.equal(r.b?.frames ?? 0, 0, "bob decoded nothing");
  assert.notEqual(r.a?.state, "connected");
});

test("forwarding on: the pair is direct and TURN unused", T, async () => {
  const r = await call({ turn: true, forwarding: true, expectMedia: true });
  console.log(`# forwarding: alice ${r.a.local}->${r.a.remote}, bob ${r.b.local}->${r.b.remote}`);
  assert.deepEqual([r.a.local, r.a.remote], ["host", "host"]);
  assert.deepEqual([r.b.local, r.b.remote], ["host", "host"]);
  assert.equal(r.path.path, "direct");
});

/** UDP datagrams the kernel of namespace `ns` dropped because a socket's receive buffer was
 *  full (RcvbufErrors in /proc/net/snmp, which is the namespace's own). */
function rcvbufErrors(ns) {
  const udp = execFileSync("ip", ["netns", "exec", ns, "cat", "/proc/net/snmp"]).toString().split("\n").filter((l) => l.startsWith("Udp:"));
  const [names, values] = udp.map((l) => l.trim().split(/\s+/));
  return Number(values[names.indexOf("RcvbufErrors")]);
}

/** One rift transfer A to B through the box; resolves with what went wrong (or null) and the
 *  datagrams each namespace dropped at full receive buffers meanwhile. */
async function riftAcross(data) {
  const trouble = await riftTransfer(data);
  return { trouble, drops: { a: rcvbufErrors(NS.a), box: rcvbufErrors(NS.box), b: rcvbufErrors(NS.b) } };
}

async function riftTransfer(data) {
  topology(false);
  const box = await startBox(true);
  const children = [];
  const secret = "turn-rift-" + randomBytes(8).toString("hex");
  const sendDir = mkdtempSync(pjoin(dir, "send-"));
  const recvDir = mkdtempSync(pjoin(dir, "recv-"));
  writeFileSync(pjoin(sendDir, "across.bin"), data);
  const rift = (ns, server, args, cwd) => {
    const p = spawn("ip", ["netns", "exec", ns, RIFT, ...args], {
      cwd,
      env: { ...process.env, KEKSBOX_SERVER: server, RIFT_SECRET: secret, KEKSBOX_KNOWN_SERVERS: pjoin(dir, `known-${ns}`), RUST_LOG: process.env.RIFT_LOG ?? "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(p);
    running.add(p);
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    return new Promise((resolve) => p.on("close", (code) => (running.delete(p), resolve({ code, out }))));
  };
  const logStart = logs.length;
  try {
    const sender = rift(NS.a, `http://${BOX_A}:${PORT}`, ["send", "across.bin"], sendDir);
    const receiver = await Promise.race([rift(NS.b, `http://${BOX_B}:${PORT}`, ["receive"], recvDir), timeout(60_000, null)]);
    if (!receiver) return "no file within 60 s";
    if (receiver.code !== 0) return `rift receive exited ${receiver.code}: ${receiver.out}`;
    const got = readFileSync(pjoin(recvDir, "across.bin"));
    assert.equal(got.length, data.length);
    assert.equal(sha(got), sha(data), "byte for byte");
    const s = await Promise.race([sender, timeout(20_000, { code: "still running 20 s after the receiver finished", out: "" })]);
    assert.equal(s.code, 0, s.out);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    box.kill("SIGTERM");
    await new Promise((r) => box.on("close", r));
  }
  // The box says at shutdown what TURN relayed: the whole file went through it.
  const line = logs.slice(logStart).join("").match(/TURN: (\d+) allocations, (\d+) bytes relayed/g)?.pop() ?? "";
  const bytes = Number(line.match(/(\d+) bytes relayed/)?.[1] ?? 0);
  console.log(`# rift through the box: ${line}`);
  assert.ok(bytes >= data.length, `TURN relayed the file: ${line}`);
  return null;
}

// rift through the relay used to fail about one run in four (issue 9). The cause was lost
// datagrams: a WebRTC sender puts its whole SCTP window (rift: 1 MiB) on the wire at once, the
// default 208 KiB receive buffers dropped part of it (at the box's TURN sockets, then at
// rift's own), the crate's SCTP recovered in retransmission timeouts, and the sender's linger
// ended before the tail arrived. The box's TURN sockets and rift's now ask for bigger buffers;
// the test takes no retry, and what each namespace dropped is in its message.
test("rift in A sends a file to rift in B through the box, byte for byte", { ...T, skip: RIFT ? false : "set RIFT_BIN" }, async () => {
  const { trouble, drops } = await riftAcross(randomBytes(2 * 1024 * 1024));
  console.log(`# datagrams dropped at full receive buffers: A ${drops.a}, box ${drops.box}, B ${drops.b}`);
  assert.equal(trouble, null, `dropped at full receive buffers: A ${drops.a}, box ${drops.box}, B ${drops.b}`);
  assert.equal(drops.box, 0, "the box's TURN sockets dropped datagrams");
});
