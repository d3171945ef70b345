"""Where metrics go: buffered in memory and written in batches, one transaction per flush.

The training loop logs device tensors; they are read back to the host together when the buffer
is flushed (one sync per flush, not one per step). A flush also reports whether the job should
stop (cancel requested) and tracks the final and best value of every series for the summary.

When the store is briefly away (`SinkUnavailable`: the database restarts, the network blips) the
points are kept and sent again at later flushes with exponential backoff; training goes on
meanwhile. Only after `retry_seconds` without a successful write does the flush raise.
"""

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from models.db import session_scope
from models.queries import record_progress

log = logging.getLogger(__name__)


class SinkUnavailable(Exception):
    """The store did not answer; the points are kept and the write is tried again later."""


def better(name: str) -> str | None:
    """Which direction is an improvement for a series, judged by its name."""
    if "loss" in name or "error" in name:
        return "min"
    if "acc" in name:
        return "max"
    return None


@dataclass
class SeriesStats:
    final: float
    final_step: int
    best: float | None = None
    best_step: int | None = None


@dataclass
class MetricSink:
    """Buffers points and writes them every `flush_seconds`. Subclasses say where to."""

    flush_seconds: float = 1.0
    started: float = field(default_factory=time.perf_counter)
    stats: dict[str, SeriesStats] = field(default_factory=dict)
    first_nonfinite: tuple[int, str] | None = None  # (step, series) of the first NaN/inf loss
    target: tuple[str, float, str] | None = None  # (series, value, "max" | "min") to watch
    target_reached: tuple[int, float] | None = None  # (step, wall seconds) when first reached
    # fp16: steps skipped in a row for non-finite gradients, from the cumulative `skipped_steps`
    # logged at each flush. Exact when flushes are at most one step apart; otherwise a streak
    # is counted from the first flush interval in which every step was skipped.
    skip_streak: int = 0
    skips: tuple[int, float] = (0, 0.0)  # (step, cumulative skipped) at the last flush
    retry_seconds: float = 300.0  # give up (raise) after this long without a successful write
    _buffer: list[tuple[str, int, float | None, Any]] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    _totals: tuple[int, float] | None = None
    _unsent: list[dict[str, Any]] = field(default_factory=list)
    _failing_since: float | None = None
    _retry_at: float = 0.0
    _backoff: float = 0.0
    _position: tuple[int, float] = (0, 0.0)  # (step, epoch) of the last flush

    def set_totals(self, total_steps: int, total_epochs: float) -> None:
        self._totals = (total_steps, total_epochs)

    def log(self, name: str, step: int, value: torch.Tensor | float, epoch: float | None) -> None:
        self._buffer.append((name, step, epoch, value))

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_seconds

    def flush(self, step: int, epoch: float) -> bool:
        """Write what is buffered (and what earlier flushes could not send). Returns True when
        the job was asked to stop. While the store is away, returns False and keeps the points."""
        points = self._materialize()
        for point in points:
            self._track(point)
        self._unsent.extend(points)
        self._position = (step, epoch)
        now = self._last_flush = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            cancel = self.write(self._unsent, step=step, epoch=epoch, totals=self._totals)
        except SinkUnavailable as exc:
            self._failing_since = self._failing_since or now
            if now - self._failing_since >= self.retry_seconds:
                raise
            self._backoff = min(max(2 * self._backoff, 0.25), 8.0)
            self._retry_at = now + self._backoff
            log.warning(
                "metrics not written (%s); %d points kept, next try in %.2f s",
                exc,
                len(self._unsent),
                self._backoff,
            )
            return False
        if self._failing_since is not None:
            log.info("metrics written again after %.1f s", now - self._failing_since)
        self._unsent.clear()
        self._totals = None
        self._failing_since, self._retry_at, self._backoff = None, 0.0, 0.0
        return cancel

    @property
    def position(self) -> tuple[int, float]:
        """(step, epoch) of the last flush."""
        return self._position

    @property
    def all_written(self) -> bool:
        """Every point logged so far has reached the store (a checkpoint may be taken)."""
        return not self._unsent and not self._buffer

    def drain(self) -> bool:
        """Flush until everything is written, waiting out the backoff; raises SinkUnavailable
        after `retry_seconds`. Used at the end of a job, before its final status is written."""
        if self.all_written:
            return False
        while True:
            cancel = self.flush(*self._position)
            if self.all_written:
                return cancel
            time.sleep(max(self._retry_at - time.monotonic(), 0.0))

    def write(
        self,
        points: list[dict[str, Any]],
        *,
        step: int,
        epoch: float,
        totals: tuple[int, float] | None,
    ) -> bool:
        raise NotImplementedError

    def _materialize(self) -> list[dict[str, Any]]:
        wall = time.perf_counter() - self.started
        tensors = [value for *_, value in self._buffer if isinstance(value, torch.Tensor)]
        host = iter(torch.stack(tensors).float().tolist()) if tensors else iter(())
        points = []
        for name, step, epoch, value in self._buffer:
            number = next(host) if isinstance(value, torch.Tensor) else float(value)
            points.append(
                {"name": name, "step": step, "value": number, "epoch": epoch, "wall_time": wall}
            )
        self._buffer.clear()
        return points

    def _track(self, point: dict[str, Any]) -> None:
        name, value, step = point["name"], point["value"], point["step"]
        if name == "skipped_steps":
            self._track_skips(step, value)
        if not math.isfinite(value):
            # A loss, not any series: an fp16 overflow makes one step's grad_norm inf, and
            # GradScaler skips that step (the skipped-steps rule watches those).
            if self.first_nonfinite is None and name.endswith("loss"):
                self.first_nonfinite = (step, name)
            return
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = SeriesStats(final=value, final_step=step)
        elif step >= stats.final_step:
            stats.final, stats.final_step = value, step
        if self.target and self.target_reached is None and name == self.target[0]:
            goal, mode = self.target[1], self.target[2]
            if value >= goal if mode == "max" else value <= goal:
                self.target_reached = (step, point["wall_time"])
        direction = better(name)
        if direction and (
            stats.best is None or (value < stats.best if direction == "min" else value > stats.best)
        ):
            stats.best, stats.best_step = value, step

    def _track_skips(self, step: int, skipped: float) -> None:
        last_step, last_skipped = self.skips
        if step > last_step:
            every_one = skipped - last_skipped == step - last_step
            self.skip_streak = self.skip_streak + step - last_step if every_one else 0
            self.skips = (step, skipped)

    def summary(self) -> dict[str, Any]:
        return {
            "final": {name: s.final for name, s in self.stats.items()},
            "best": {name: s.best for name, s in self.stats.items() if s.best is not None},
            "best_step": {
                name: s.best_step for name, s in self.stats.items() if s.best is not None
            },
        }


@dataclass
class MemorySink(MetricSink):
    """Keeps every point in memory: for `descent run`, notebooks and tests."""

    points: list[dict[str, Any]] = field(default_factory=list)
    flushes: int = 0

    def write(self, points, *, step, epoch, totals):  # type: ignore[no-untyped-def]
        self.points.extend(points)
        self.flushes += 1
        return False

    def series(self, name: str) -> list[float]:
        return [p["value"] for p in self.points if p["name"] == name]


@dataclass
class DatabaseSink(MetricSink):
    """Writes to the ledger, fenced by the attempt number (models.queries.record_progress)."""

    job_id: str = ""
    attempt: int = 0
    lease_seconds: float = 60.0

    def write(self, points, *, step, epoch, totals):  # type: ignore[no-untyped-def]
        # SQLite stores NaN as NULL; the divergence is recorded in the job's status instead.
        finite = [p for p in points if not math.isnan(p["value"])]
        total_steps, total_epochs = totals if totals else (None, None)
        try:
            with session_scope() as session:
                return record_progress(
                    session=session,
                    job_id=self.job_id,
                    attempt=self.attempt,
                    points=finite,
                    step=step,
                    epoch=epoch,
                    total_steps=total_steps,
                    total_epochs=total_epochs,
                    lease_seconds=self.lease_seconds,
                )
        except (DBAPIError, PoolTimeout) as exc:
            if isinstance(exc, DBAPIError) and not is_transient(exc):
                raise
            raise SinkUnavailable(f"{type(exc).__name__}: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def is_transient(exc: DBAPIError) -> bool:
    """A lost or refused connection (retry), not a wrong query or a constraint (a bug)."""
    return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
