// Building elements and formatting values. Text always goes in as text nodes (never innerHTML),
// so a job name or an error message cannot inject markup.

const PROPERTIES = new Set(["value", "checked", "disabled", "selected", "open", "hidden"]);

/** h("a", {href: "#/", class: "x", onclick: fn}, "text", child, [more children]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (PROPERTIES.has(name)) el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return el;
}

/** Replace el's children, skipping null/false like h() does. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return el;
}

export const FINAL = new Set(["succeeded", "failed", "canceled", "diverged"]);

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, dataset: { status } }, status);
}

/** 4 significant digits, compact for very large or very small numbers. */
export function num(value, digits = 4) {
  if (value == null) return "—";
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e5)) return value.toExponential(2);
  return Number(value.toPrecision(digits)).toString();
}

export function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "—";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m ${Math.round(seconds % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

/** A job's run time: finished − started, or now − started while it runs. */
export function jobSeconds(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return (end - Date.parse(job.started_at)) / 1000;
}

export function progressBar(fraction, label) {
  const percent = fraction == null ? 0 : Math.max(0, Math.min(1, fraction)) * 100;
  return h(
    "span",
    { class: "progress", title: label ?? `${percent.toFixed(0)}%` },
    h("span", { class: "bar", style: `width:${percent.toFixed(1)}%` }),
    h("span", { class: "label" }, label ?? (fraction == null ? "" : `${percent.toFixed(0)}%`)),
  );
}

export const jobLabel = (job) => job.name || job.id.slice(0, 8);

export function tagsText(tags) {
  return Object.entries(tags ?? {})
    .map(([k, v]) => (v === "" || v == null ? k : `${k}=${v}`))
    .join(", ");
}

/** Accuracy-like series are better high; losses, norms and the rest are better low. */
export const higherIsBetter = (metric) => /acc|auc|f1|precision|recall|r2/.test(metric);

/** The number a user ranks a finished job by: best val_acc, else best val_loss / train_loss. */
export function bestMetric(summary) {
  const best = summary?.best ?? {};
  for (const name of ["val_acc", "val_loss", "train_loss"]) {
    if (best[name] != null) return [name, best[name]];
  }
  return null;
}

export function errorBox(error) {
  return h("div", { class: "error", role: "alert" }, error?.message ?? String(error));
}

/** Key/value rows; nested objects shown as compact JSON. */
export function keyValueTable(entries) {
  return h(
    "table",
    { class: "kv" },
    h(
      "tbody",
      {},
      entries.map(([key, value]) =>
        h(
          "tr",
          {},
          h("th", {}, key),
          h("td", {}, typeof value === "object" && value !== null ? JSON.stringify(value) : num(value)),
        ),
      ),
    ),
  );
}
