// `npm test`: typecheck, unit tests, then the browser end-to-end tests inside a fresh network
// namespace (unshare -n, loopback only). Prints "N passed, M failed" last; non-zero on failure.
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, existsSync } from "node:fs";
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

function countTap(file) {
  if (!existsSync(file)) return [0, 1];
  const t = readFileSync(file, "utf8");
  const num = (k) => Number((t.match(new RegExp(`^# ${k} (\\d+)`, "m")) ?? [0, 0])[1]);
  return [num("pass"), num("fail") + num("cancelled")];
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
  const tap = join(out, "unit.tap");
  spawnSync(process.execPath, ["--test", "--test-reporter=spec", "--test-reporter-destination=stdout", "--test-reporter=tap", `--test-reporter-destination=${tap}`, ...files], { stdio: "inherit", cwd: web });
  const [p, f] = countTap(tap);
  passed += p;
  failed += f;
  console.log(`unit: ${p} passed, ${f} failed (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

if (only !== "unit") {
  const t1 = Date.now();
  if (!existsSync(join(web, "dist", "room.html"))) spawnSync(process.execPath, [join(web, "build.mjs")], { stdio: "inherit", cwd: web });
  const tap = join(out, "e2e.tap");
  const cmd = `ip link set lo up && exec "${process.execPath}" --test --test-concurrency=1 --test-reporter=spec --test-reporter-destination=stdout --test-reporter=tap --test-reporter-destination="${tap}" test/e2e/e2e.test.mjs`;
  const r = spawnSync("unshare", ["-n", "sh", "-c", cmd], { stdio: "inherit", cwd: web, env: process.env });
  if (r.error) console.error("e2e: cannot start unshare:", r.error.message);
  const [p, f] = countTap(tap);
  passed += p;
  failed += f;
  console.log(`e2e: ${p} passed, ${f} failed (${((Date.now() - t1) / 1000).toFixed(1)} s)`);
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
