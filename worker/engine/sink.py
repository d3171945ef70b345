"""Where metrics go: buffered in memory and written in batches, one transaction per flush.

The training loop logs device tensors; they are read back to the host together when the buffer
is flushed (one sync per flush, not one per step). A flush also reports whether the job should
stop (cancel requested) and tracks the final and best value of every series for the summary.

The buffer is column-wise (a few lists per series) and a flush turns it into one numpy array per
column and series (models.series.Points): the tracking and the database write work on whole
arrays. A dict per point, tracked and regrouped one by one, cost about 5 µs a point, half of
the budget of the 100,000 points/s ingestion bar (benchmarks/ingest.py).

When the store is briefly away (`SinkUnavailable`: the database restarts, the network blips) the
points are kept and sent again at later flushes with exponential backoff; training goes on
meanwhile. Only after `retry_seconds` without a successful write does the flush raise.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from models.db import session_scope
from models.queries import record_progress
from models.series import Points

log = logging.getLogger(__name__)


def _to_host(tensors: list[torch.Tensor]) -> np.ndarray:
    """0-d tensors as float64 in one torch.stack (one device sync). They live on the job's
    device; one that does not (a metric computed on the host in a CUDA job) is moved there."""
    if not tensors:
        return np.empty(0)
    device = tensors[0].device
    stacked = torch.stack([t.to(device) for t in tensors])
    return stacked.detach().float().cpu().numpy().astype(np.float64)


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
class _Logged:
    """One series' points logged since the last flush, in log order."""

    steps: list[int] = field(default_factory=list)
    epochs: list[float | None] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)  # 0-d tensors and plain numbers
    order: list[int] = field(default_factory=list)  # each point's position in the sink's log
    tensors: int = 0  # how many of `values` are tensors


@dataclass
class Batch:
    """The points of one or more flushes, column-wise: each series' points in log order, and
    where each point stands in the log across all series (`order`)."""

    series: dict[str, Points] = field(default_factory=dict)
    order: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(p) for p in self.series.values())

    def extend(self, other: "Batch") -> None:
        for name, p in other.series.items():
            if name in self.series:
                self.series[name] = Points.concat([self.series[name], p])
                self.order[name] = np.concatenate([self.order[name], other.order[name]])
            else:
                self.series[name], self.order[name] = p, other.order[name]

    def dicts(self) -> list[dict[str, Any]]:
        """One dict per point (name, step, value, epoch: None when unknown, wall_time), in the
        order the points were logged."""
        if not self.series:
            return []
        names = list(self.series)
        parts = list(self.series.values())
        label = np.repeat(np.arange(len(names)), [len(p) for p in parts])
        rank = np.argsort(np.concatenate([self.order[name] for name in names]), kind="stable")
        merged = Points.concat(parts).take(rank)
        return [
            {"name": names[n], "step": s, "value": v, "epoch": e, "wall_time": w}
            for n, s, v, e, w in zip(
                label[rank].tolist(),
                merged.steps.tolist(),
                merged.values.tolist(),
                merged.epoch_list(),
                merged.walls.tolist(),
                strict=True,
            )
        ]


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
    _buffer: dict[str, _Logged] = field(default_factory=dict)
    _logged: int = 0  # points logged so far (the next point's position in the log)
    _last_flush: float = field(default_factory=time.monotonic)
    _totals: tuple[int, float] | None = None
    _unsent: Batch = field(default_factory=Batch)
    _failing_since: float | None = None
    _retry_at: float = 0.0
    _backoff: float = 0.0
    _position: tuple[int, float] = (0, 0.0)  # (step, epoch) of the last flush

    def set_totals(self, total_steps: int, total_epochs: float) -> None:
        self._totals = (total_steps, total_epochs)

    def log(self, name: str, step: int, value: torch.Tensor | float, epoch: float | None) -> None:
        is_tensor = isinstance(value, torch.Tensor)
        if is_tensor and value.dim():
            if value.numel() != 1:
                raise ValueError(f"metric {name!r} must be one number, got shape {value.shape}")
            value = value.reshape(())
        logged = self._buffer.get(name)
        if logged is None:
            logged = self._buffer[name] = _Logged()
        logged.steps.append(step)
        logged.epochs.append(epoch)
        logged.values.append(value)
        logged.order.append(self._logged)
        self._logged += 1
        if is_tensor:
            logged.tensors += 1

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_seconds

    def flush(self, step: int, epoch: float) -> bool:
        """Write what is buffered (and what earlier flushes could not send). Returns True when
        the job was asked to stop. While the store is away, returns False and keeps the points."""
        batch = self._materialize()
        self._track(batch)
        self._unsent.extend(batch)
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
        self._unsent = Batch()
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
        points: Batch,
        *,
        step: int,
        epoch: float,
        totals: tuple[int, float] | None,
    ) -> bool:
        raise NotImplementedError

    def _materialize(self) -> Batch:
        """The buffer as arrays. Every tensor logged since the last flush is read back in one
        torch.stack (one device sync), as float32."""
        wall = time.perf_counter() - self.started
        logged, self._buffer = self._buffer, {}
        tensors = [
            value
            for series in logged.values()
            if series.tensors
            for value in (
                series.values
                if series.tensors == len(series.values)
                else [v for v in series.values if isinstance(v, torch.Tensor)]
            )
        ]
        host = _to_host(tensors)
        batch, read = Batch(), 0
        for name, series in logged.items():
            n = len(series.values)
            if series.tensors == n:
                values = host[read : read + n]
            elif not series.tensors:
                values = np.fromiter(series.values, dtype=np.float64, count=n)  # float(value)
            else:
                is_tensor = np.array([isinstance(v, torch.Tensor) for v in series.values])
                values = np.empty(n)
                values[is_tensor] = host[read : read + series.tensors]
                values[~is_tensor] = [v for v in series.values if not isinstance(v, torch.Tensor)]
            read += series.tensors
            batch.series[name] = Points(
                np.fromiter(series.steps, dtype=np.int64, count=n),
                values,
                np.array(series.epochs, dtype=np.float64),  # None becomes NaN
                np.full(n, wall),
            )
            batch.order[name] = np.fromiter(series.order, dtype=np.int64, count=n)
        return batch

    def _track(self, batch: Batch) -> None:
        """Bring the final and best values, the target and the first non-finite loss up to date
        with a flush's points, as if each point were seen in the order it was logged."""
        nonfinite: list[tuple[int, int, str]] = []  # (log position, step, series)
        new: list[tuple[int, str, SeriesStats]] = []  # (log position, series, stats)
        for name, points in batch.series.items():
            order = batch.order[name]
            if name == "skipped_steps":
                for step, skipped in zip(
                    points.steps.tolist(), points.values.tolist(), strict=True
                ):
                    self._track_skips(step, skipped)
            finite = np.isfinite(points.values)
            if not finite.all():
                # A loss, not any series: an fp16 overflow makes one step's grad_norm inf, and
                # GradScaler skips that step (the skipped-steps rule watches those).
                if name.endswith("loss"):
                    first = int(np.argmin(finite))
                    nonfinite.append((int(order[first]), int(points.steps[first]), name))
                order = order[finite]
                points = points.take(finite)
                if not len(points):
                    continue
            steps, values = points.steps, points.values
            stats = self.stats.get(name)
            if stats is None:
                stats = SeriesStats(final=float(values[0]), final_step=int(steps[0]))
                new.append((int(order[0]), name, stats))
            # The final point: the last one logged at the highest step so far.
            top = int(steps.max())
            if top >= stats.final_step:
                last = len(steps) - 1 - int(np.argmax(steps[::-1] == top))
                stats.final, stats.final_step = float(values[last]), top
            if self.target and self.target_reached is None and name == self.target[0]:
                goal, mode = self.target[1], self.target[2]
                hits = np.flatnonzero(values >= goal if mode == "max" else values <= goal)
                if len(hits):
                    self.target_reached = (int(steps[hits[0]]), float(points.walls[hits[0]]))
            direction = better(name)
            if direction:
                i = int(np.argmin(values) if direction == "min" else np.argmax(values))
                value = float(values[i])
                if stats.best is None or (
                    value < stats.best if direction == "min" else value > stats.best
                ):
                    stats.best, stats.best_step = value, int(steps[i])
        if nonfinite and self.first_nonfinite is None:
            _, step, name = min(nonfinite)
            self.first_nonfinite = (step, name)
        for _, name, stats in sorted(new):
            self.stats[name] = stats

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
        self.points.extend(points.dicts())
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
        # write_points leaves NaN out (SQLite would store it as NULL); the divergence is
        # recorded in the job's status instead.
        total_steps, total_epochs = totals if totals else (None, None)
        try:
            with session_scope() as session:
                return record_progress(
                    session=session,
                    job_id=self.job_id,
                    attempt=self.attempt,
                    points=points.series,
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
