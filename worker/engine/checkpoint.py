"""Checkpoints: save and restore everything a run needs to continue exactly where it stopped.

A checkpoint at step S holds the state *after* S optimizer steps: the net (parameters and
buffers), the optimizer (SAM's state is its base optimizer's), every other part of the run that
has `state_dict()`/`load_state_dict()` (a plateau schedule, an adaptive clipper, the step
counters: a stateful part without them is not resumed exactly), the GradScaler, the position in
the data order (epoch, batch within the epoch, and the shuffling generator's state at the start
of that epoch and now), every random number generator (torch CPU and CUDA, numpy, Python), and
the metric sink's running statistics (final/best values, target reached, skip streak, wall time).

The loop flushes the metrics up to S before it saves S, so a checkpoint never runs ahead of the
ledger: resuming from it rewrites nothing that is missing, and the steps it recomputes land on the
(job, name, step) key as no-ops. On the CPU the resumed series is bitwise the uninterrupted one.

Files are written to a temporary name, synced, and renamed into place (a crash leaves either the
old set or the new file, never half a file), and read with `torch.load(weights_only=True)`: no
pickled code is ever executed. A stale attempt (fenced off the job) does not rename its file in.

Own code, not a library: torch.distributed.checkpoint targets sharded models and leaves the data
order and RNG streams to the caller, which is most of what an exact resume needs.
"""

import dataclasses
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.tables import JobStatus
from worker.engine.sink import MetricSink, SeriesStats

if TYPE_CHECKING:
    from worker.engine.setup import DeviceData, TrainingRun

log = logging.getLogger(__name__)

FORMAT = 1
NAME = re.compile(r"^step-(\d{10})\.attempt-(\d+)\.pt$")


def checkpoint_name(step: int, attempt: int) -> str:
    return f"step-{step:010d}.attempt-{attempt}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, int, Path]]:
    """(step, attempt, path), newest step first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found, key=lambda item: (item[0], item[1]), reverse=True)


# TrainingRun fields saved on their own terms; every other field that has `state_dict()` and
# `load_state_dict()` (a stateful schedule or clipper, the step counters, …) is saved by name.
OWN_TERMS = frozenset({"spec", "device", "data", "net", "optimizer", "precision", "params"})


def _stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def components(run: "TrainingRun") -> dict[str, Any]:
    """The run's other stateful parts, by field name."""
    found = {}
    for spec_field in dataclasses.fields(run):
        value = getattr(run, spec_field.name)
        if spec_field.name not in OWN_TERMS and _stateful(value):
            found[spec_field.name] = value
    return found


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    # RNG states are CPU byte tensors, whatever map_location moved the rest of the file to.
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        else:
            log.warning(
                "checkpoint has %d CUDA RNG states, this machine %d GPUs: not restored",
                len(state["cuda"]),
                torch.cuda.device_count(),
            )
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].cpu().numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def sink_state(sink: MetricSink) -> dict[str, Any]:
    return {
        "stats": {
            name: [s.final, s.final_step, s.best, s.best_step] for name, s in sink.stats.items()
        },
        "target_reached": list(sink.target_reached) if sink.target_reached else None,
        "skips": [*sink.skips, sink.skip_streak],
        "wall_time": time.perf_counter() - sink.started,
    }


def restore_sink(sink: MetricSink, state: dict[str, Any]) -> None:
    sink.stats = {
        name: SeriesStats(final=v[0], final_step=v[1], best=v[2], best_step=v[3])
        for name, v in state["stats"].items()
    }
    reached = state["target_reached"]
    sink.target_reached = (int(reached[0]), float(reached[1])) if reached else None
    step, count, streak = state["skips"]
    sink.skips, sink.skip_streak = (int(step), float(count)), int(streak)
    # Wall times continue from where the interrupted attempt stopped.
    sink.started = time.perf_counter() - state["wall_time"]


@dataclass
class Checkpointer:
    """When to checkpoint, where, and the bookkeeping an exact resume needs.

    With no `directory` it only wraps the data order (in-process runs, `descent run`).
    `may_write` is asked just before a file is renamed into place: False when this attempt has
    been fenced off its job. `stop_requested` turns true on a graceful shutdown (SIGTERM): the
    loop then checkpoints at the next step and hands the job back (status `requeued`).
    """

    directory: Path | None = None
    every_steps: int | None = None
    every_seconds: float = 0.0
    attempt: int = 0
    stop_requested: Callable[[], bool] = lambda: False
    may_write: Callable[[], bool] = lambda: True
    keep: int = 2
    resumed_from: int | None = None
    saved_step: int | None = None
    _last_save: float = field(default_factory=time.monotonic)
    _epoch: int = 0
    _batch_in_epoch: int = 0
    _epoch_start_state: torch.Tensor | None = None
    _resume_data: dict[str, Any] | None = None

    # The data order ------------------------------------------------------------------------

    def epoch_batches(self, data: "DeviceData") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of `data.epoch_batches()`, recording the position; the first epoch after a
        resume replays the interrupted epoch's order and skips the batches already trained on."""
        resume, self._resume_data = self._resume_data, None
        skip = resume["batch_in_epoch"] if resume else 0
        if skip:
            data.generator.set_state(resume["epoch_start"])
        self._epoch_start_state = data.generator.get_state()
        self._batch_in_epoch = 0
        for index, batch in enumerate(data.epoch_batches()):
            if index < skip:
                if index == skip - 1:  # the order is drawn; continue the stream from the save
                    data.generator.set_state(resume["generator"])  # type: ignore[index]
                self._batch_in_epoch = index + 1
                continue
            self._batch_in_epoch = index + 1
            yield batch
        self._epoch += 1
        self._batch_in_epoch = 0

    # Saving --------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def due(self, step: int) -> bool:
        """A checkpoint is wanted after this step (the loop flushes the metrics first)."""
        if not self.enabled:
            return False
        if self.stop_requested():
            return True
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_seconds) and time.monotonic() - self._last_save >= self.every_seconds

    def after_flush(
        self, run: "TrainingRun", sink: MetricSink, step: int, last: bool
    ) -> tuple[JobStatus, str | None] | None:
        """Called after each flush that did not stop the job: save when due; on a graceful
        shutdown, save and tell the loop to hand the job back."""
        if last or not self.due(step):
            return None
        saved = self.save(run, sink, step)
        if self.stop_requested():
            where = f"checkpoint at step {step}" if saved else "no checkpoint"
            return JobStatus.requeued, f"worker shutting down ({where})"
        return None

    def state(self, run: "TrainingRun", sink: MetricSink, step: int) -> dict[str, Any]:
        optimizer = run.optimizer
        state: dict[str, Any] = {
            "format": FORMAT,
            "step": step,
            "spec_hash": run.spec.spec_hash(),
            "attempt": self.attempt,
            "net": run.net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": run.precision.scaler.state_dict() if run.precision.scaled else {},
            "data": {
                "epoch": self._epoch,
                "batch_in_epoch": self._batch_in_epoch,
                "epoch_start": self._epoch_start_state,
                "generator": run.data.generator.get_state(),
            },
            "rng": rng_state(),
            "sink": sink_state(sink),
        }
        # SAM/ASAM's state_dict is its base optimizer's (worker/strategies/sam.py); its own
        # perturbation lives only inside one step.
        state["components"] = {name: part.state_dict() for name, part in components(run).items()}
        return state

    def save(self, run: "TrainingRun", sink: MetricSink, step: int) -> bool:
        """Write the checkpoint for `step` atomically. Needs every metric up to `step` written:
        a sink still holding unsent points (the database is away) skips this checkpoint."""
        self._last_save = time.monotonic()
        if self.directory is None or not sink.all_written:
            return False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            final = self.directory / checkpoint_name(step, self.attempt)
            temporary = self.directory / f".{final.name}.{os.getpid()}.tmp"
            with temporary.open("wb") as handle:
                torch.save(self.state(run, sink, step), handle)
                handle.flush()
                os.fsync(handle.fileno())
            if not self.may_write():
                temporary.unlink(missing_ok=True)
                log.warning("attempt %d no longer owns the job: checkpoint dropped", self.attempt)
                return False
            os.replace(temporary, final)
            _fsync_directory(self.directory)
        except OSError:
            log.exception("checkpoint at step %d could not be written; training goes on", step)
            return False
        self.saved_step = step
        for _, _, old in list_checkpoints(self.directory)[self.keep :]:
            old.unlink(missing_ok=True)
        return True

    # Resuming ------------------------------------------------------------------------------

    def load_latest(self, run: "TrainingRun") -> dict[str, Any] | None:
        if self.directory is None:
            return None
        spec_hash = run.spec.spec_hash()
        for step, attempt, path in list_checkpoints(self.directory):
            try:
                state = torch.load(path, map_location=run.device, weights_only=True)
            except Exception:  # noqa: BLE001 - a damaged file: fall back to an older one
                log.exception("checkpoint %s is unreadable; trying an older one", path)
                continue
            if state.get("format") != FORMAT or state.get("spec_hash") != spec_hash:
                log.warning("checkpoint %s belongs to another spec or format; skipped", path)
                continue
            if step >= run.total_steps:
                continue
            log.info("resuming from %s (step %d, written by attempt %d)", path, step, attempt)
            return state
        return None

    def resume(self, run: "TrainingRun", sink: MetricSink) -> int:
        """Restore the newest usable checkpoint into a freshly built run; the step to go on
        from (0 when there is none)."""
        state = self.load_latest(run)
        if state is None:
            return 0
        run.net.load_state_dict(state["net"])
        run.optimizer.load_state_dict(state["optimizer"])
        parts = components(run)
        for name, part_state in state["components"].items():
            parts[name].load_state_dict(part_state)
        if state["scaler"] and run.precision.scaled:
            run.precision.scaler.load_state_dict(state["scaler"])
        data = state["data"]
        data["generator"] = data["generator"].cpu()
        data["epoch_start"] = data["epoch_start"].cpu() if data["epoch_start"] is not None else None
        run.data.generator.set_state(data["generator"])
        self._epoch = data["epoch"]
        self._resume_data = data
        set_rng_state(state["rng"])
        restore_sink(sink, state["sink"])
        self.resumed_from = self.saved_step = state["step"]
        self._last_save = time.monotonic()
        return int(state["step"])


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
