// The jobs table: filters by status and tag, live by polling GET /v1/jobs with If-None-Match
// (an unchanged list answers 304 and nothing is redrawn), a selection to compare.

import * as api from "../api.js";
import {
  bestMetric,
  duration,
  errorBox,
  h,
  jobLabel,
  jobSeconds,
  num,
  progressBar,
  statusBadge,
  tagsText,
} from "../dom.js";

const STATUSES = ["queued", "running", "requeued", "succeeded", "failed", "canceled", "diverged"];
const POLL_MS = 1500;

/** The API filters tags as `key` or `key:value`; accept `key=value` too. */
function tagFilter(text) {
  const tag = text.trim();
  return tag.includes(":") || !tag.includes("=") ? tag : tag.replace("=", ":");
}

function optimizerText(spec) {
  const opt = spec?.optimizer;
  return opt ? `${opt.name}${opt.lr != null ? ` ${num(opt.lr, 3)}` : ""}` : "—";
}

function row(job, selected, onToggle) {
  const best = bestMetric(job.summary);
  const p = job.progress;
  const progressLabel = p.total_steps ? `${p.step}/${p.total_steps}` : p.step ? String(p.step) : "";
  return h(
    "tr",
    { dataset: { jobId: job.id, status: job.status } },
    h(
      "td",
      {},
      h("input", {
        type: "checkbox",
        checked: selected.has(job.id),
        "aria-label": `select ${jobLabel(job)}`,
        onchange: (event) => onToggle(job.id, event.target.checked),
      }),
    ),
    h("td", {}, h("a", { href: `#/jobs/${job.id}`, title: job.id }, jobLabel(job))),
    h("td", {}, statusBadge(job.status), job.cancel_requested && !job.finished_at ? " (canceling)" : ""),
    h("td", { class: "tags" }, tagsText(job.tags)),
    h("td", {}, optimizerText(job.spec)),
    h("td", {}, job.spec?.schedule?.name ?? "—"),
    h("td", {}, job.spec?.precision ?? "—"),
    h("td", {}, progressBar(p.fraction, progressLabel)),
    h("td", { class: "num" }, best ? `${best[0]} ${num(best[1])}` : "—"),
    h("td", { class: "num" }, duration(jobSeconds(job))),
  );
}

export default function jobsView(root, { params }) {
  const selected = new Set();
  let filters = { status: params.get("status") ?? "", tag: params.get("tag") ?? "" };
  let timer = null;
  let stopped = false;
  let jobs = [];

  const status = h(
    "select",
    { "aria-label": "status", onchange: () => setFilters({ status: status.value }) },
    h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s)),
  );
  const tag = h("input", {
    type: "search",
    placeholder: "tag: key or key=value",
    value: filters.tag,
    "aria-label": "tag",
    onchange: () => setFilters({ tag: tag.value }),
  });
  const compareButton = h(
    "button",
    {
      type: "button",
      class: "primary",
      disabled: true,
      onclick: () => (location.hash = `#/compare?ids=${[...selected].join(",")}`),
    },
    "Compare selected",
  );
  const message = h("div");
  const tbody = h("tbody");
  const count = h("span", { class: "muted" });
  root.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Jobs"), status, tag, compareButton, count),
    message,
    h(
      "table",
      { class: "grid", id: "jobs-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          [
            "",
            "name",
            "status",
            "tags",
            "optimizer",
            "schedule",
            "precision",
            "progress",
            "best",
            "duration",
          ].map((title) => h("th", {}, title)),
        ),
      ),
      tbody,
    ),
  );

  function toggle(id, on) {
    if (on) selected.add(id);
    else selected.delete(id);
    compareButton.disabled = selected.size === 0;
    compareButton.textContent = selected.size ? `Compare ${selected.size}` : "Compare selected";
  }

  function render() {
    tbody.replaceChildren(...jobs.map((job) => row(job, selected, toggle)));
    if (!jobs.length) tbody.append(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No jobs yet.")));
    count.textContent = `${jobs.length} shown`;
  }

  function setFilters(change) {
    filters = { ...filters, ...change };
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", `#/${query.size ? `?${query}` : ""}`);
    refresh();
  }

  async function refresh() {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: "200" });
    if (filters.status) query.set("status", filters.status);
    if (filters.tag.trim()) query.set("tag", tagFilter(filters.tag));
    try {
      const { data, changed } = await api.poll(`/v1/jobs?${query}`);
      if (stopped) return;
      const running = data.data.some((job) => job.status === "running");
      // A running job's duration ticks even when the list itself has not changed.
      if (changed || running) {
        jobs = data.data;
        render();
      }
      message.replaceChildren();
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
