// Studies: the list, and one study's per-configuration table (mean ± CI over seeds, time to
// target, rank, the test against the best) with a chart of the objective per trial. A study
// with published numbers (the mnist_showdown preset) shows them beside ours.

import * as api from "../api.js";
import { scatterChart } from "../chart.js";
import { duration, errorBox, fill, h, num, statusBadge } from "../dom.js";

const POLL_MS = 3000;

function objectiveText(objective) {
  const target = objective.target != null ? `, target ${num(objective.target)}` : "";
  return `${objective.direction} ${objective.metric} (${objective.at})${target}`;
}

export function studiesView(root) {
  const body = h("tbody");
  const message = h("div");
  root.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Studies")),
    h(
      "p",
      { class: "muted" },
      "Start one with ",
      h("code", {}, "descent study create --preset mnist_showdown"),
      " or POST /v1/studies.",
    ),
    message,
    h(
      "table",
      { class: "grid", id: "studies-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["name", "status", "objective", "sampler", "budget", "seeds", "created"].map((t) => h("th", {}, t)),
        ),
      ),
      body,
    ),
  );
  let stopped = false;
  let timer = null;
  async function refresh() {
    try {
      const { data, changed } = await api.poll("/v1/studies?limit=200");
      if (changed && !stopped) {
        body.replaceChildren(
          ...data.data.map((s) =>
            h(
              "tr",
              { dataset: { studyId: s.id } },
              h("td", {}, h("a", { href: `#/studies/${s.id}` }, s.name ?? s.preset ?? s.id.slice(0, 8))),
              h("td", {}, statusBadge(s.status)),
              h("td", {}, objectiveText(s.objective)),
              h("td", {}, s.sampler?.name ?? "—"),
              h("td", { class: "num" }, s.budget),
              h("td", { class: "num" }, s.seeds.length),
              h("td", {}, new Date(s.created_at).toLocaleString()),
            ),
          ),
        );
        if (!data.data.length)
          body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No studies yet.")));
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

function studyTable(summary) {
  const published = summary.rows.some((row) => row.published != null);
  const target = summary.objective.target != null;
  const confidence = Math.round(summary.confidence * 100);
  const headers = [
    "rank",
    "configuration",
    "state",
    "n",
    `mean ± ${confidence}% CI`,
    "best",
    ...(published ? ["published", "ours − published"] : []),
    ...(target ? ["reached", "steps to target", "time to target"] : []),
    "Δ vs best",
    "p (Holm)",
    "jobs",
  ];
  return h(
    "table",
    { class: "grid", id: "study-summary" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        headers.map((t) => h("th", {}, t)),
      ),
    ),
    h(
      "tbody",
      {},
      summary.rows.map((row) => {
        const half = row.ci_high != null && row.mean != null ? row.ci_high - row.mean : null;
        const ids = row.job_ids.join(",");
        return h(
          "tr",
          { dataset: { label: row.label } },
          h("td", { class: "num" }, row.rank ?? "—"),
          h("td", {}, row.label),
          h("td", {}, row.state),
          h("td", { class: "num" }, `${row.n}/${row.seeds}`),
          h(
            "td",
            { class: "num" },
            row.mean == null ? "—" : `${num(row.mean)}${half != null ? ` ± ${num(half, 2)}` : ""}`,
          ),
          h("td", { class: "num" }, num(row.best)),
          published
            ? [
                h("td", { class: "num" }, num(row.published)),
                h(
                  "td",
                  { class: "num" },
                  row.published != null && row.mean != null ? num(row.mean - row.published, 3) : "—",
                ),
              ]
            : [],
          target
            ? [
                h("td", { class: "num" }, row.reached ?? "—"),
                h("td", { class: "num" }, num(row.steps_to_target)),
                h("td", { class: "num" }, duration(row.time_to_target_s)),
              ]
            : [],
          h("td", { class: "num" }, num(row.vs_best?.difference, 3)),
          h(
            "td",
            { class: "num" },
            row.vs_best?.p_adjusted == null
              ? "—"
              : row.vs_best.p_adjusted < 0.001
                ? "<0.001"
                : num(row.vs_best.p_adjusted, 3),
          ),
          h("td", {}, ids ? h("a", { href: `#/compare?ids=${ids}` }, "curves") : "—"),
        );
      }),
    ),
  );
}

export function studyView(root, { id }) {
  const path = `/v1/studies/${encodeURIComponent(id)}`;
  const head = h("div", { class: "toolbar" });
  const facts = h("p", { class: "muted" });
  const message = h("div");
  const table = h("div", { class: "scroll" });
  const chartBox = h("div", { class: "chart", dataset: { metric: "objective" } });
  const reference = h("div");
  root.append(head, facts, message, table, reference, h("h2", {}, "Objective per trial"), chartBox);
  let chart = null;
  let stopped = false;
  let timer = null;

  async function cancel(button) {
    button.disabled = true;
    try {
      await api.post(`${path}/cancel`);
      refresh();
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
  }

  function show(study) {
    const s = study.summary;
    fill(
      head,
      h("h1", {}, `Study ${study.name ?? study.preset ?? study.id.slice(0, 8)}`),
      statusBadge(study.status),
      study.status === "running"
        ? h("button", { type: "button", class: "danger", onclick: (e) => cancel(e.target) }, "Cancel study")
        : null,
      h("a", { href: `#/compare?study=${study.id}` }, "compare all curves…"),
    );
    const byStatus = Object.entries(s.jobs_by_status)
      .map(([k, v]) => `${v} ${k}`)
      .join(", ");
    facts.textContent = `objective: ${objectiveText(s.objective)} · sampler ${study.sampler.name} · ${s.configurations}/${s.budget} configurations · seeds ${study.seeds.join(", ")} · jobs: ${byStatus || "none yet"}`;
    message.replaceChildren(...(study.error ? [errorBox({ message: study.error })] : []));
    table.replaceChildren(studyTable(s));
    reference.replaceChildren(
      ...(s.reference
        ? [
            h(
              "p",
              { class: "muted" },
              `Published (${s.reference.metric}): ${s.reference.source}`,
              s.reference.note ? ` — ${s.reference.note}` : "",
            ),
          ]
        : []),
    );
    const points = s.rows.flatMap((row) => row.values.filter((v) => v != null).map((v) => [row.number, v]));
    const means = s.rows.filter((row) => row.mean != null).map((row) => [row.number, row.mean]);
    chart?.destroy();
    chartBox.replaceChildren();
    chart = points.length
      ? scatterChart(chartBox, {
          title: s.objective.metric,
          xLabel: "trial",
          yLabel: s.objective.metric,
          points,
          means,
        })
      : null;
    if (!chart) chartBox.append(h("p", { class: "muted" }, "No finished trial yet."));
  }

  async function refresh() {
    clearTimeout(timer);
    let running = true;
    try {
      const { data, changed } = await api.poll(path);
      if (stopped) return;
      if (changed) show(data);
      running = data.status === "running";
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
    if (running && !stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    chart?.destroy();
  };
}
