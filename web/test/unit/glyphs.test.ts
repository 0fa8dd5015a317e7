// The UI uses no character the default fonts may lack (an emoji after a name showed as a box):
// Latin-1 and common punctuation only; icons are inline SVG.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

/** Beyond Latin-1, only punctuation every system font has (German quotes, dashes, ellipsis). */
const ALLOWED = new Set([..."–—‘’“”„…"]);

test("UI sources, styles and pages use only glyphs the default fonts have", () => {
  const files = [
    ...readdirSync(join("src", "ui")).map((f) => join("src", "ui", f)),
    ...readdirSync("static").filter((f) => !f.endsWith(".svg")).map((f) => join("static", f)),
  ];
  const bad: string[] = [];
  for (const f of files) {
    readFileSync(f, "utf8").split("\n").forEach((line, i) => {
      for (const ch of line) if (ch.codePointAt(0)! > 0xff && !ALLOWED.has(ch)) bad.push(`${f}:${i + 1}: U+${ch.codePointAt(0)!.toString(16).toUpperCase()}`);
    });
  }
  assert.deepEqual(bad, []);
});
