// A tiny element helper: h("button", { class: "x", onclick }, "text", child). Strings become
// text nodes, never markup. Style attributes are never set (the CSP forbids inline styles).

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined | ((ev: any) => void)>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === "function") e.addEventListener(k.replace(/^on/, ""), v);
    else if (k === "style") throw new Error("inline styles are forbidden by the CSP");
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, String(v));
  }
  append(e, ...children);
  return e;
}

export function append(e: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
}

export function clear(e: Node): void {
  while (e.firstChild) e.removeChild(e.firstChild);
}

let nextId = 0;
export const uid = (p: string) => `${p}-${++nextId}`;

/** A labelled control: returns [wrapper, control]. */
export function labelled<E extends HTMLElement>(label: string, control: E): [HTMLElement, E] {
  if (!control.id) control.id = uid("c");
  return [h("div", { class: "field" }, h("label", { for: control.id }, label), control), control];
}

export function formatBytes(n: number): string {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

/** Only these data URLs are ever shown as images (no SVG: it can carry script). */
export const SAFE_IMAGE = /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+=*$/;
