// Line charts on uPlot (window.uPlot, vendored). One chart = one metric, one line per series.
//
// uPlot wants one shared x array; lines with different x values (wall time, or jobs logged at
// different steps) are merged with uPlot.join and drawn across the gaps (spanGaps).

const uPlot = window.uPlot;

// Tableau 10, then a second, darker ten: distinct enough for up to 20 jobs on one chart.
export const PALETTE = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
  "#1f4e79",
  "#a0522d",
  "#8b0000",
  "#2f6f6a",
  "#2e6b2e",
  "#9a7d0a",
  "#6a3d7a",
  "#c0587a",
  "#5c4033",
  "#6b6b6b",
];
export const colorOf = (index) => PALETTE[index % PALETTE.length];

/** Drop points uPlot cannot place: missing x, and y ≤ 0 on a log axis. */
function cleanLine(line, log) {
  const xs = [];
  const ys = [];
  for (let i = 0; i < line.x.length; i++) {
    const x = line.x[i];
    let y = line.y[i];
    if (x == null || !Number.isFinite(x)) continue;
    if (y != null && (!Number.isFinite(y) || (log && y <= 0))) y = null;
    if (xs.length && x <= xs[xs.length - 1]) continue; // join needs strictly increasing x
    xs.push(x);
    ys.push(y);
  }
  return [xs, ys];
}

function aligned(lines, log) {
  if (!lines.length) return [[]];
  return uPlot.join(lines.map((line) => cleanLine(line, log)));
}

/**
 * Draw lines into `container`: [{label, color, x: [...], y: [...]}].
 * Returns {update(lines), destroy(), drawn: Promise (first draw done), plot}.
 */
export function lineChart(container, { title, xLabel = "step", log = false, lines, height = 220 }) {
  let resolveDrawn;
  const drawn = new Promise((resolve) => (resolveDrawn = resolve));
  const width = () => Math.max(container.clientWidth - 4, 240);
  const options = {
    title,
    width: width(),
    height,
    scales: { x: { time: false }, y: log ? { distr: 3, log: 10 } : {} },
    axes: [{ label: xLabel, labelSize: 20 }, { size: 64 }],
    series: [
      { label: xLabel },
      ...lines.map((line) => ({
        label: line.label,
        stroke: line.color,
        width: 1.5,
        spanGaps: true,
        points: { show: false },
      })),
    ],
    legend: { live: true },
    hooks: { draw: [() => resolveDrawn()] },
  };
  const plot = new uPlot(options, aligned(lines, log), container);
  const mark = (current) => {
    container.dataset.series = String(current.length);
    container.dataset.points = String(current.reduce((n, line) => n + line.x.length, 0));
  };
  mark(lines);
  const resize = new ResizeObserver(() => {
    const w = width();
    if (Math.abs(w - plot.width) > 2) plot.setSize({ width: w, height });
  });
  resize.observe(container);
  return {
    plot,
    drawn,
    /** New data for the same lines (same labels, same order). */
    update(current) {
      plot.setData(aligned(current, log));
      mark(current);
    },
    destroy() {
      resize.disconnect();
      plot.destroy();
    },
  };
}

/** Points per x (e.g. the objective of each seed per trial), over a line through the means. */
export function scatterChart(container, { title, xLabel, yLabel, points, means, height = 240 }) {
  const xs = [...new Set([...points.map((p) => p[0]), ...means.map((m) => m[0])])].sort((a, b) => a - b);
  const at = (x) => points.filter((p) => p[0] === x).map((p) => p[1]);
  const seedRows = Math.max(1, ...xs.map((x) => at(x).length));
  // The mean line first, so the runs' points are drawn over it.
  const data = [xs, xs.map((x) => means.find((m) => m[0] === x)?.[1] ?? null)];
  for (let row = 0; row < seedRows; row++) data.push(xs.map((x) => at(x)[row] ?? null));
  const runSeries = Array.from({ length: seedRows }, () => ({
    label: "run",
    stroke: PALETTE[0],
    paths: () => null,
    points: { show: true, size: 8, fill: PALETTE[0] },
  }));
  const plot = new uPlot(
    {
      title,
      width: Math.max(container.clientWidth - 4, 240),
      height,
      scales: { x: { time: false } },
      axes: [
        // trials are whole numbers
        { label: xLabel, labelSize: 20, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] },
        { label: yLabel, labelSize: 20, size: 64 },
      ],
      series: [
        { label: xLabel },
        { label: "mean", stroke: PALETTE[1], width: 2, spanGaps: true, points: { show: true, size: 5 } },
        ...runSeries,
      ],
      legend: { show: false },
    },
    data,
    container,
  );
  container.dataset.series = String(data.length - 1);
  return { plot, destroy: () => plot.destroy() };
}
