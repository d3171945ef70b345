"""The sink's column-wise flush tracks exactly what a point-by-point walk through the log would:
final and best values (and the order series first appear in the summary), the target, the
first non-finite loss and the skipped-steps streak; MemorySink keeps the points in log order."""

import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from worker.engine.sink import MemorySink, SeriesStats, better

NAMES = ("train_loss", "lr", "val_acc", "val_loss", "grad_norm", "skipped_steps")


@dataclass
class PointByPoint:
    """The tracking rules stated one point at a time, in log order (the reference)."""

    target: tuple[str, float, str] | None
    stats: dict[str, SeriesStats] = field(default_factory=dict)
    first_nonfinite: tuple[int, str] | None = None
    target_reached: int | None = None  # the step
    skip_streak: int = 0
    skips: tuple[int, float] = (0, 0.0)

    def track(self, name: str, step: int, value: float) -> None:
        if name == "skipped_steps":
            last_step, last_skipped = self.skips
            if step > last_step:
                every_one = value - last_skipped == step - last_step
                self.skip_streak = self.skip_streak + step - last_step if every_one else 0
                self.skips = (step, value)
        if not math.isfinite(value):
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
                self.target_reached = step
        direction = better(name)
        if direction and (
            stats.best is None or (value < stats.best if direction == "min" else value > stats.best)
        ):
            stats.best, stats.best_step = value, step


def random_value(rng: random.Random, name: str, step: int) -> float:
    """NaN, ±inf, ties, and otherwise values float32 holds exactly (a tensor is read back as
    float32)."""
    if name == "skipped_steps":  # cumulative, sometimes every step in a row
        return float(step - rng.choice([0, 0, 1, 5]))
    roll = rng.random()
    if roll < 0.04:
        return math.nan
    if roll < 0.07:
        return rng.choice([math.inf, -math.inf])
    return rng.choice([0.5, 0.25, -0.0, 0.0, 1.0, rng.randint(0, 64) / 64])  # ties happen


@pytest.mark.parametrize("seed", range(12))
def test_column_wise_tracking_matches_the_point_by_point_rules(seed: int) -> None:
    rng = random.Random(seed)
    target = ("val_acc", 0.9, "max") if seed % 2 else ("val_loss", 0.25, "min")
    sink = MemorySink(flush_seconds=3600, target=target)
    reference = PointByPoint(target=target)
    logged: list[tuple[str, int, float, float | None]] = []
    if seed % 3 == 0:  # restored from a checkpoint
        sink.stats = {"val_loss": SeriesStats(final=0.3, final_step=40, best=0.2, best_step=7)}
        reference.stats = {"val_loss": SeriesStats(final=0.3, final_step=40, best=0.2, best_step=7)}
    step = 0
    for _ in range(rng.randint(1, 6)):  # flushes
        for _ in range(rng.randint(0, 40)):
            step += rng.choice([1, 1, 1, 0, 2, -3])  # repeated and earlier steps too
            name = rng.choice(NAMES)
            value = random_value(rng, name, step)
            epoch = rng.choice([None, step / 10])
            as_tensor = name != "skipped_steps" and rng.random() < 0.6
            sink.log(name, step, torch.tensor(value) if as_tensor else value, epoch)
            reference.track(name, step, value)
            logged.append((name, step, value, epoch))
        sink.flush(step, step / 10)
    assert sink.first_nonfinite == reference.first_nonfinite
    assert (sink.skips, sink.skip_streak) == (reference.skips, reference.skip_streak)
    assert list(sink.stats.items()) == list(reference.stats.items())  # the order counts too
    assert (sink.target_reached and sink.target_reached[0]) == reference.target_reached
    kept = [(p["name"], p["step"], p["value"], p["epoch"]) for p in sink.points]
    assert comparable(kept) == comparable(logged)


def comparable(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """NaN made equal to itself."""
    return [tuple("NaN" if isinstance(x, float) and x != x else x for x in row) for row in rows]


def test_tensors_and_numbers_in_one_series_keep_their_order() -> None:
    sink = MemorySink(flush_seconds=3600)
    sink.log("lr", 1, 0.5, None)
    sink.log("lr", 2, torch.tensor(0.25, requires_grad=True) * 1, None)
    sink.log("val_acc", 2, torch.tensor(0.75), 0.2)
    sink.log("lr", 3, 1, None)
    sink.log("lr", 4, torch.tensor(2.0, dtype=torch.float64), None)
    sink.flush(4, 0.4)
    assert [(p["name"], p["value"], p["epoch"]) for p in sink.points] == [
        ("lr", 0.5, None),
        ("lr", 0.25, None),
        ("val_acc", 0.75, 0.2),
        ("lr", 1.0, None),
        ("lr", 2.0, None),
    ]
    assert all(p["wall_time"] == sink.points[0]["wall_time"] for p in sink.points)
    assert sink.all_written and sink.stats["lr"].final == 2.0


def test_one_element_tensors_of_any_shape_are_numbers_and_larger_ones_are_refused() -> None:
    sink = MemorySink(flush_seconds=3600)
    sink.log("train_loss", 1, torch.tensor([0.5]), None)
    sink.log("train_loss", 2, torch.tensor([[0.25]]), None)
    sink.log("grad_norm", 2, torch.tensor(3.0, dtype=torch.bfloat16), None)
    with pytest.raises(ValueError, match="'val_acc' must be one number, got shape"):
        sink.log("val_acc", 2, torch.tensor([0.5, 0.6]), None)
    sink.flush(2, 0.1)
    assert [(p["name"], p["value"]) for p in sink.points] == [
        ("train_loss", 0.5),
        ("train_loss", 0.25),
        ("grad_norm", 3.0),
    ]
