"""The training loop: it learns, its precision paths run on the CPU, it flushes in batches,
and it stops when asked, when it diverges, or when the target is reached."""

import math
from pathlib import Path

import pytest
import torch

from models.spec import JobSpec
from worker.engine import train
from worker.engine.sink import MemorySink

TINY = {
    "model": {"name": "mlp", "args": {"hidden": [32]}},
    "data": {"name": "synthetic_classification", "args": {"n_samples": 256}, "batch_size": 32},
    "optimizer": {"name": "adam", "lr": 0.01},
    "epochs": 5,
}


def run(spec: dict, tmp_path: Path, sink: MemorySink | None = None):
    sink = sink or MemorySink(flush_seconds=3600)
    outcome = train(
        JobSpec.model_validate(spec), sink, data_root=tmp_path, device=torch.device("cpu")
    )
    return outcome, sink


def test_tiny_job_learns(tmp_path: Path) -> None:
    outcome, sink = run(TINY, tmp_path)
    losses = sink.series("train_loss")
    assert outcome.status == "succeeded"
    assert len(losses) == 5 * 7  # 205 training rows / 32 per batch → 7 steps per epoch
    assert sum(losses[-7:]) / 7 < 0.6 * sum(losses[:7]) / 7
    assert sink.series("val_acc")[-1] > 0.8
    summary = outcome.summary
    assert summary["steps"] == 35 and summary["epochs"] == 5.0
    assert summary["final"]["val_acc"] == sink.series("val_acc")[-1]
    assert summary["versions"]["torch"] == torch.__version__ and summary["device"] == "cpu"


def test_same_seed_same_series(tmp_path: Path) -> None:
    _, first = run(TINY, tmp_path)
    _, second = run(TINY, tmp_path)
    _, other = run({**TINY, "seed": 1}, tmp_path)
    assert first.series("train_loss") == second.series("train_loss")
    assert first.series("train_loss") != other.series("train_loss")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_on_cpu(tmp_path: Path, precision: str) -> None:
    outcome, sink = run({**TINY, "precision": precision}, tmp_path)
    assert outcome.status == "succeeded"
    assert all(math.isfinite(v) for v in sink.series("train_loss"))
    assert sink.series("val_acc")[-1] > 0.7
    assert bool(sink.series("loss_scale")) == (precision == "fp16")


def test_metrics_are_flushed_in_batches(tmp_path: Path) -> None:
    """One write per flush, not per step; every step still arrives exactly once."""
    outcome, sink = run({**TINY, "epochs": 20}, tmp_path)
    steps = [p["step"] for p in sink.points if p["name"] == "train_loss"]
    assert steps == list(range(1, 141))
    assert sink.flushes == 1  # flush_seconds is an hour: only the final flush happened


def test_every_step_logs_the_scheduled_rate(tmp_path: Path) -> None:
    spec = {**TINY, "schedule": {"name": "cosine", "warmup_steps": 5, "args": {"lr_min": 0.001}}}
    _, sink = run(spec, tmp_path)
    rates = sink.series("lr")
    assert rates[0] == pytest.approx(0.01 / 5)  # warmup step 1 of 5
    assert rates[4] == pytest.approx(0.01)  # warmup reaches the base rate
    assert rates[-1] == pytest.approx(0.001 + 0.5 * 0.009 * (1 + math.cos(math.pi * 29 / 30)))


def test_clipping_logs_the_pre_clip_norm(tmp_path: Path) -> None:
    _, sink = run({**TINY, "clipping": {"mode": "norm", "max_norm": 0.01}}, tmp_path)
    norms = sink.series("grad_norm")
    assert len(norms) == 35 and min(norms) > 0.01  # gradients exceed the bound: clipping active


class CancelAfter(MemorySink):
    def __init__(self, flushes: int) -> None:
        super().__init__(flush_seconds=0.0)
        self.cancel_at = flushes

    def write(self, points, *, step, epoch, totals):  # type: ignore[no-untyped-def]
        super().write(points, step=step, epoch=epoch, totals=totals)
        return self.flushes >= self.cancel_at


def test_cancel_stops_within_a_flush_and_keeps_metrics(tmp_path: Path) -> None:
    outcome, sink = run({**TINY, "epochs": 50}, tmp_path, CancelAfter(3))
    assert outcome.status == "canceled"
    assert outcome.summary["steps"] == 3
    assert len(sink.series("train_loss")) == 3


def test_nonfinite_loss_ends_diverged(tmp_path: Path) -> None:
    spec = {
        **TINY,
        "model": {"name": "linear"},
        "optimizer": {"name": "sgd", "lr": 10.0},
        "data": {"name": "synthetic_regression", "args": {"noise": 1.0}},
        "epochs": 30,
    }
    outcome, _ = run(spec, tmp_path, MemorySink(flush_seconds=0.0))
    assert outcome.status == "diverged"
    assert "train_loss is not finite at step" in outcome.error


def test_target_reached_stops_training(tmp_path: Path) -> None:
    spec = {
        **TINY,
        "epochs": 100,
        "eval": {"every_steps": 7},
        "stop": {"target": {"metric": "val_acc", "value": 0.8, "stop_training": True}},
    }
    outcome, sink = run(spec, tmp_path, MemorySink(flush_seconds=0.0))
    target = outcome.summary["target"]
    assert outcome.status == "succeeded" and target["reached"]
    assert outcome.summary["steps"] < 700 and target["step"] <= outcome.summary["steps"]
    first_hit = next(p["step"] for p in sink.points if p["name"] == "val_acc" and p["value"] >= 0.8)
    assert target["step"] == first_hit


def test_failure_inside_training_keeps_what_was_measured(tmp_path: Path) -> None:
    class Boom(MemorySink):
        def log(self, name, step, value, epoch):  # type: ignore[no-untyped-def]
            if step == 4:
                raise RuntimeError("boom")
            super().log(name, step, value, epoch)

    sink = Boom(flush_seconds=3600)
    with pytest.raises(RuntimeError, match="boom"):
        run(TINY, tmp_path, sink)
    assert [p["step"] for p in sink.points if p["name"] == "train_loss"] == [1, 2, 3]


@pytest.mark.parametrize(
    "model",
    [
        {"name": "linear"},
        {"name": "mlp", "args": {"hidden": [16, 16], "activation": "gelu", "dropout": 0.1}},
        {"name": "seed_cnn", "args": {"filters": 4}},
    ],
)
def test_every_net_trains_on_digits(tmp_path: Path, model: dict) -> None:
    spec = {
        "model": model,
        "data": {"name": "digits"},
        "optimizer": {"name": "adam", "lr": 0.01},
        "max_steps": 60,
    }
    outcome, sink = run(spec, tmp_path)
    assert outcome.status == "succeeded" and sink.series("val_acc")[-1] > 0.5
