"""Calibration (ECE, NLL, entropy) and Monte Carlo dropout: against hand numbers, a reference
implementation written the textbook way, and inside a real training job."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from models.spec import JobSpec
from worker.engine import train
from worker.engine.sink import MemorySink
from worker.engine.uncertainty import Calibration, mc_dropout_metrics

TINY = {
    "model": {"name": "mlp", "args": {"hidden": [32], "dropout": 0.3}},
    "data": {"name": "synthetic_classification", "args": {"n_samples": 256}, "batch_size": 32},
    "optimizer": {"name": "adam", "lr": 0.01},
    "epochs": 3,
}


def reference_ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Guo et al.'s loop: bins (lower, upper], weight |B|/n, |accuracy − mean confidence|."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    total = 0.0
    for b in range(bins):
        lower, upper = b / bins, (b + 1) / bins
        inside = (confidence > lower) & (confidence <= upper)
        if inside.any():
            gap = correct[inside].mean() - confidence[inside].mean()
            total += inside.float().mean().item() * abs(gap.item())
    return total


def test_ece_and_nll_on_a_hand_example() -> None:
    """Confidences 0.9 ✓, 0.75 ✗, 0.62 ✓, 0.7 ✓ fall in four different bins:
    ECE = (0.1 + 0.75 + 0.38 + 0.3) / 4; NLL = −(ln 0.9 + ln 0.25 + ln 0.62 + ln 0.7) / 4."""
    probs = torch.tensor([[0.9, 0.1], [0.75, 0.25], [0.62, 0.38], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1])
    calibration = Calibration(torch.device("cpu"))
    calibration.update_probs(probs, labels)
    metrics = calibration.compute()
    assert metrics["val_ece"].item() == pytest.approx(1.53 / 4, abs=1e-6)
    nll = -(math.log(0.9) + math.log(0.25) + math.log(0.62) + math.log(0.7)) / 4
    assert metrics["val_nll"].item() == pytest.approx(nll, abs=1e-6)
    entropy = sum(-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in (0.9, 0.75, 0.62, 0.7))
    assert metrics["val_entropy"].item() == pytest.approx(entropy / 4, abs=1e-6)


def test_batched_ece_matches_the_reference_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2000, 10, generator=generator)
    labels = torch.randint(0, 10, (2000,), generator=generator)
    calibration = Calibration(torch.device("cpu"))
    for start in range(0, 2000, 300):  # uneven batches, as evaluation makes them
        calibration.update(logits[start : start + 300], labels[start : start + 300])
    metrics = calibration.compute()
    probs = logits.softmax(dim=1)
    assert metrics["val_ece"].item() == pytest.approx(reference_ece(probs, labels), abs=1e-5)
    expected_nll = nn.functional.cross_entropy(logits, labels).item()
    assert metrics["val_nll"].item() == pytest.approx(expected_nll, rel=1e-5)


def net_with_dropout() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)
    )


def test_mc_dropout_averages_stochastic_passes_and_leaves_batch_norm_alone() -> None:
    net = net_with_dropout()
    net.train()
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    net(x)  # give batch norm some running statistics
    running_mean = net[1].running_mean.clone()

    torch.manual_seed(7)
    metrics = mc_dropout_metrics(net, x, y, passes=20)

    # reference: the same 20 passes by hand, batch norm in eval, dropout in train
    torch.manual_seed(7)
    net.eval()
    net[3].train()
    with torch.no_grad():
        passes = torch.stack([net(x).softmax(dim=1) for _ in range(20)])
    mean = passes.mean(dim=0)
    assert metrics["mc_val_acc"].item() == pytest.approx(
        (mean.argmax(dim=1) == y).float().mean().item()
    )
    assert metrics["mc_val_nll"].item() == pytest.approx(
        -mean.gather(1, y[:, None]).log().mean().item(), rel=1e-5
    )
    assert metrics["mc_val_ece"].item() == pytest.approx(reference_ece(mean, y), abs=1e-5)
    predictive_entropy = -(mean * mean.log()).sum(dim=1)
    assert metrics["mc_val_entropy"].item() == pytest.approx(
        predictive_entropy.mean().item(), rel=1e-5
    )
    # BALD: H(mean) − mean of the passes' H; positive because the passes disagree
    expected_entropy = -(passes * passes.log()).sum(dim=2).mean(dim=0)
    information = (predictive_entropy - expected_entropy).mean().item()
    assert metrics["mc_val_mutual_information"].item() == pytest.approx(information, rel=1e-4)
    assert information > 0
    assert torch.equal(net[1].running_mean, running_mean)
    net.train()
    assert all(m.training for m in net.modules())  # the caller's mode is restored


def test_mc_dropout_refuses_a_net_without_dropout() -> None:
    with pytest.raises(ValueError, match="dropout"):
        mc_dropout_metrics(nn.Linear(3, 2), torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), 5)


def run(spec: dict, tmp_path: Path):  # type: ignore[no-untyped-def]
    sink = MemorySink(flush_seconds=3600)
    outcome = train(
        JobSpec.model_validate(spec), sink, data_root=tmp_path, device=torch.device("cpu")
    )
    return outcome, sink


def test_every_classification_job_reports_calibration(tmp_path: Path) -> None:
    outcome, sink = run(TINY, tmp_path)
    assert outcome.status == "succeeded"
    assert len(sink.series("val_ece")) == 3  # one per evaluation
    assert 0 < sink.series("val_ece")[-1] < 1
    # with plain cross-entropy the NLL is the validation loss
    assert sink.series("val_nll") == pytest.approx(sink.series("val_loss"), rel=1e-5)
    assert "val_ece" in outcome.summary["final"] and "mc_val_ece" not in outcome.summary["final"]


def test_regression_jobs_have_no_calibration(tmp_path: Path) -> None:
    spec = {**TINY, "data": {"name": "synthetic_regression", "args": {"n_samples": 128}}}
    _, sink = run(spec, tmp_path)
    assert sink.series("val_loss") and not sink.series("val_ece")


def test_mc_dropout_job_logs_its_metrics(tmp_path: Path) -> None:
    outcome, sink = run({**TINY, "eval": {"mc_dropout": 8}}, tmp_path)
    for name in ("mc_val_acc", "mc_val_ece", "mc_val_nll", "mc_val_entropy"):
        assert len(sink.series(name)) == 3, name
    assert outcome.summary["final"]["mc_val_acc"] > 0.6


def test_mc_dropout_spec_needs_dropout_and_classification() -> None:
    from pydantic import ValidationError

    no_dropout = {**TINY, "model": {"name": "mlp"}, "eval": {"mc_dropout": 8}}
    with pytest.raises(ValidationError, match="dropout"):
        JobSpec.model_validate(no_dropout)
    regression = {**TINY, "data": {"name": "synthetic_regression"}, "eval": {"mc_dropout": 8}}
    with pytest.raises(ValidationError, match="classification"):
        JobSpec.model_validate(regression)
