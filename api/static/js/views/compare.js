// Compare jobs: their curves overlaid, one chart per metric, x = step / epoch / wall time, a log
// toggle, and a table of final and best values. Jobs come from a picker or from a study.
//
// Data: GET /v1/compare (server-side downsampling to max_points per series). The view records
// how long the charts took to draw (data-render-ms on its root), which the browser test reads.

import * as api from "../api.js";
import { colorOf, lineChart } from "../chart.js";
import {
  FINAL,
  duration,
  errorBox,
  h,
  higherIsBetter,
  jobLabel,
  jobSeconds,
  num,
  statusBadge,
} from "../dom.js";

const PREFERRED = ["train_loss", "val_loss", "val_acc", "train_acc", "lr", "grad_norm", "loss_scale"];
const X_LABELS = { step: "step", epoch: "epoch", time: "wall time (s)" };
const MAX_POINTS = 500;
const POLL_MS = 3000;

function hashWith(params, change) {
  const next = new URLSearchParams(params);
  for (const [k, v] of Object.entries(change)) {
    if (v == null || v === "" || v === false) next.delete(k);
    else next.set(k, v === true ? "1" : v);
  }
  return `#/compare?${next}`;
}

/** Picker: recent jobs with checkboxes, or every job of a study. */
function picker(params, ids) {
  const chosen = new Set(ids);
  const list = h("tbody");
  const filter = h("input", {
    type: "search",
    placeholder: "filter by name, id or optimizer",
    "aria-label": "filter jobs",
  });
  const studySelect = h("select", { "aria-label": "study" }, h("option", { value: "" }, "— or a study —"));
  const box = h(
    "details",
    { class: "picker", open: ids.length === 0 },
    h("summary", {}, ids.length ? `${ids.length} jobs — change…` : "Pick jobs to compare"),
    h(
      "div",
      { class: "toolbar" },
      filter,
      studySelect,
      h(
        "button",
        {
          type: "button",
          class: "primary",
          id: "compare-apply",
          onclick: () => (location.hash = hashWith(params, { ids: [...chosen].join(","), study: null })),
        },
        "Compare",
      ),
    ),
    h("table", { class: "grid compact" }, list),
  );
  let jobs = [];
  const render = () => {
    const needle = filter.value.trim().toLowerCase();
    list.replaceChildren(
      ...jobs
        .filter(
          (job) =>
            !needle ||
            [job.name, job.id, job.spec?.optimizer?.name].some((t) => t?.toLowerCase().includes(needle)),
        )
        .map((job) =>
          h(
            "tr",
            { dataset: { jobId: job.id } },
            h(
              "td",
              {},
              h("input", {
                type: "checkbox",
                checked: chosen.has(job.id),
                onchange: (e) => (e.target.checked ? chosen.add(job.id) : chosen.delete(job.id)),
              }),
            ),
            h("td", {}, jobLabel(job)),
            h("td", {}, statusBadge(job.status)),
            h("td", {}, job.spec?.optimizer?.name ?? ""),
            h("td", { class: "muted" }, job.id.slice(0, 8)),
          ),
        ),
    );
  };
  filter.addEventListener("input", render);
  studySelect.addEventListener(
    "change",
    () => studySelect.value && (location.hash = hashWith(params, { study: studySelect.value, ids: null })),
  );
  box.addEventListener("toggle", async () => {
    if (!box.open || jobs.length) return;
    try {
      jobs = (await api.get("/v1/jobs?limit=200")).data;
      render();
      const studies = (await api.get("/v1/studies?limit=100")).data;
      studySelect.append(
        ...studies.map((s) =>
          h("option", { value: s.id }, `${s.name ?? s.preset ?? s.id.slice(0, 8)} (${s.status})`),
        ),
      );
    } catch (error) {
      box.append(errorBox(error));
    }
  });
  if (box.open) box.dispatchEvent(new Event("toggle"));
  return box;
}

function summaryTable(columns, jobsById, metrics, colorById) {
  return h(
    "table",
    { class: "grid", id: "compare-summary" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "job"),
        h("th", {}, "status"),
        h("th", {}, "optimizer"),
        h("th", {}, "schedule"),
        h("th", {}, "steps"),
        h("th", {}, "time"),
        metrics.map((m) =>
          h("th", { title: `final (best: ${higherIsBetter(m) ? "highest" : "lowest"})` }, m),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      columns.map((column) => {
        const job = jobsById.get(column.id);
        const opt = job?.spec?.optimizer;
        return h(
          "tr",
          { dataset: { jobId: column.id } },
          h(
            "td",
            {},
            h("span", { class: "swatch", style: `background:${colorById.get(column.id)}` }),
            h("a", { href: `#/jobs/${column.id}` }, column.name || column.id.slice(0, 8)),
          ),
          h("td", {}, statusBadge(column.status)),
          h("td", {}, opt ? `${opt.name} ${num(opt.lr, 3)}` : "—"),
          h("td", {}, job?.spec?.schedule?.name ?? "—"),
          h("td", { class: "num" }, job ? num(job.progress.step) : "—"),
          h("td", { class: "num" }, job ? duration(jobSeconds(job)) : "—"),
          metrics.map((m) => {
            const s = column.metrics[m];
            if (!s) return h("td", { class: "num" }, "—");
            const best = higherIsBetter(m) ? s.max : s.min;
            return h("td", { class: "num" }, num(s.final), h("span", { class: "muted" }, ` (${num(best)})`));
          }),
        );
      }),
    ),
  );
}

export default function compareView(root, { params }) {
  const x = X_LABELS[params.get("x")] ? params.get("x") : "step";
  const log = params.get("log") === "1";
  const study = params.get("study");
  let ids = (params.get("ids") ?? "").split(",").filter(Boolean);
  const charts = [];
  let stopped = false;
  let timer = null;
  let shownMetrics = params.get("metrics")?.split(",").filter(Boolean) ?? null;

  const message = h("div");
  const chartGrid = h("div", { class: "charts", id: "compare-charts" });
  const table = h("div", { class: "scroll" });
  const metricChoice = h("div", { class: "chips" });
  const controls = h(
    "div",
    { class: "toolbar" },
    h("h1", {}, "Compare"),
    h(
      "label",
      {},
      "x ",
      h(
        "select",
        { id: "compare-x", onchange: (e) => (location.hash = hashWith(params, { x: e.target.value })) },
        Object.entries(X_LABELS).map(([value, label]) =>
          h("option", { value, selected: value === x }, label),
        ),
      ),
    ),
    h(
      "label",
      {},
      h("input", {
        type: "checkbox",
        id: "compare-log",
        checked: log,
        onchange: (e) => (location.hash = hashWith(params, { log: e.target.checked })),
      }),
      " log scale",
    ),
  );
  root.append(controls, picker(params, ids), message, metricChoice, chartGrid, h("h2", {}, "Summary"), table);
  if (!ids.length && !study) return () => {};

  async function studyJobs() {
    const found = await api.get(`/v1/studies/${encodeURIComponent(study)}`);
    controls.querySelector("h1").textContent = `Compare: study ${found.name ?? found.id.slice(0, 8)}`;
    return found.summary.rows.flatMap((row) => row.job_ids).slice(0, 50);
  }

  function drawCharts(comparison, metrics, colorById, labelById) {
    for (const chart of charts.splice(0)) chart.destroy();
    chartGrid.replaceChildren();
    for (const metric of metrics) {
      const lines = comparison.jobs
        .filter((column) => comparison.series[column.id]?.[metric])
        .map((column) => {
          const curve = comparison.series[column.id][metric];
          return { label: labelById.get(column.id), color: colorById.get(column.id), x: curve.x, y: curve.y };
        });
      const box = h("div", { class: "chart", dataset: { metric } });
      chartGrid.append(box);
      charts.push(lineChart(box, { title: metric, xLabel: X_LABELS[x], log, lines }));
    }
    return Promise.all(charts.map((c) => c.drawn));
  }

  function chooseMetrics(comparison) {
    const present = new Set(comparison.jobs.flatMap((column) => Object.keys(column.metrics)));
    const all = [
      ...PREFERRED.filter((m) => present.has(m)),
      ...[...present].filter((m) => !PREFERRED.includes(m)).sort(),
    ];
    if (!shownMetrics) shownMetrics = all.filter((m) => PREFERRED.includes(m)).slice(0, 6);
    if (!shownMetrics.length) shownMetrics = all.slice(0, 4);
    metricChoice.replaceChildren(
      ...all.map((m) =>
        h(
          "label",
          { class: "chip" },
          h("input", {
            type: "checkbox",
            checked: shownMetrics.includes(m),
            onchange: (e) => {
              shownMetrics = e.target.checked ? [...shownMetrics, m] : shownMetrics.filter((n) => n !== m);
              location.hash = hashWith(params, { metrics: shownMetrics.join(",") });
            },
          }),
          ` ${m}`,
        ),
      ),
    );
    return all.filter((m) => shownMetrics.includes(m));
  }

  const jobsById = new Map();
  let shown = null; // what the table shows: {comparison, metrics, colorById}

  function labels(comparison) {
    const names = comparison.jobs.map((column) => column.name || column.id.slice(0, 8));
    const unique = (name) => names.indexOf(name) === names.lastIndexOf(name);
    return new Map(
      comparison.jobs.map((column, i) => [
        column.id,
        unique(names[i]) ? names[i] : `${names[i]} ${column.id.slice(0, 4)}`,
      ]),
    );
  }

  async function load(first) {
    const started = performance.now();
    if (first && study) ids = await studyJobs();
    if (!ids.length) {
      message.replaceChildren(h("p", { class: "muted" }, "This study has no jobs yet."));
      return false;
    }
    const query = new URLSearchParams({ jobs: ids.join(","), x, max_points: String(MAX_POINTS) });
    const { data: comparison, changed } = await api.poll(`/v1/compare?${query}`);
    if (stopped) return false;
    const fetched = performance.now();
    if (changed || first) {
      const colorById = new Map(comparison.jobs.map((column, i) => [column.id, colorOf(i)]));
      const metrics = chooseMetrics(comparison);
      const renderStart = performance.now();
      await drawCharts(comparison, metrics, colorById, labels(comparison));
      await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
      const rendered = performance.now();
      shown = { comparison, metrics, colorById };
      root.dataset.fetchMs = (fetched - started).toFixed(1);
      root.dataset.renderMs = (rendered - renderStart).toFixed(1);
      root.dataset.renders = String(Number(root.dataset.renders ?? 0) + 1);
    }
    // Job details (spec, steps, duration) only feed the table, so they come after the charts:
    // once for a finished job, at every poll for one that runs.
    const stale = ids.filter((id) => !FINAL.has(jobsById.get(id)?.status));
    const jobs = await Promise.all(
      stale.map((id) => api.get(`/v1/jobs/${encodeURIComponent(id)}`).catch(() => null)),
    );
    if (stopped) return false;
    for (const job of jobs) if (job) jobsById.set(job.id, job);
    if (changed || first || stale.length) {
      table.replaceChildren(summaryTable(shown.comparison.jobs, jobsById, shown.metrics, shown.colorById));
    }
    return comparison.jobs.some((column) => !FINAL.has(column.status));
  }

  (async function loop(first) {
    try {
      const live = await load(first);
      message.replaceChildren();
      if (!live || stopped) return;
    } catch (error) {
      message.replaceChildren(errorBox(error));
      if (first) return;
    }
    if (!stopped) timer = setTimeout(() => loop(false), POLL_MS);
  })(true);

  return () => {
    stopped = true;
    clearTimeout(timer);
    for (const chart of charts) chart.destroy();
  };
}
