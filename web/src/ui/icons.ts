// Small line icons as inline SVG built with the DOM (no fonts needed, so no missing glyphs,
// and no markup strings). Decorative: the element that carries one has a text label.

const PATHS = {
  fullscreen: "M4 9V4h5M15 4h5v5M20 15v5h-5M9 20H4v-5",
  pip: "M3 5h18v14H3zM12 11h7v6h-7z",
  micOff: "M12 3a3 3 0 0 1 3 3v5a3 3 0 0 1-3 3 3 3 0 0 1-3-3V6a3 3 0 0 1 3-3zM6 11a6 6 0 0 0 12 0M12 17v4M4 4l16 16",
} as const;

export type IconName = keyof typeof PATHS;

export function icon(name: IconName): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", `icon icon-${name}`);
  const p = document.createElementNS(ns, "path");
  p.setAttribute("d", PATHS[name]);
  svg.append(p);
  return svg;
}
