"""`task: lr_range_test`: the sweep, the smoothed loss, the early stop and the suggestion."""

import math
from pathlib import Path

import pytest
import torch

from models.spec import JobSpec
from worker.engine import train
from worker.engine.lr_range_test import smooth, suggest, sweep
from worker.engine.sink import MemorySink

JOB = {
    "task": "lr_range_test",
    "model": {"name": "mlp", "args": {"hidden": [32]}},
    "data": {"name": "digits", "batch_size": 64},
    "optimizer": {"name": "sgd", "args": {"momentum": 0.9}},
}


def test_sweep_is_exponential() -> None:
    rates = sweep(1e-4, 1.0, 5)
    assert rates == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_smoothing_is_a_bias_corrected_average() -> None:
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    assert smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, (0.25 + 0.75 * 2) / 0.75 * 1])
    assert smooth([1.0, float("nan")], 0.5)[1] == math.inf


def test_suggestion_is_the_steepest_descent_before_the_minimum() -> None:
    rates = sweep(1e-3, 1.0, 7)
    losses = [2.0, 1.9, 1.5, 0.6, 0.5, 0.7, 3.0]  # steepest fall between 1e-2.5 and 1e-1.5
    s = suggest(rates, losses)
    assert s["steepest_lr"] == pytest.approx(rates[3]) or s["steepest_lr"] == pytest.approx(
        rates[2]
    )
    assert s["min_loss_lr"] == pytest.approx(rates[4])
    assert s["suggested_lr"] == s["steepest_lr"]


def test_a_range_test_job_suggests_a_rate_and_stops_when_the_loss_explodes(tmp_path: Path) -> None:
    options = {"lr_min": 1e-4, "lr_max": 100.0, "steps": 80, "smoothing": 0.8}
    spec = {**JOB, "lr_range_test": options}
    sink = MemorySink(flush_seconds=3600)
    outcome = train(
        JobSpec.model_validate(spec), sink, data_root=tmp_path, device=torch.device("cpu")
    )
    found = outcome.summary["lr_range_test"]
    rates = sink.series("lr")
    assert outcome.status == "succeeded"
    assert rates[:2] == pytest.approx(sweep(1e-4, 100.0, 80)[:2])
    assert found["stopped_early_at"] <= found["steps_run"] < 80  # rates near 100 diverge
    assert len(sink.series("smoothed_loss")) <= found["steps_run"]
    assert 1e-3 < found["suggested_lr"] < 10
    assert found["min_loss_lr"] > found["suggested_lr"] / 100


def test_range_test_defaults_are_filled_in() -> None:
    spec = JobSpec.model_validate(JOB)
    assert spec.lr_range_test is not None and spec.lr_range_test.steps == 100
    assert "lr_range_test" not in JobSpec.model_validate({**JOB, "task": "train"}).model_dump()
