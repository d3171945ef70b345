"""`descent run`: the engine in this process, with a progress bar instead of a database.

Imported only by that command: it pulls in torch, which the HTTP commands do not need.
"""

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

from models.settings import get_settings
from models.spec import JobSpec
from worker.engine import Outcome, train
from worker.engine.sink import MemorySink

SHOWN = ("train_loss", "val_loss", "val_acc")


@dataclass
class ProgressSink(MemorySink):
    """Keeps the points in memory and moves a progress bar at every flush."""

    bar: Progress | None = None
    task: TaskID | None = None

    def write(self, points, *, step, epoch, totals):  # type: ignore[no-untyped-def]
        super().write(points, step=step, epoch=epoch, totals=totals)
        if self.bar is not None and self.task is not None:
            if totals:
                self.bar.update(self.task, total=totals[0])
            shown = "  ".join(
                f"{name} {self.stats[name].final:.4f}" for name in SHOWN if name in self.stats
            )
            self.bar.update(self.task, completed=step, description=shown or "training")
        return False


def run_in_process(spec: JobSpec, console: Console) -> Outcome:
    columns: Any = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        sink = ProgressSink(flush_seconds=0.5, bar=bar, task=bar.add_task("starting", total=None))
        return train(spec, sink, data_root=get_settings().data_dir)
