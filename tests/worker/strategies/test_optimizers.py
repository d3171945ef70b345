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
    mode: str = "auto",
    steps: int = 5,
    closure_driven: bool = False,
) -> Reference:
    """The engine's steps against the reference optimizer on a copy of the same net."""

    def check(case: Case, tmp_path: Path) -> None:
        spec = spec_of(case.optimizer, regularization={"weight_decay": decay, "decay": mode})
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


class PaperLion(torch.optim.Optimizer):
    """Lion as Chen et al. 2023 (Algorithm 2) write it, per step:
    c = β₁m + (1−β₁)g;  w ← w − lr·(sign(c) + λw);  m ← β₂m + (1−β₂)g."""

    def __init__(self, groups: list[dict[str, Any]], lr: float, betas: tuple[float, float]):
        super().__init__(groups, {"lr": lr, "betas": betas, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        for group in self.param_groups:
            (beta1, beta2), lr, lam = group["betas"], group["lr"], group["weight_decay"]
            for p in group["params"]:
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                g = p.grad
                c = beta1 * m + (1 - beta1) * g
                p.copy_(p - lr * (torch.sign(c) + lam * p))
                m.copy_(beta2 * m + (1 - beta2) * g)


class LambAsPytorchOptimizer(torch.optim.Optimizer):
    """LAMB (You et al. 2020, Algorithm 2) in the variant pytorch-optimizer 4.1's `Lamb` computes
    with the arguments our registry passes (grad_averaging, no rectify, no pre_norm, no
    max_grad_norm scaling, adam=False). Per tensor, step t:
        m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
        decoupled: w ← w(1 − lr·λ);  r = m/(√v + ε)
        coupled:   r = m/(√v + ε) + λw                       (the paper's r)
        ratio = min(‖w‖, 10)/(‖r‖ + ε), or 1 where ‖w‖ = 0 or ‖r‖ = 0
        w ← w − lr/(1−β₁ᵗ)·ratio·r
    Where it departs from the paper: only the first moment is bias-corrected (through the step
    size; v is used as is, no 1/(1−β₂ᵗ)); φ is a clamp at 10 and ε is added to ‖r‖ as well as
    to √v; the ratio falls back to 1 on a zero norm; and in the decoupled mode (our default for
    lamb) λw is not in r: w shrinks by lr·λ before the step, outside the trust ratio, and ‖w‖
    is the norm after that shrink."""

    def __init__(
        self,
        groups: list[dict[str, Any]],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        decoupled: bool,
    ):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": 0.0}
        super().__init__(groups, defaults)
        self.decoupled = decoupled

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        for group in self.param_groups:
            (beta1, beta2), lr, eps = group["betas"], group["lr"], group["eps"]
            lam = group["weight_decay"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                g = p.grad
                m = state["m"] = beta1 * state["m"] + (1 - beta1) * g
                v = state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
                if self.decoupled:
                    p.copy_(p * (1 - lr * lam))
                r = m / (v.sqrt() + eps)
                if not self.decoupled:
                    r = r + lam * p
                w_norm, r_norm = min(p.norm().item(), 10.0), r.norm().item()
                ratio = 1.0 if w_norm == 0 or r_norm == 0 else w_norm / (r_norm + eps)
                p.copy_(p - lr / (1 - beta1 ** state["t"]) * ratio * r)


def lamb_reference(case: Case, tmp_path: Path) -> None:
    for decoupled in (True, False):
        engine_vs(
            lambda g, d=decoupled: LambAsPytorchOptimizer(
                g, lr=0.01, betas=(0.9, 0.999), eps=1e-6, decoupled=d
            ),
            mode="decoupled" if decoupled else "coupled",
        )(case, tmp_path)


def lion_closed_form(case: Case, tmp_path: Path) -> None:
    """Five steps against the paper's update rule; the first step from m = 0 in closed form:
    w ← w(1 − lr·λ) − lr·sign(g)."""
    engine_vs(lambda g: PaperLion(g, lr=0.03, betas=(0.9, 0.99)))(case, tmp_path)
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
        "sgd_plain",
        {"name": "sgd", "lr": 0.1},
        engine_vs(lambda g: T.SGD(g, lr=0.1)),
        reference_check="torch.optim.SGD (no momentum, coupled decay)",
    ),
    Case(
        "sgd_momentum",
        {"name": "sgd", "lr": 0.1, "args": {"momentum": 0.9}},
        engine_vs(lambda g: T.SGD(g, lr=0.1, momentum=0.9)),
        reference_check="torch.optim.SGD (heavy-ball momentum 0.9, coupled decay)",
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
        "rmsprop_plain",
        {"name": "rmsprop", "lr": 0.01},
        engine_vs(lambda g: T.RMSprop(g, lr=0.01, alpha=0.99, eps=1e-8)),
        reference_check="torch.optim.RMSprop (not centered, no momentum; torch's defaults)",
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
        {"name": "lion", "lr": 0.03},
        lion_closed_form,
        job={"optimizer": {"name": "lion", "lr": 0.01}},
        reference_check="first step −lr·sign(g); the paper's update rule over 5 steps",
    ),
    Case(
        "lamb",
        {"name": "lamb", "lr": 0.01},
        lamb_reference,
        reference_check="hand-written LAMB, pytorch-optimizer's variant, both decay modes",
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


def test_momentum_step_follows_002(tmp_path: Path) -> None:
    """002, Classical Momentum: v = βv + g, w ← w − lr·v, β = 0.9, lr 0.1, from a = 1.3,
    b = 0.8 with zero velocity on the points (1,3), (2,5): g = (−4.1, −2.5) → (1.71, 1.05).
    The second step is worked out here from the same formulas."""
    points = [(1.0, 3.0), (2.0, 5.0)]
    optimizer = {"name": "sgd", "lr": 0.1, "args": {"momentum": 0.9}}
    spec = JobSpec.model_validate(
        {"model": {"name": "linear"}, "data": POINTS, "optimizer": optimizer, "init": "zeros"}
    )
    run = build_run(spec, data_root=tmp_path, device=CPU)
    linear = run.net[1]
    with torch.no_grad():
        linear.weight.fill_(1.3)
        linear.bias.fill_(0.8)

    def gradient(a: float, b: float) -> tuple[float, float]:  # of the mean squared error
        residuals = [(a * x + b - y, x) for x, y in points]
        n = len(points)
        return sum(2 * r * x for r, x in residuals) / n, sum(2 * r for r, _ in residuals) / n

    assert gradient(1.3, 0.8) == pytest.approx((-4.1, -2.5))
    a, b, v_a, v_b, beta, lr = 1.3, 0.8, 0.0, 0.0, 0.9, 0.1
    expected = []
    for _ in range(2):
        g_a, g_b = gradient(a, b)
        v_a, v_b = beta * v_a + g_a, beta * v_b + g_b
        a, b = a - lr * v_a, b - lr * v_b
        expected.append((a, b))
    assert expected[0] == pytest.approx((1.71, 1.05))
    seen = []
    for _ in range(2):
        run.step(run, *next(run.data.epoch_batches()))
        seen.append((linear.weight.item(), linear.bias.item()))
    assert seen[0] == pytest.approx((1.71, 1.05))
    assert seen == [pytest.approx(e, rel=1e-6) for e in expected]
