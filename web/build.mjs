// Bundles the client into dist/: two page scripts, the service worker, HTML, CSS and the
// RNNoise worklet with its WebAssembly (copied from the npm package, never fetched).
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "assets", "rnnoise"), { recursive: true });

const common = { bundle: true, minify: true, sourcemap: true, target: ["chrome110", "firefox115", "safari16"], logLevel: "warning" };
await build({ ...common, entryPoints: { start: "src/ui/start.ts", room: "src/ui/room.ts" }, outdir: join(dist, "assets"), format: "esm" });
await build({ ...common, entryPoints: ["src/sw.ts"], outfile: join(dist, "sw.js"), format: "iife" });
// The room page's first script: starts the PBKDF2 derivations while room.js loads (src/early.ts).
await build({ ...common, entryPoints: ["src/early.ts"], outfile: join(dist, "assets", "early.js"), format: "iife" });

for (const f of ["index.html", "room.html", "style.css", "favicon.svg"]) {
  cpSync(join(here, "static", f), join(dist, f === "style.css" ? "assets/style.css" : f));
}
const ns = join(here, "node_modules", "@sapphi-red", "web-noise-suppressor", "dist");
cpSync(join(ns, "rnnoise", "workletProcessor.js"), join(dist, "assets", "rnnoise", "workletProcessor.js"));
cpSync(join(ns, "rnnoise.wasm"), join(dist, "assets", "rnnoise", "rnnoise.wasm"));
cpSync(join(ns, "rnnoise_simd.wasm"), join(dist, "assets", "rnnoise", "rnnoise_simd.wasm"));
console.log("web: built", dist);
