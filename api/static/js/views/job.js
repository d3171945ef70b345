// One job: status, progress, cancel, error, live curves, summary and spec.
//
// Live by the job's SSE stream (GET /v1/jobs/{id}/events: progress, new metric points, end),
// read with fetch so it carries the key; where the stream is unavailable, by polling the job and
// its metrics since the last step seen.

import * as api from "../api.js";
import { colorOf, lineChart } from "../chart.js";
import {
  FINAL,
  duration,
  errorBox,
  fill,
  h,
  jobLabel,
  jobSeconds,
  keyValueTable,
  num,
  progressBar,
  statusBadge,
  tagsText,
} from "../dom.js";

const GROUPS = [
  { title: "loss", names: ["train_loss", "val_loss"] },
  { title: "accuracy", names: ["train_acc", "val_acc"] },
  { title: "learning rate", names: ["lr"] },
  { title: "gradient norm", names: ["grad_norm"] },
  { title: "loss scale", names: ["loss_scale"] },
];
const GROUPED = new Set(GROUPS.flatMap((g) => g.names));
const POLL_MS = 1000;
const FIRST_READ_POINTS = 2000;

export default function jobView(root, { id }) {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  const series = new Map(); // name -> {steps: [], values: []}
  const charts = new Map(); // group title -> {chart, names}
  const aborter = new AbortController();
  let job = null;
  let lastStep = null;
  let stopped = false;
  let timer = null;
  let redraw = 0;

  const head = h("div", { class: "toolbar" });
  const message = h("div");
  const chartGrid = h("div", { class: "charts" });
  const more = h("details", { class: "more-series", hidden: true }, h("summary", {}, "other series"));
  const summary = h("section", { class: "summary" });
  const spec = h("pre", { class: "spec" });
  root.append(
    head,
    message,
    chartGrid,
    more,
    h(
      "div",
      { class: "two-columns" },
      h("section", {}, h("h2", {}, "Summary"), summary),
      h("section", {}, h("h2", {}, "Spec"), spec),
    ),
  );
  more.addEventListener("toggle", () => more.open && drawCharts());

  async function cancel(button) {
    button.disabled = true;
    try {
      showJob(await api.post(`${path}/cancel`));
    } catch (error) {
      message.replaceChildren(errorBox(error));
      button.disabled = false;
    }
  }

  function showJob(current) {
    job = current;
    const p = job.progress;
    const finished = FINAL.has(job.status);
    fill(
      head,
      h("h1", {}, jobLabel(job)),
      statusBadge(job.status),
      job.cancel_requested && !finished ? h("span", { class: "muted" }, "cancel requested") : null,
      progressBar(p.fraction, p.total_steps ? `step ${p.step}/${p.total_steps}` : `step ${p.step}`),
      h("span", { class: "muted" }, duration(jobSeconds(job))),
      finished || job.cancel_requested
        ? null
        : h(
            "button",
            { type: "button", class: "danger", id: "cancel", onclick: (e) => cancel(e.target) },
            "Cancel",
          ),
      h("a", { href: `#/compare?ids=${job.id}` }, "compare…"),
    );
    message.replaceChildren(
      ...(job.error ? [h("div", { class: `error status-${job.status}`, role: "alert" }, job.error)] : []),
    );
    showSummary();
    spec.textContent = JSON.stringify({ id: job.id, tags: job.tags, ...job.spec }, null, 2);
  }

  function showSummary() {
    const s = job.summary;
    const rows = [
      ["id", job.id],
      ["owner", job.owner],
      ["tags", tagsText(job.tags) || "—"],
      ["attempt", job.attempt],
    ];
    if (job.worker) rows.push(["worker", job.worker]);
    if (!s) {
      const note = FINAL.has(job.status)
        ? "The job ended without a summary."
        : "The summary is written when the job ends.";
      summary.replaceChildren(keyValueTable(rows), h("p", { class: "muted" }, note));
      return;
    }
    const names = [...new Set([...Object.keys(s.final ?? {}), ...Object.keys(s.best ?? {})])].sort();
    const metrics = h(
      "table",
      { class: "grid compact" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, "series"),
          h("th", {}, "final"),
          h("th", {}, "best"),
          h("th", {}, "best step"),
        ),
      ),
      h(
        "tbody",
        {},
        names.map((n) =>
          h(
            "tr",
            {},
            h("td", {}, n),
            h("td", { class: "num" }, num(s.final?.[n])),
            h("td", { class: "num" }, num(s.best?.[n])),
            h("td", { class: "num" }, num(s.best_step?.[n])),
          ),
        ),
      ),
    );
    const rest = Object.entries(s).filter(([k]) => !["final", "best", "best_step"].includes(k));
    fill(summary, keyValueTable([...rows, ...rest]), names.length ? metrics : null);
  }

  function addPoints(incoming) {
    for (const [name, points] of Object.entries(incoming)) {
      const known = series.get(name) ?? { steps: [], values: [] };
      const last = known.steps.length ? known.steps[known.steps.length - 1] : -Infinity;
      points.steps.forEach((step, i) => {
        if (step > last) {
          known.steps.push(step);
          known.values.push(points.values[i]);
        }
      });
      series.set(name, known);
    }
    scheduleRedraw();
  }

  function scheduleRedraw() {
    if (!redraw) redraw = requestAnimationFrame(() => ((redraw = 0), drawCharts()));
  }

  function groupsToDraw() {
    const present = GROUPS.map((g) => ({ ...g, names: g.names.filter((n) => series.has(n)) })).filter(
      (g) => g.names.length,
    );
    const others = [...series.keys()].filter((n) => !GROUPED.has(n)).sort();
    more.hidden = others.length === 0;
    more.querySelector("summary").textContent = `other series (${others.length})`;
    if (more.open) present.push(...others.map((n) => ({ title: n, names: [n], other: true })));
    return present;
  }

  function drawCharts() {
    if (stopped) return;
    for (const group of groupsToDraw()) {
      const lines = group.names.map((name, i) => {
        const s = series.get(name);
        return { label: name, color: colorOf(i), x: s.steps, y: s.values };
      });
      const known = charts.get(group.title);
      if (known && known.names.join() === group.names.join()) {
        known.chart.update(lines);
        continue;
      }
      known?.chart.destroy();
      const box = known?.box ?? h("div", { class: "chart", dataset: { metric: group.title } });
      if (!known) (group.other ? more : chartGrid).append(box);
      box.replaceChildren();
      charts.set(group.title, {
        box,
        names: group.names,
        chart: lineChart(box, { title: group.title, lines, log: group.title === "loss scale" }),
      });
    }
  }

  async function readMetrics() {
    const query = lastStep == null ? `max_points=${FIRST_READ_POINTS}` : `since_step=${lastStep}`;
    const metrics = await api.get(`${path}/metrics?${query}`);
    addPoints(metrics.series);
    if (metrics.last_step != null) lastStep = metrics.last_step;
  }

  async function pollLoop() {
    while (!stopped) {
      try {
        showJob(await api.get(path));
        await readMetrics();
        if (FINAL.has(job.status)) return;
      } catch (error) {
        if (!stopped) message.replaceChildren(errorBox(error));
      }
      await new Promise((resolve) => (timer = setTimeout(resolve, POLL_MS)));
    }
  }

  async function streamLoop() {
    const query = lastStep == null ? "" : `?since_step=${lastStep}`;
    await api.stream(
      `${path}/events${query}`,
      (type, data) => {
        if (type === "metrics") {
          addPoints(data.series);
          lastStep = data.last_step;
        } else if (type === "progress" && job) {
          showJob({
            ...job,
            status: data.status,
            attempt: data.attempt,
            progress: { ...job.progress, ...data },
          });
        }
      },
      { signal: aborter.signal },
    );
    // The stream ends when the job does: read it whole once more (summary, error, finished_at).
    if (!stopped) showJob(await api.get(path));
  }

  (async () => {
    try {
      showJob(await api.get(path));
      await readMetrics();
    } catch (error) {
      message.replaceChildren(errorBox(error));
      return;
    }
    if (FINAL.has(job.status)) return;
    try {
      await streamLoop();
    } catch (error) {
      if (stopped || error.name === "AbortError") return;
      await pollLoop(); // no stream here (an older server, a proxy that buffers): poll instead
    }
  })();

  return () => {
    stopped = true;
    aborter.abort();
    clearTimeout(timer);
    cancelAnimationFrame(redraw);
    for (const { chart } of charts.values()) chart.destroy();
  };
}
