"""`descent run`: a spec in this process, with a progress bar instead of a database.

Every task that needs nothing but the spec runs here: training and `lr_range_test` through the
engine (worker/engine), `task: solve` through the solver runner (worker/solvers), exactly as a
worker runs them. `task: ensemble` evaluates jobs stored in the service's ledger with the weights
its workers kept, so it is refused here with a pointer to `descent submit`.

Imported only by that command: it pulls in torch, which the HTTP commands do not need.
"""

import os
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from models.settings import get_settings
from models.spec import JobSpec
from worker.engine import Outcome, train
from worker.engine.sink import MemorySink

SHOWN = ("train_loss", "val_loss", "val_acc")
CAPTION = (
    "coef error ‖w − w_true‖₂ (an eigenvector's up to sign), residual ‖Xw − y‖₂ (‖Av − λv‖₂); "
    "iterations: … stopped unconverged, ↑ diverged"
)


class NeedsService(Exception):
    """The spec's task reads the service's ledger; it cannot run in this process."""


@dataclass
class ProgressSink(MemorySink):
    """Keeps the points in memory and moves a progress bar at every flush."""

    bar: Progress | None = None
    task: TaskID | None = None
    doing: str = "training"  # the bar's text while no shown series has a value

    def write(self, points, *, step, epoch, totals):  # type: ignore[no-untyped-def]
        super().write(points, step=step, epoch=epoch, totals=totals)
        if self.bar is not None and self.task is not None:
            if totals:
                self.bar.update(self.task, total=totals[0])
            shown = "  ".join(
                f"{name} {self.stats[name].final:.4f}" for name in SHOWN if name in self.stats
            )
            self.bar.update(self.task, completed=step, description=shown or self.doing)
        return False


def run_in_process(spec: JobSpec, console: Console) -> Outcome:
    """Run `spec` here as a worker would, minus the ledger; raises NeedsService for ensembles."""
    if spec.task == "ensemble":
        raise NeedsService(
            "task: ensemble evaluates finished jobs stored by the service (their ids and saved "
            "weights), so it cannot run in this process: send it with `descent submit`"
        )
    columns: Any = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        doing = {"solve": "solving", "lr_range_test": "sweeping the learning rate"}
        sink = ProgressSink(
            flush_seconds=0.5,
            bar=bar,
            task=bar.add_task("starting", total=None),
            doing=doing.get(spec.task, "training"),
        )
        if spec.task == "solve":
            from worker.solvers import run_solve

            return run_solve(spec, sink)
        return train(spec, sink, data_root=get_settings().data_dir)


def solve_table(summary: dict[str, Any]) -> Table:
    """One row per method: the solution (small problems), its error against the true weights,
    the residual, iterations and wall time; the problem and its condition number as the title."""
    rows: dict[str, dict[str, Any]] = summary.get("methods", {})
    eigen = any("eigenvalue" in row for row in rows.values())
    title = summary.get("description") or summary.get("problem", "solve")
    if summary.get("condition_number") is not None:
        title += f"\nκ = {summary['condition_number']:.3g}"
        if summary.get("normal_condition_number") is not None:
            title += f" (normal equations: {summary['normal_condition_number']:.3g})"
    if summary.get("eigen_gap") is not None:
        title += f"\n|λ₂/λ₁| = {summary['eigen_gap']:.3g}"
    table = Table(title=title, caption=CAPTION, caption_justify="left", show_edge=False)
    has_solution = any("coef" in row for row in rows.values())
    table.add_column("method", overflow="fold")
    if has_solution:
        table.add_column("eigenvector" if eigen else "solution", overflow="fold")
    if eigen:
        table.add_column("eigenvalue", justify="right", no_wrap=True)
    for header in ("coef error", "residual", "iterations", "time ms"):
        table.add_column(header, justify="right", no_wrap=True)
    for label, row in rows.items():
        cells = [label]
        if has_solution:
            cells.append(vector(row.get("coef")))
        if eigen:
            cells.append(number(row.get("eigenvalue"), ".10g"))
        if "failed" in row:
            cells += [f"[red]{row['failed']}[/red]", "", "", ""]
        else:
            iterations = row.get("iterations")
            if iterations is not None and row.get("diverged"):
                iterations = f"{iterations} ↑"
            elif iterations is not None and not row.get("converged", True):
                iterations = f"{iterations} …"
            seconds = row.get("time_s")
            cells += [
                number(row.get("coef_error"), ".3e"),
                number(row.get("residual"), ".3e"),
                "" if iterations is None else str(iterations),
                number(None if seconds is None else 1000 * seconds, ".3g"),
            ]
        table.add_row(*cells)
    return table


def results_console() -> Console:
    """stdout; when it is a file or a pipe (no terminal width to fit), wide enough that no
    number is cut, unless COLUMNS says otherwise."""
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(width=160)
    return out


def number(value: float | None, form: str) -> str:
    return "nan" if value is None else format(value, form)


def vector(values: list[float | None] | None) -> str:
    if values is None:
        return ""
    return "[" + ", ".join(number(v, ".6g") for v in values) + "]"
