// `npm test`: typecheck, unit tests, then the browser end-to-end tests inside a fresh network
// namespace (unshare -n, loopback only). Prints "N passed, M failed" last; non-zero on failure.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { readdirSync } from "node:fs";
const ls = (dir, ext) => readdirSync(dir).filter((f) => f.endsWith(ext)).map((f) => join(dir, f));

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(web, "node_modules", ".keksbox-test");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
let passed = 0;
let failed = 0;
const only = process.argv[2]; // "unit" or "e2e" to run one half

/** Runs a command, echoing its output, and counts the node test runner's summary lines. */
function runCounted(cmd, args, opts) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    p.stdout.on("data", (d) => {
      out += d;
      process.stdout.write(d);
    });
    p.on("error", (e) => console.error(`cannot run ${cmd}: ${e.message}`));
    p.on("close", (code) => {
      const num = (k) => Number((out.match(new RegExp(`^ℹ ${k} (\\d+)`, "m")) ?? [0, 0])[1]);
      const pass = num("pass");
      let fail = num("fail") + num("cancelled");
      // A runner that died without a summary, or exited non-zero with nothing failed, is a failure.
      if (code !== 0 && fail === 0) fail = 1;
      resolve([pass, fail]);
    });
  });
}

const t0 = Date.now();
if (only !== "e2e") {
  const tscBin = join(web, "node_modules", "typescript", "bin", "tsc");
  let tsc = spawnSync(process.execPath, [tscBin, "--noEmit", "-p", web], { stdio: "inherit" });
  if (tsc.status === 0) tsc = spawnSync(process.execPath, [tscBin, "--noEmit", "-p", join(web, "tsconfig.sw.json")], { stdio: "inherit" });
  if (tsc.status === 0) passed++;
  else failed++;
  console.log(`typecheck: ${tsc.status === 0 ? "ok" : "FAILED"} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

  const entries = ls(join(web, "test", "unit"), ".test.ts");
  await build({ entryPoints: entries, outdir: join(out, "unit"), bundle: true, platform: "node", format: "esm", outExtension: { ".js": ".mjs" }, logLevel: "warning", packages: "external" });
  const files = ls(join(out, "unit"), ".mjs");
  const [p, f] = await runCounted(process.execPath, ["--test", "--test-reporter=spec", ...files], { cwd: web });
  passed += p;
  failed += f;
  console.log(`unit: ${p} passed, ${f} failed (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

if (only !== "unit") {
  const t1 = Date.now();
  if (!existsSync(join(web, "dist", "room.html"))) spawnSync(process.execPath, [join(web, "build.mjs")], { stdio: "inherit", cwd: web });
  const cmd = `ip link set lo up && exec "${process.execPath}" --test --test-concurrency=1 --test-reporter=spec test/e2e/e2e.test.mjs${process.env.RIFT_BIN ? " test/e2e/rift.test.mjs" : ""}${process.env.PEER_BIN ? " test/e2e/peer.test.mjs" : ""}`;
  const [p, f] = await runCounted("unshare", ["-n", "sh", "-c", cmd], { cwd: web, env: process.env });
  passed += p;
  failed += f;
  console.log(`e2e: ${p} passed, ${f} failed (${((Date.now() - t1) / 1000).toFixed(1)} s)`);
  // TURN through client isolation (issue 9) makes its own namespaces (ip netns), so it runs
  // outside the loopback-only one above; it needs root and KEKSBOX_BIN.
  const t2 = Date.now();
  const [tp, tf] = await runCounted(process.execPath, ["--test", "--test-concurrency=1", "--test-reporter=spec", "test/e2e/turn.test.mjs"], { cwd: web, env: process.env });
  passed += tp;
  failed += tf;
  console.log(`e2e turn: ${tp} passed, ${tf} failed (${((Date.now() - t2) / 1000).toFixed(1)} s)`);
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
