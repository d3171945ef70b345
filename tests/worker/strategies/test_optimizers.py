"""The shared optimizer table: every optimizer in the catalog, SAM and ASAM included, runs
through the same three checks.

1. it trains: a job with it runs through the engine and its training loss falls;
2. a state_dict save/load round trip gives the same next step as the uninterrupted run;
3. its reference: the engine's step (worker/engine/steps.py, through build_run) against the
   implementing library called directly (torch.optim, pytorch-optimizer), or against a
   closed form / the source documents' numbers where we wrote the method ourselves.

Adding an optimizer is one row here; `test_the_table_covers_the_catalog` fails until it exists.
"""

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytorch_optimizer
import torch
from torch import nn

from models.catalog import OPTIMIZER_ARGS
from models.spec import JobSpec
from worker.engine import train
from worker.engine.setup import TrainingRun, build_run
from worker.engine.sink import MemorySink
from worker.engine.steps import set_learning_rate, use_averaged_weights

CPU = torch.device("cpu")
DECAY = 0.1
CLASSIFICATION = {
    "name": "synthetic_classification",
    "args": {"n_samples": 160, "n_features": 8, "n_classes": 3, "class_sep": 2.0},
    "batch_size": 32,
}
POINTS = {"name": "points", "args": {"x": [[1.0], [2.0]], "y": [[3.0], [5.0]]}, "val_fraction": 0}
# For reference checks: a tiny tanh MLP on a regression problem (MSE), both param groups used.
REFERENCE_JOB = {
    "model": {"name": "mlp", "args": {"hidden": [3], "activation": "tanh"}},
    "data": {
        "name": "synthetic_regression",
        "args": {"n_samples": 16, "n_features": 4},
        "val_fraction": 0,
        "batch_size": 16,
    },
}

Reference = Callable[["Case", Path], None]


@dataclass
class Case:
    id: str
    optimizer: dict[str, Any]
    reference: Reference
    job: dict[str, Any] = field(default_factory=dict)  # overrides for the "it trains" job
    reference_check: str = ""  # what the reference is, for the report


def spec_of(optimizer: dict[str, Any], **overrides: Any) -> JobSpec:
    return JobSpec.model_validate({**REFERENCE_JOB, "optimizer": optimizer, **overrides})


def reference_groups(net: nn.Module, decay: float) -> list[dict[str, Any]]:
    weights = [p for p in net.parameters() if p.ndim >= 2]
    others = [p for p in net.parameters() if p.ndim < 2]
    return [{"params": weights, "weight_decay": decay}, {"params": others, "weight_decay": 0.0}]


def mse_closure(net: nn.Module, optimizer: torch.optim.Optimizer, x, y):  # type: ignore[no-untyped-def]
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        return loss

    return closure


def engine_vs(
    make_reference: Callable[[list[dict[str, Any]]], torch.optim.Optimizer],
    *,
    decay: float = DECAY,
    steps: int = 5,
    closure_driven: bool = False,
) -> Reference:
    """The engine's steps against the reference optimizer on a copy of the same net."""

    def check(case: Case, tmp_path: Path) -> None:
        spec = spec_of(case.optimizer, regularization={"weight_decay": decay})
        run = build_run(spec, data_root=tmp_path, device=CPU)
        twin = copy.deepcopy(run.net)
        reference = make_reference(reference_groups(twin, decay))
        x, y = next(run.data.epoch_batches())
        closure = mse_closure(twin, reference, x, y)
        for _ in range(steps):
            run.step(run, x, y)
            if closure_driven:
                reference.step(closure)
            else:
                closure()
                reference.step()
        for ours, theirs in zip(run.net.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)

    return check


def lion_closed_form(case: Case, tmp_path: Path) -> None:
    """Lion's first step from m = 0: w ← w(1 − lr·λ) − lr·sign(g)."""
    engine_vs(lambda g: pytorch_optimizer.Lion(g, lr=0.001, betas=(0.9, 0.99)))(case, tmp_path)
    spec = spec_of(case.optimizer, regularization={"weight_decay": DECAY})
    run = build_run(spec, data_root=tmp_path, device=CPU)
    x, y = next(run.data.epoch_batches())
    before = [p.detach().clone() for p in run.net.parameters()]
    nn.functional.mse_loss(run.net(x), y).backward()
    grads = [p.grad.clone() for p in run.net.parameters()]
    run.net.zero_grad()
    run.step(run, x, y)
    lr = case.optimizer["lr"]
    for p, w, g in zip(run.net.parameters(), before, grads, strict=True):
        decay = DECAY if p.ndim >= 2 else 0.0
        torch.testing.assert_close(p.detach(), w * (1 - lr * decay) - lr * torch.sign(g))


def muon_split(case: Case, tmp_path: Path) -> None:
    """Muon on the hidden matrix, AdamW on the head and the biases, as two torch optimizers."""

    def reference(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        hidden, head = groups[0]["params"]
        muon = torch.optim.Muon(
            [hidden], lr=0.02, weight_decay=DECAY, adjust_lr_fn="match_rms_adamw"
        )
        adamw = torch.optim.AdamW(
            [
                {"params": [head], "weight_decay": DECAY},
                {"params": groups[1]["params"], "weight_decay": 0.0},
            ],
            lr=0.02,
        )
        return Both(muon, adamw)

    engine_vs(reference)(case, tmp_path)


class Both(torch.optim.Optimizer):
    def __init__(self, *parts: torch.optim.Optimizer):
        self.parts = parts
        super().__init__([g for part in parts for g in part.param_groups], {})

    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        for part in self.parts:
            part.step()


def schedule_free_twin(make: Callable[..., torch.optim.Optimizer]) -> Reference:
    """Library twin for the training iterate y, and the evaluation switch: eval() moves the
    weights to the average x and train() brings y back exactly."""

    def check(case: Case, tmp_path: Path) -> None:
        engine_vs(make)(case, tmp_path)
        run = build_run(spec_of(case.optimizer), data_root=tmp_path, device=CPU)
        x, y = next(run.data.epoch_batches())
        for _ in range(3):
            run.step(run, x, y)
        y_weights = [p.detach().clone() for p in run.net.parameters()]
        use_averaged_weights(run, True)
        assert any(
            not torch.equal(p, w) for p, w in zip(run.net.parameters(), y_weights, strict=True)
        )
        use_averaged_weights(run, False)
        for p, w in zip(run.net.parameters(), y_weights, strict=True):
            torch.testing.assert_close(p.detach(), w)

    return check


def gd_hand_iterations(case: Case, tmp_path: Path) -> None:
    """002: points (1,3), (2,5), y = a·x + b from (0, 0), lr 0.1 — the document's iterates."""
    spec = JobSpec.model_validate(
        {"model": {"name": "linear"}, "data": POINTS, "optimizer": case.optimizer, "init": "zeros"}
    )
    run = build_run(spec, data_root=tmp_path, device=CPU)
    linear = run.net[1]
    iterates = []
    for x, y in [next(run.data.epoch_batches()) for _ in range(3)]:
        run.step(run, x, y)
        iterates.append((linear.weight.item(), linear.bias.item()))
    assert iterates == [
        pytest.approx((1.3, 0.8)),
        pytest.approx((1.71, 1.05)),
        pytest.approx((1.84, 1.13), abs=5e-3),  # 002 rounds 1.127 to 1.13
    ]


def lbfgs_twin_and_minimum(case: Case, tmp_path: Path) -> None:
    engine_vs(
        lambda g: torch.optim.LBFGS(
            [p for group in g for p in group["params"]],
            lr=1.0,
            history_size=10,
            line_search_fn="strong_wolfe",
        ),
        decay=0.0,
        closure_driven=True,
    )(case, tmp_path)
    # full batch on a linear least-squares problem: the exact minimum within a few steps
    minimum_of_points(case, tmp_path, steps=3, tolerance=1e-4)


def minimum_of_points(case: Case, tmp_path: Path, *, steps: int, tolerance: float) -> None:
    """y = 2x + 1 through (1,3), (2,5): the known optimum a = 2, b = 1. The step size follows
    a cosine schedule, as a search would be run."""
    spec = JobSpec.model_validate(
        {
            "model": {"name": "linear"},
            "data": POINTS,
            "optimizer": case.optimizer,
            "schedule": {"name": "cosine"},
            "max_steps": steps,
        }
    )
    torch.manual_seed(0)
    run = build_run(spec, data_root=tmp_path, device=CPU)
    x, y = next(run.data.epoch_batches())
    for t in range(steps):
        set_learning_rate(run.optimizer, run.schedule(t))
        run.step(run, x, y)
    linear = run.net[1]
    assert linear.weight.item() == pytest.approx(2.0, abs=tolerance)
    assert linear.bias.item() == pytest.approx(1.0, abs=tolerance)


def newton_exact(case: Case, tmp_path: Path) -> None:
    """On least squares the loss is quadratic: one undamped step lands on the lstsq solution."""
    spec = JobSpec.model_validate(
        {
            "model": {"name": "linear"},
            "data": {"name": "synthetic_regression", "args": {"n_samples": 40, "n_features": 5}},
            "optimizer": case.optimizer,
        }
    )
    run = build_run(spec, data_root=tmp_path, device=CPU)
    x, y = next(run.data.epoch_batches())
    run.step(run, x, y)
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    solution = torch.linalg.lstsq(design, y.double()).solution.squeeze(1)
    linear = run.net[1]
    ours = torch.cat([linear.weight.detach().squeeze(0), linear.bias.detach()]).double()
    torch.testing.assert_close(ours, solution, rtol=1e-4, atol=1e-4)


def search_reaches_optimum(steps: int, tolerance: float) -> Reference:
    def check(case: Case, tmp_path: Path) -> None:
        minimum_of_points(case, tmp_path, steps=steps, tolerance=tolerance)

    return check


def sam_two_pass(adaptive: bool) -> Reference:
    """The engine's two passes against pytorch-optimizer's SAM (the authors' formulation)."""

    def check(case: Case, tmp_path: Path) -> None:
        spec = spec_of(case.optimizer)
        run = build_run(spec, data_root=tmp_path, device=CPU)
        twin = copy.deepcopy(run.net)
        rho = case.optimizer["sam"]["rho"]
        reference = pytorch_optimizer.SAM(
            twin.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, lr=0.1, momentum=0.9
        )
        x, y = next(run.data.epoch_batches())
        closure = mse_closure(twin, reference, x, y)
        for _ in range(4):
            run.step(run, x, y)
            closure()
            reference.step(closure)
        for ours, theirs in zip(run.net.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(ours, theirs)

    return check


T = torch.optim
CASES = [
    Case(
        "sgd",
        {"name": "sgd", "lr": 0.1, "args": {"momentum": 0.9, "nesterov": True}},
        engine_vs(lambda g: T.SGD(g, lr=0.1, momentum=0.9, nesterov=True)),
        reference_check="torch.optim.SGD (Nesterov, coupled decay)",
    ),
    Case(
        "gd",
        {"name": "gd", "lr": 0.1},
        gd_hand_iterations,
        reference_check="002's hand iterations (1.3, 0.8) → (1.71, 1.05) → (1.84, 1.13)",
    ),
    Case(
        "adagrad",
        {"name": "adagrad", "lr": 0.1},
        engine_vs(lambda g: T.Adagrad(g, lr=0.1)),
        reference_check="torch.optim.Adagrad",
    ),
    Case(
        "adadelta",
        {"name": "adadelta", "lr": 1.0},
        engine_vs(lambda g: T.Adadelta(g, lr=1.0)),
        reference_check="torch.optim.Adadelta",
    ),
    Case(
        "rmsprop",
        {"name": "rmsprop", "lr": 0.01, "args": {"centered": True, "momentum": 0.5}},
        engine_vs(lambda g: T.RMSprop(g, lr=0.01, centered=True, momentum=0.5)),
        reference_check="torch.optim.RMSprop (centered, momentum)",
    ),
    Case(
        "adam",
        {"name": "adam", "lr": 0.01},
        engine_vs(lambda g: T.Adam(g, lr=0.01)),
        reference_check="torch.optim.Adam (coupled L2)",
    ),
    Case(
        "adam_amsgrad",
        {"name": "adam", "lr": 0.01, "args": {"amsgrad": True}},
        engine_vs(lambda g: T.Adam(g, lr=0.01, amsgrad=True)),
        reference_check="torch.optim.Adam(amsgrad)",
    ),
    Case(
        "adamw",
        {"name": "adamw", "lr": 0.01},
        engine_vs(lambda g: T.AdamW(g, lr=0.01)),
        reference_check="torch.optim.AdamW (decoupled)",
    ),
    Case(
        "nadam",
        {"name": "nadam", "lr": 0.01},
        engine_vs(lambda g: T.NAdam(g, lr=0.01)),
        reference_check="torch.optim.NAdam",
    ),
    Case(
        "radam",
        {"name": "radam", "lr": 0.01},
        engine_vs(lambda g: T.RAdam(g, lr=0.01)),
        reference_check="torch.optim.RAdam",
    ),
    Case(
        "adamax",
        {"name": "adamax", "lr": 0.02},
        engine_vs(lambda g: T.Adamax(g, lr=0.02)),
        reference_check="torch.optim.Adamax",
    ),
    Case(
        "asgd",
        {"name": "asgd", "lr": 0.1},
        engine_vs(lambda g: T.ASGD(g, lr=0.1)),
        reference_check="torch.optim.ASGD",
    ),
    Case(
        "rprop",
        {"name": "rprop", "lr": 0.01},
        engine_vs(lambda g: T.Rprop(g, lr=0.01), decay=0.0),
        reference_check="torch.optim.Rprop (full batch)",
    ),
    Case(
        "adafactor",
        {"name": "adafactor", "lr": 0.01},
        engine_vs(lambda g: T.Adafactor(g, lr=0.01)),
        reference_check="torch.optim.Adafactor",
    ),
    Case(
        "lbfgs",
        {"name": "lbfgs", "lr": 1.0, "args": {"history_size": 10}},
        lbfgs_twin_and_minimum,
        job={"max_steps": 4},
        reference_check="torch.optim.LBFGS (strong Wolfe); exact least-squares minimum",
    ),
    Case(
        "muon",
        {"name": "muon", "lr": 0.02},
        muon_split,
        reference_check="torch.optim.Muon + AdamW split",
    ),
    Case(
        "lion",
        {"name": "lion", "lr": 0.001},
        lion_closed_form,
        job={"optimizer": {"name": "lion", "lr": 0.01}},
        reference_check="first step −lr·sign(g); pytorch-optimizer Lion",
    ),
    Case(
        "lamb",
        {"name": "lamb", "lr": 0.01},
        engine_vs(lambda g: pytorch_optimizer.Lamb(g, lr=0.01, max_grad_norm=0.0)),
        reference_check="pytorch-optimizer Lamb",
    ),
    Case(
        "schedule_free_adamw",
        {"name": "schedule_free_adamw", "lr": 0.01},
        schedule_free_twin(lambda g: pytorch_optimizer.ScheduleFreeAdamW(g, lr=0.01)),
        reference_check="pytorch-optimizer ScheduleFreeAdamW; eval()/train() switch",
    ),
    Case(
        "schedule_free_sgd",
        {"name": "schedule_free_sgd", "lr": 0.1},
        schedule_free_twin(lambda g: pytorch_optimizer.ScheduleFreeSGD(g, lr=0.1)),
        reference_check="pytorch-optimizer ScheduleFreeSGD; eval()/train() switch",
    ),
    Case(
        "soap",
        {"name": "soap", "lr": 0.01},
        engine_vs(lambda g: pytorch_optimizer.SOAP(g, lr=0.01)),
        reference_check="pytorch-optimizer SOAP",
    ),
    Case(
        "newton",
        {"name": "newton", "lr": 1.0},
        newton_exact,
        job={"model": {"name": "linear"}, "data": POINTS, "max_steps": 3},
        reference_check="one step to the exact least-squares minimum (lstsq)",
    ),
    Case(
        "simulated_annealing",
        {
            "name": "simulated_annealing",
            "lr": 0.05,
            "args": {"initial_temperature": 0.1, "cooling": 0.99},
        },
        search_reaches_optimum(steps=3000, tolerance=0.1),
        job={"model": {"name": "linear"}, "data": POINTS, "max_steps": 300},
        reference_check="reaches a=2, b=1 on 002's points",
    ),
    Case(
        "evolution_strategies",
        {"name": "evolution_strategies", "lr": 0.05, "args": {"population": 16, "sigma": 0.05}},
        search_reaches_optimum(steps=400, tolerance=0.1),
        job={"model": {"name": "linear"}, "data": POINTS, "max_steps": 100},
        reference_check="reaches a=2, b=1 on 002's points",
    ),
    Case(
        "sam",
        {"name": "sgd", "lr": 0.1, "args": {"momentum": 0.9}, "sam": {"rho": 0.05}},
        sam_two_pass(adaptive=False),
        reference_check="two passes vs pytorch-optimizer SAM",
    ),
    Case(
        "asam",
        {
            "name": "sgd",
            "lr": 0.1,
            "args": {"momentum": 0.9},
            "sam": {"rho": 0.5, "adaptive": True},
        },
        sam_two_pass(adaptive=True),
        reference_check="two passes vs pytorch-optimizer SAM(adaptive)",
    ),
]
LEARNING_RATES = {"sgd": 0.2, "gd": 0.5, "asgd": 0.2, "rprop": 0.01, "schedule_free_sgd": 0.5}


def test_the_table_covers_the_catalog() -> None:
    assert set(OPTIMIZER_ARGS) <= {case.optimizer["name"] for case in CASES}
    assert {"sam", "asam"} <= {case.id for case in CASES}


def trains_job(case: Case) -> dict[str, Any]:
    optimizer = dict(case.optimizer)
    if case.optimizer["name"] in LEARNING_RATES:
        optimizer["lr"] = LEARNING_RATES[case.optimizer["name"]]
    job = {
        "model": {"name": "mlp", "args": {"hidden": [16]}},
        "data": CLASSIFICATION,
        "optimizer": optimizer,
        "max_steps": 40,
    }
    return {**job, **case.job}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_job_trains(case: Case, tmp_path: Path) -> None:
    sink = MemorySink(flush_seconds=3600)
    outcome = train(JobSpec.model_validate(trains_job(case)), sink, data_root=tmp_path, device=CPU)
    losses = sink.series("train_loss")
    assert outcome.status == "succeeded", outcome.error
    assert all(math.isfinite(v) for v in losses)
    tail = sum(losses[-3:]) / 3
    assert tail < 0.8 * losses[0], f"loss {losses[0]:.4f} → {tail:.4f}"


def take_steps(run: TrainingRun, x, y, steps: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(steps):
        run.step(run, x, y)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_dict_round_trip_gives_the_same_next_step(case: Case, tmp_path: Path) -> None:
    spec = JobSpec.model_validate({**trains_job(case), "regularization": {"weight_decay": 0.01}})
    if spec.optimizer.args.kind != "gradient":
        spec = spec.model_copy(
            update={"regularization": spec.regularization.model_copy(update={"weight_decay": 0.0})}
        )
    torch.manual_seed(0)
    first = build_run(spec, data_root=tmp_path, device=CPU)
    x, y = next(first.data.epoch_batches())
    take_steps(first, x, y, 3)
    saved = copy.deepcopy((first.net.state_dict(), first.optimizer.state_dict()))
    torch.manual_seed(1)
    take_steps(first, x, y, 1)
    second = build_run(spec, data_root=tmp_path, device=CPU)
    second.net.load_state_dict(saved[0])
    second.optimizer.load_state_dict(saved[1])
    torch.manual_seed(1)
    take_steps(second, x, y, 1)
    for a, b in zip(first.net.parameters(), second.net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_its_reference(case: Case, tmp_path: Path) -> None:
    case.reference(case, tmp_path)


def test_newton_damped_steps_follow_002() -> None:
    """002: f(x) = x² − 4 from x₀ = 3; a full step lands on the minimum 0 at once, a step
    damped to ½ goes 3 → 1.5 → 0.75."""
    from worker.strategies.optimizers.newton import Newton, newton_closure

    class Scalar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.x = nn.Parameter(torch.tensor([3.0]))

        def forward(self, _: torch.Tensor) -> torch.Tensor:
            return self.x

    def objective(out: torch.Tensor, values: dict) -> torch.Tensor:
        return (out**2 - 4).sum()

    for lr, expected in ((1.0, [0.0, 0.0]), (0.5, [1.5, 0.75])):
        model = Scalar()
        newton = Newton(model.parameters(), lr=lr)
        seen = []
        for _ in range(2):
            newton.step(newton_closure(model, [model.x], torch.zeros(1), objective))
            seen.append(model.x.item())
        assert seen == pytest.approx(expected)
