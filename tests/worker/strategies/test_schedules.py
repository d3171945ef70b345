"""Every schedule against its closed form at chosen steps and, step by step, against its
torch.optim.lr_scheduler twin; warmup in front of each; ReduceLROnPlateau inside a job."""

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from models.catalog import SCHEDULE_ARGS
from models.catalog.schedules import CyclicArgs
from models.spec import JobSpec
from worker.engine import train
from worker.engine.sink import MemorySink
from worker.strategies.schedules import SCHEDULES, build_schedule

BASE = {"model": {"name": "mlp"}, "data": {"name": "digits"}}
LR, TOTAL = 0.5, 120


def schedule_of(schedule: dict, lr: float = LR, total: int = TOTAL):  # type: ignore[no-untyped-def]
    spec = JobSpec.model_validate(
        {**BASE, "optimizer": {"name": "sgd", "lr": lr}, "schedule": schedule}
    )
    return build_schedule(spec.schedule, lr, total)


def torch_rates(make: Callable[[torch.optim.Optimizer], object], steps: int) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = make(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()  # type: ignore[attr-defined]
    return rates


TWINS = {
    "constant": ({"name": "constant"}, lambda o: lr_scheduler.ConstantLR(o, factor=1.0)),
    "step": (
        {"name": "step", "args": {"step_size": 25, "gamma": 0.5}},
        lambda o: lr_scheduler.StepLR(o, step_size=25, gamma=0.5),
    ),
    "multistep": (
        {"name": "multistep", "args": {"milestones": [30, 80], "gamma": 0.1}},
        lambda o: lr_scheduler.MultiStepLR(o, milestones=[30, 80], gamma=0.1),
    ),
    "exponential": (
        {"name": "exponential", "args": {"gamma": 0.97}},
        lambda o: lr_scheduler.ExponentialLR(o, gamma=0.97),
    ),
    "linear": (
        {"name": "linear", "args": {"lr_min": 0.05}},
        lambda o: lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=TOTAL),
    ),
    "polynomial": (
        {"name": "polynomial", "args": {"power": 2.0}},
        lambda o: lr_scheduler.PolynomialLR(o, total_iters=TOTAL, power=2.0),
    ),
    "cosine": (
        {"name": "cosine", "args": {"lr_min": 0.05}},
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=TOTAL, eta_min=0.05),
    ),
    "cosine_restarts": (
        {"name": "cosine_restarts", "args": {"period": 10, "multiplier": 2, "lr_min": 0.01}},
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=0.01),
    ),
    "onecycle": (
        {"name": "onecycle", "args": {"pct_start": 0.25}},
        lambda o: lr_scheduler.OneCycleLR(
            o, max_lr=LR, total_steps=TOTAL, pct_start=0.25, cycle_momentum=False
        ),
    ),
    "cyclic": (
        {"name": "cyclic", "args": {"lr_min": 0.1, "step_size_up": 15, "mode": "triangular2"}},
        lambda o: lr_scheduler.CyclicLR(
            o, base_lr=0.1, max_lr=LR, step_size_up=15, mode="triangular2", cycle_momentum=False
        ),
    ),
}
EXTRA_TWINS = {
    "cosine_restarts_fixed": (
        {"name": "cosine_restarts", "args": {"period": 17}},
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=17),
    ),
    "onecycle_linear_three_phase": (
        {"name": "onecycle", "args": {"anneal": "linear", "three_phase": True}},
        lambda o: lr_scheduler.OneCycleLR(
            o,
            max_lr=LR,
            total_steps=TOTAL,
            anneal_strategy="linear",
            three_phase=True,
            cycle_momentum=False,
        ),
    ),
    "cyclic_exp_range": (
        {
            "name": "cyclic",
            "args": {
                "lr_min": 0.1,
                "step_size_up": 10,
                "step_size_down": 20,
                "mode": "exp_range",
                "gamma": 0.99,
            },
        },
        lambda o: lr_scheduler.CyclicLR(
            o,
            base_lr=0.1,
            max_lr=LR,
            step_size_up=10,
            step_size_down=20,
            mode="exp_range",
            gamma=0.99,
            cycle_momentum=False,
        ),
    ),
    "cyclic_triangular": (
        {"name": "cyclic", "args": {"lr_min": 0.0, "step_size_up": 7}},
        lambda o: lr_scheduler.CyclicLR(
            o, base_lr=0.0, max_lr=LR, step_size_up=7, cycle_momentum=False
        ),
    ),
}


def test_every_step_schedule_has_a_twin() -> None:
    assert set(SCHEDULE_ARGS) - {"plateau"} == set(TWINS)


@pytest.mark.parametrize("name", [*TWINS, *EXTRA_TWINS])
def test_matches_torch_lr_scheduler_at_every_step(name: str) -> None:
    schedule_spec, make = {**TWINS, **EXTRA_TWINS}[name]
    schedule = schedule_of(schedule_spec)
    ours = [schedule(t) for t in range(TOTAL)]
    assert ours == pytest.approx(torch_rates(make, TOTAL), rel=1e-9, abs=1e-12)


def test_closed_forms_at_chosen_steps() -> None:
    cosine = schedule_of({"name": "cosine", "args": {"lr_min": 0.1}}, lr=1.0, total=100)
    for t in (0, 25, 50, 75, 100):  # 000: lr_min + ½(lr_max − lr_min)(1 + cos(π·t/T))
        assert cosine(t) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * t / 100)))
    assert cosine(50) == pytest.approx(0.55)
    step = schedule_of({"name": "step", "args": {"step_size": 10, "gamma": 0.5}}, lr=0.8)
    assert [step(t) for t in (0, 9, 10, 25)] == pytest.approx([0.8, 0.8, 0.4, 0.2])
    exponential = schedule_of({"name": "exponential", "args": {"gamma": 0.9}}, lr=1.0)
    assert exponential(3) == pytest.approx(0.729)
    linear = schedule_of({"name": "linear", "args": {"lr_min": 0.2}}, lr=1.0, total=100)
    assert [linear(0), linear(50), linear(100), linear(150)] == pytest.approx([1, 0.6, 0.2, 0.2])
    poly = schedule_of(
        {"name": "polynomial", "args": {"power": 2, "lr_min": 0.1}}, lr=1.0, total=10
    )
    assert poly(5) == pytest.approx(0.1 + 0.9 * 0.25)
    sgdr = schedule_of({"name": "cosine_restarts", "args": {"period": 10, "multiplier": 2}}, lr=1.0)
    assert [sgdr(0), sgdr(5), sgdr(10), sgdr(20), sgdr(30)] == pytest.approx([1, 0.5, 1, 0.5, 1])
    triangle = schedule_of({"name": "cyclic", "args": {"lr_min": 0.0, "step_size_up": 10}}, lr=1.0)
    assert [triangle(0), triangle(5), triangle(10), triangle(15), triangle(20)] == pytest.approx(
        [0, 0.5, 1, 0.5, 0]
    )
    # peak at step pct_start·T − 1 = 50 (OneCycleLR's convention), last step T − 1 = 101
    one = schedule_of({"name": "onecycle", "args": {"pct_start": 0.5, "div_factor": 10}}, 1.0, 102)
    assert [one(0), one(50), one(101)] == pytest.approx([0.1, 1.0, 0.1 / 1e4])


@pytest.mark.parametrize("name", list(TWINS))
def test_warmup_ramps_then_hands_over_to_the_shifted_schedule(name: str) -> None:
    inner = schedule_of(TWINS[name][0], total=TOTAL - 20)
    warmed = schedule_of({**TWINS[name][0], "warmup_steps": 20}, total=TOTAL)
    assert [warmed(t) for t in range(20)] == pytest.approx(
        [inner(0) * (t + 1) / 20 for t in range(20)]
    )
    assert [warmed(t) for t in range(20, TOTAL)] == pytest.approx(
        [inner(t) for t in range(TOTAL - 20)]
    )


def test_warmup_then_cosine_is_the_usual_curve() -> None:
    schedule = schedule_of({"name": "cosine", "warmup_steps": 10}, lr=1.0, total=110)
    assert [schedule(t) for t in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.5)


def test_plateau_follows_torch_on_the_same_metrics() -> None:
    plateau = schedule_of(
        {"name": "plateau", "args": {"patience": 2, "factor": 0.5, "lr_min": 0.1}}, lr=1.0
    )
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = lr_scheduler.ReduceLROnPlateau(optimizer, patience=2, factor=0.5, min_lr=0.1)
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.94, 0.96, 0.97, 0.98, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    ours, theirs = [], []
    for loss in losses:
        plateau.observe({"val_loss": torch.tensor(loss)})
        reference.step(loss)
        ours.append(plateau(0))
        theirs.append(optimizer.param_groups[0]["lr"])
    assert ours == pytest.approx(theirs)
    assert min(ours) == pytest.approx(0.125)  # 1 → 0.5 → 0.25 → 0.125: reduced three times


def test_plateau_in_a_job_cuts_the_rate_when_accuracy_stalls(tmp_path: Path) -> None:
    spec = {
        "model": {"name": "mlp", "args": {"hidden": [16]}},
        "data": {"name": "digits", "batch_size": 128},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "schedule": {
            "name": "plateau",
            "warmup_steps": 3,
            "args": {"metric": "val_acc", "patience": 0, "factor": 0.5, "threshold": 0.5},
        },
        "eval": {"every_steps": 4},
        "max_steps": 24,
    }
    sink = MemorySink(flush_seconds=3600)
    train(JobSpec.model_validate(spec), sink, data_root=tmp_path, device=torch.device("cpu"))
    rates = sink.series("lr")
    # Warmup, then 0.05. Evaluations at steps 4, 8, …, 24; the first sets the best accuracy,
    # a 50% relative gain never comes, so with patience 0 every later one halves the rate.
    assert rates[:3] == pytest.approx([0.05 / 3, 0.1 / 3, 0.05])
    assert rates[3:8] == pytest.approx([0.05] * 5)
    assert rates[8:12] == pytest.approx([0.025] * 4)
    assert rates[-1] == pytest.approx(0.05 * 0.5**4)


@pytest.mark.parametrize("name", [*TWINS, *EXTRA_TWINS])
def test_a_job_logs_the_scheduled_rate_each_step(name: str, tmp_path: Path) -> None:
    """Every step schedule (cyclic in all three modes) inside a job: the rate the engine sets
    and logs at each step is torch.optim.lr_scheduler's."""
    schedule_spec, make = {**TWINS, **EXTRA_TWINS}[name]
    spec = {
        "model": {"name": "linear"},
        "data": {
            "name": "synthetic_classification",
            "args": {"n_samples": 40, "n_features": 4, "n_classes": 2},
            "batch_size": 32,
        },
        "optimizer": {"name": "sgd", "lr": LR},
        "schedule": schedule_spec,
        "max_steps": TOTAL,
    }
    sink = MemorySink(flush_seconds=3600)
    outcome = train(
        JobSpec.model_validate(spec), sink, data_root=tmp_path, device=torch.device("cpu")
    )
    assert outcome.status == "succeeded", outcome.error
    assert sink.series("lr") == pytest.approx(torch_rates(make, TOTAL), rel=1e-6)


def test_the_job_table_covers_every_schedule_in_the_registry() -> None:
    specs = [spec for spec, _ in [*TWINS.values(), *EXTRA_TWINS.values()]]
    assert set(SCHEDULES) - {"plateau"} == {spec["name"] for spec in specs}
    cyclic = [CyclicArgs.model_validate(s["args"]) for s in specs if s["name"] == "cyclic"]
    assert {args.mode for args in cyclic} == {"triangular", "triangular2", "exp_range"}


def test_plateau_state_survives_a_checkpoint_even_behind_warmup() -> None:
    spec = {"name": "plateau", "warmup_steps": 2, "args": {"patience": 0, "factor": 0.5}}
    first = schedule_of(spec, lr=1.0)
    for loss in (1.0, 2.0, 3.0):
        first.observe({"val_loss": torch.tensor(loss)})
    resumed = schedule_of(spec, lr=1.0)
    resumed.load_state_dict(first.state_dict())
    assert resumed(10) == first(10) == pytest.approx(0.25)
    first.observe({"val_loss": torch.tensor(4.0)})
    resumed.observe({"val_loss": torch.tensor(4.0)})
    assert resumed(10) == first(10) == pytest.approx(0.125)
