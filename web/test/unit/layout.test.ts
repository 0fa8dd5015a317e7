// Gallery layout arithmetic: every tile inside, none overlapping, most of the space used, for
// the counts and window shapes the e2e test also checks in a browser.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Box, gridLayout, spotlightLayout } from "../../src/ui/layout";

const inside = (b: Box, w: number, h: number) => b.x >= 0 && b.y >= 0 && b.x + b.w <= w && b.y + b.h <= h;
const overlap = (a: Box, b: Box) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

function check(boxes: Box[], w: number, h: number, what: string): number {
  for (const b of boxes) assert.ok(inside(b, w, h), `${what}: ${JSON.stringify(b)} outside ${w}x${h}`);
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) assert.ok(!overlap(boxes[i]!, boxes[j]!), `${what}: ${i} and ${j} overlap`);
  return boxes.reduce((s, b) => s + b.w * b.h, 0) / (w * h);
}

test("grid: 1..16 tiles in laptop, phone, TV and odd shapes fit, do not overlap and fill most of the space", () => {
  // The gallery's own size: a laptop with the side panel open, a phone between its bars, a TV.
  const shapes: [number, number][] = [[940, 700], [390, 720], [1920, 1080], [300, 900], [1200, 300]];
  for (const [w, h] of shapes) {
    for (let n = 1; n <= 16; n++) {
      const boxes = gridLayout(n, w, h);
      assert.equal(boxes.length, n);
      const used = check(boxes, w, h, `${n} in ${w}x${h}`);
      if ([1, 2, 4, 9].includes(n) && w < 1000 && h < 1000 && w / h >= 0.5 && w / h < 2) assert.ok(used >= 0.6, `${n} tiles in ${w}x${h} use ${(used * 100).toFixed(0)}%`);
      for (const b of boxes) assert.ok(b.w > 0 && b.h > 0);
      assert.equal(new Set(boxes.map((b) => `${b.w}x${b.h}`)).size, 1, "equal tiles");
    }
  }
});

test("grid: a phone puts one or two tiles in one column, a laptop two side by side when that is larger", () => {
  const phone = gridLayout(2, 390, 720);
  assert.equal(phone[0]!.x, phone[1]!.x, "one column on a phone");
  const wide = gridLayout(2, 1600, 600);
  assert.equal(wide[0]!.y, wide[1]!.y, "one row in a wide window");
});

test("grid: a phone shows up to four tiles in one column, nine in two (one column would cover too little)", () => {
  // The gallery's size on a 390x844 phone between its header and its bar.
  const [w, h] = [380, 730];
  // Tiles in the first row (a last row that is not full is centred).
  const columns = (boxes: Box[]) => boxes.filter((b) => b.y === boxes[0]!.y).length;
  for (const n of [1, 2, 3, 4]) assert.equal(columns(gridLayout(n, w, h)), 1, `${n} tiles`);
  const nine = gridLayout(9, w, h);
  assert.equal(columns(nine), 2);
  assert.ok(check(nine, w, h, "9 on a phone") >= 0.6);
  // Nine in one column: rows of (h - 8 gaps) / 9, each tile no wider than 16:9 of that.
  const th = (h - 8 * 8) / 9;
  const oneColumn = (9 * Math.min(w, th * (16 / 9)) * th) / (w * h);
  assert.ok(oneColumn < 0.6, `one column would cover ${(oneColumn * 100).toFixed(0)}%`);
});

test("grid: nothing for no tiles or no space", () => {
  assert.deepEqual(gridLayout(0, 800, 600), []);
  assert.deepEqual(gridLayout(3, 0, 600), []);
});

test("spotlight: the first tile is the largest, the strip fits beside it", () => {
  for (const [w, h] of [[940, 700], [390, 720], [1920, 1080]] as [number, number][]) {
    for (const others of [0, 1, 3, 8]) {
      const boxes = spotlightLayout(others, w, h);
      assert.equal(boxes.length, others + 1);
      check(boxes, w, h, `spotlight+${others} in ${w}x${h}`);
      const [main, ...rest] = boxes;
      for (const b of rest) assert.ok(b.w * b.h < main!.w * main!.h, "spotlight is largest");
    }
  }
});
