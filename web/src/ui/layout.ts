// Where gallery tiles go: pure arithmetic on the gallery's size, no DOM, so unit tests can
// check every count and window shape. Two layouts: a grid of equal tiles (the column count
// that shows the videos largest) and a spotlight (one large tile, the rest in a strip).

export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface GridOptions {
  /** Space between tiles, in pixels. */
  gap: number;
  /** Width / height of the videos, to pick the column count that shows them largest. */
  videoAspect: number;
  /** A tile is as wide as its cell allows, but no wider than this (width / height)... */
  maxAspect: number;
  /** ...and no narrower than this, so a single tile on a phone stays a sensible shape. */
  minAspect: number;
}

export const GRID: GridOptions = { gap: 8, videoAspect: 16 / 9, maxAspect: 16 / 9, minAspect: 9 / 16 };

/** `n` equal tiles inside `w` x `h`, centred, the last row centred too. */
export function gridLayout(n: number, w: number, h: number, o: GridOptions = GRID): Box[] {
  if (n <= 0 || w <= 0 || h <= 0) return [];
  let best: { cols: number; tw: number; th: number; score: number; area: number } | null = null;
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const cw = (w - (cols - 1) * o.gap) / cols;
    const ch = (h - (rows - 1) * o.gap) / rows;
    if (cw <= 0 || ch <= 0) continue;
    const [tw, th] = clampAspect(cw, ch, o.minAspect, o.maxAspect);
    const [vw, vh] = fit(o.videoAspect, tw, th);
    const score = vw * vh;
    const area = tw * th;
    // The largest video wins; on a tie (within 1%) the larger tile, then fewer columns.
    if (!best || score > best.score * 1.01 || (score > best.score * 0.99 && area > best.area * 1.01)) best = { cols, tw, th, score, area };
  }
  if (!best) return [];
  const { cols, tw, th } = best;
  const rows = Math.ceil(n / cols);
  const totalH = rows * th + (rows - 1) * o.gap;
  const y0 = (h - totalH) / 2;
  const out: Box[] = [];
  for (let i = 0; i < n; i++) {
    const row = Math.floor(i / cols);
    const inRow = Math.min(cols, n - row * cols);
    const rowW = inRow * tw + (inRow - 1) * o.gap;
    const x0 = (w - rowW) / 2;
    out.push({ x: x0 + (i % cols) * (tw + o.gap), y: y0 + row * (th + o.gap), w: tw, h: th });
  }
  return out.map(floorBox);
}

/**
 * One spotlighted tile (a screen share) as large as fits, the `others` in a strip of small
 * tiles along the bottom. The first box is the spotlight.
 */
export function spotlightLayout(others: number, w: number, h: number, o: GridOptions = GRID): Box[] {
  if (w <= 0 || h <= 0) return [];
  if (others <= 0) return gridLayout(1, w, h, { ...o, minAspect: 1 / 4, maxAspect: 4 });
  const stripH = Math.max(40, Math.min(h * 0.22, 180));
  let tw = stripH * o.maxAspect;
  let th = stripH;
  if (others * tw + (others - 1) * o.gap > w) {
    tw = (w - (others - 1) * o.gap) / others;
    th = tw / o.maxAspect;
  }
  const mainH = h - stripH - o.gap;
  const [mw, mh] = clampAspect(w, mainH, 1 / 4, 4);
  const out: Box[] = [{ x: (w - mw) / 2, y: (mainH - mh) / 2, w: mw, h: mh }];
  const rowW = others * tw + (others - 1) * o.gap;
  for (let i = 0; i < others; i++) out.push({ x: (w - rowW) / 2 + i * (tw + o.gap), y: mainH + o.gap + (stripH - th) / 2, w: tw, h: th });
  return out.map(floorBox);
}

/** The largest box of aspect `a` (width / height) inside w x h. */
export function fit(a: number, w: number, h: number): [number, number] {
  return w / h > a ? [h * a, h] : [w, w / a];
}

function clampAspect(w: number, h: number, min: number, max: number): [number, number] {
  const a = w / h;
  if (a > max) return [h * max, h];
  if (a < min) return [w, w / min];
  return [w, h];
}

/** Whole pixels, never larger than the space computed (so rounding cannot make tiles overlap). */
const floorBox = (b: Box): Box => ({ x: Math.ceil(b.x), y: Math.ceil(b.y), w: Math.floor(b.w), h: Math.floor(b.h) });
