// Small DOM and formatting helpers shared by the views.

/** An element: el("td", {class: "num"}, "12") ; children may be strings or nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

export function seconds(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value >= 120) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${Number(value).toFixed(digits)} s`;
}

export function ago(unixSeconds) {
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(unixSeconds * 1000).toLocaleDateString();
}

export function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log2(n) / 10));
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const FINAL = new Set(["completed", "failed", "canceled", "deleted"]);

/** A job cost as the API may report it: a number, or {amount|usd, currency}. */
export function formatCost(cost) {
  if (cost === null || cost === undefined) return null;
  if (typeof cost === "number") return cost.toFixed(4);
  const amount = cost.amount ?? cost.total ?? cost.usd;
  if (typeof amount !== "number") return null;
  const currency = cost.currency ?? (cost.usd !== undefined ? "USD" : "");
  return `${amount.toFixed(4)} ${currency}`.trim();
}
