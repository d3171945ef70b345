"""Weight decay coupled vs decoupled, proximal L1, label smoothing, gradient and weight noise."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from models.spec import JobSpec
from worker.engine import train
from worker.engine.setup import build_run
from worker.engine.sink import MemorySink
from worker.strategies.regularizers import resolve_decay, soft_threshold

CPU = torch.device("cpu")
JOB = {
    "model": {"name": "mlp", "args": {"hidden": [4], "activation": "tanh"}},
    "data": {
        "name": "synthetic_regression",
        "args": {"n_samples": 16, "n_features": 3},
        "val_fraction": 0,
        "batch_size": 16,
    },
}


def run_of(tmp_path: Path, optimizer: dict, **overrides):  # type: ignore[no-untyped-def]
    spec = JobSpec.model_validate({**JOB, "optimizer": optimizer, **overrides})
    return build_run(spec, data_root=tmp_path, device=CPU)


def steps(run, n: int = 5) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    x, y = next(run.data.epoch_batches())
    for _ in range(n):
        run.step(run, x, y)
    return [p.detach().clone() for p in run.net.parameters()]


def reference(run, make, n: int = 5) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """The same steps with a torch optimizer built by `make(weights, others)` on a copy."""
    net = copy.deepcopy(run.net)
    weights = [p for p in net.parameters() if p.ndim >= 2]
    others = [p for p in net.parameters() if p.ndim < 2]
    optimizer = make(weights, others)
    x, y = next(run.data.epoch_batches())
    for _ in range(n):
        optimizer.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def groups(weights, others, decay):  # type: ignore[no-untyped-def]
    return [{"params": weights, "weight_decay": decay}, {"params": others, "weight_decay": 0.0}]


def test_decay_modes_resolve_per_optimizer() -> None:
    def mode(name: str, decay: str = "auto"):  # type: ignore[no-untyped-def]
        spec = JobSpec.model_validate(
            {
                **JOB,
                "optimizer": {"name": name},
                "regularization": {"weight_decay": 0.1, "decay": decay},
            }
        )
        return resolve_decay(name, spec.regularization)

    assert mode("adam") == ("coupled", True)
    assert mode("adamw") == ("decoupled", True)
    assert mode("sgd") == ("coupled", True)
    assert mode("sgd", "decoupled") == ("decoupled", False)  # the engine applies it
    assert mode("adamw", "coupled") == ("coupled", True)  # torch's Adam with L2
    assert mode("rprop") == ("coupled", False)  # Rprop has no decay of its own


def test_adam_with_l2_and_adamw_match_torch_and_differ(tmp_path: Path) -> None:
    """000: Adam + L2 feeds λw through the adaptive denominators; AdamW shrinks w by lr·λ."""
    lam = 0.5
    coupled = run_of(tmp_path, {"name": "adam", "lr": 0.05}, regularization={"weight_decay": lam})
    decoupled = run_of(
        tmp_path,
        {"name": "adam", "lr": 0.05},
        regularization={"weight_decay": lam, "decay": "decoupled"},
    )
    adamw = run_of(tmp_path, {"name": "adamw", "lr": 0.05}, regularization={"weight_decay": lam})
    expected_coupled = reference(coupled, lambda w, o: torch.optim.Adam(groups(w, o, lam), lr=0.05))
    expected_decoupled = reference(
        adamw, lambda w, o: torch.optim.AdamW(groups(w, o, lam), lr=0.05)
    )
    after_coupled, after_decoupled, after_adamw = steps(coupled), steps(decoupled), steps(adamw)
    same(after_coupled, expected_coupled)
    same(after_decoupled, expected_decoupled)
    same(after_adamw, expected_decoupled)
    gap = max(
        (a - b).abs().max().item() for a, b in zip(after_coupled, after_decoupled, strict=True)
    )
    assert gap > 1e-3


def test_decoupled_decay_alone_shrinks_by_lr_lambda_and_l2_through_adam_does_not(
    tmp_path: Path,
) -> None:
    """With a zero loss gradient: AdamW multiplies w by (1 − lr·λ) per step; Adam + L2 moves
    each weight by about lr, whatever its size (the denominators normalize λw away)."""
    lam, lr = 0.1, 0.01
    w = nn.Parameter(torch.tensor([[4.0, 0.5]]))
    for mode, expected in (
        ("decoupled", [4.0 * 0.999**3, 0.5 * 0.999**3]),
        ("coupled", [3.97, 0.47]),
    ):
        param = nn.Parameter(w.detach().clone())
        optimizer = torch.optim.Adam(
            [{"params": [param], "weight_decay": lam}],
            lr=lr,
            decoupled_weight_decay=mode == "decoupled",
        )
        for _ in range(3):
            param.grad = torch.zeros_like(param)
            optimizer.step()
        assert param.detach().squeeze(0).tolist() == pytest.approx(expected, abs=1e-4)


def test_decay_the_library_lacks_is_applied_by_the_engine(tmp_path: Path) -> None:
    lam, lr = 0.2, 0.1
    sgd_decoupled = run_of(
        tmp_path,
        {"name": "sgd", "lr": lr, "args": {"momentum": 0.9}},
        regularization={"weight_decay": lam, "decay": "decoupled"},
    )

    class DecoupledSGD(torch.optim.SGD):  # w ← w(1 − lr·λ), then SGD's update
        def step(self, closure=None):  # type: ignore[no-untyped-def,override]
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.mul_(1 - group["lr"] * group["decoupled"])
            return super().step(closure)

    expected = reference(
        sgd_decoupled,
        lambda w, o: DecoupledSGD(
            [{"params": w, "decoupled": lam}, {"params": o, "decoupled": 0.0}], lr=lr, momentum=0.9
        ),
    )
    same(steps(sgd_decoupled), expected)
    rprop = run_of(tmp_path, {"name": "rprop", "lr": 0.01}, regularization={"weight_decay": lam})

    class CoupledRprop(torch.optim.Rprop):  # g ← g + λw, then Rprop's update
        def step(self, closure=None):  # type: ignore[no-untyped-def,override]
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.grad.add_(p, alpha=group["l2"])
            return super().step(closure)

    expected = reference(
        rprop,
        lambda w, o: CoupledRprop([{"params": w, "l2": lam}, {"params": o, "l2": 0.0}], lr=0.01),
    )
    same(steps(rprop), expected)


def test_biases_are_decayed_only_when_asked(tmp_path: Path) -> None:
    def bias_after(decay_all: bool) -> torch.Tensor:
        run = run_of(
            tmp_path,
            {"name": "adamw", "lr": 0.1},
            regularization={"weight_decay": 0.5, "decay_all": decay_all},
        )
        biases = [p for p in run.net.parameters() if p.ndim == 1]
        for b in biases:
            nn.init.constant_(b, 1.0)
        for p in run.net.parameters():
            p.grad = torch.zeros_like(p)
        run.optimizer.step()
        return biases[0].detach()

    assert bias_after(False).tolist() == pytest.approx([1.0] * 4)
    assert bias_after(True).tolist() == pytest.approx([0.95] * 4)  # 1 − lr·λ


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_norm_parameters_are_decayed_only_when_asked(norm: str, tmp_path: Path) -> None:
    """Norm scales and shifts (found by module type, not by shape) keep their values under
    AdamW's decay unless decay_all; the linear weights shrink by (1 − lr·λ) either way."""
    norm_types = (nn.LayerNorm, nn.BatchNorm1d)

    def after_one_step(decay_all: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        run = run_of(
            tmp_path,
            {"name": "adamw", "lr": 0.1},
            model={"name": "mlp", "args": {"hidden": [4, 3], "norm": norm}},
            regularization={"weight_decay": 0.5, "decay_all": decay_all},
        )
        norms = [m for m in run.net.modules() if isinstance(m, norm_types)]
        assert len(norms) == 2
        norm_params = [p for m in norms for p in (m.weight, m.bias)]
        linear_weights = [m.weight for m in run.net.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for p in norm_params:
                p.fill_(2.0)
            for w in linear_weights:
                w.fill_(1.0)
        for p in run.net.parameters():
            p.grad = torch.zeros_like(p)  # zero gradient: AdamW's step is the decay alone
        run.optimizer.step()
        return [p.detach() for p in norm_params], [w.detach() for w in linear_weights]

    for decay_all, norm_value in ((False, 2.0), (True, 2.0 * (1 - 0.1 * 0.5))):
        norm_params, linear_weights = after_one_step(decay_all)
        for p in norm_params:
            torch.testing.assert_close(p, torch.full_like(p, norm_value))
        for w in linear_weights:
            torch.testing.assert_close(w, torch.full_like(w, 0.95))


def test_soft_threshold_is_002s_example() -> None:
    """002: weight 1.5 after the gradient step, λ = 0.3 → sign(1.5)·max(1.5 − 0.3, 0) = 1.2."""
    assert soft_threshold(torch.tensor([1.5, -1.5, 0.2, -0.3]), 0.3).tolist() == pytest.approx(
        [1.2, -1.2, 0.0, 0.0]
    )


def test_l1_is_a_proximal_step_after_the_update(tmp_path: Path) -> None:
    run = run_of(tmp_path, {"name": "sgd", "lr": 1.0}, regularization={"l1": 0.3})
    weight = run.net[1].weight
    with torch.no_grad():
        weight.zero_()
        weight[0, 0], weight[1, 0], weight[2, 0] = 1.5, -1.5, 0.2
    bias_before = run.net[1].bias.detach().clone()
    for p in run.net.parameters():
        p.grad = torch.zeros_like(p)
    run.optimizer.step()  # zero gradient: the update leaves 1.5; the prox (lr·λ = 0.3) gives 1.2
    assert weight[:3, 0].tolist() == pytest.approx([1.2, -1.2, 0.0])
    assert torch.equal(run.net[1].bias, bias_before)  # biases are not penalized


def test_l1_job_makes_weights_sparse(tmp_path: Path) -> None:
    spec = {
        "model": {"name": "linear"},
        "data": {"name": "synthetic_regression", "args": {"n_samples": 128, "n_features": 20}},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "max_steps": 100,
    }

    def zeros(l1: float) -> int:
        torch.manual_seed(0)
        run = build_run(
            JobSpec.model_validate({**spec, "regularization": {"l1": l1}}),
            data_root=tmp_path,
            device=CPU,
        )
        for _ in range(100 // run.data.steps_per_epoch):
            for x, y in run.data.epoch_batches():
                run.step(run, x, y)
        return int((run.net[1].weight == 0).sum())

    assert zeros(0.0) == 0
    assert zeros(0.2) >= 5


def test_label_smoothing_is_the_mixed_target_cross_entropy(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "model": {"name": "linear"},
            "data": {"name": "digits"},
            "optimizer": {"name": "sgd"},
            "regularization": {"label_smoothing": 0.2},
        }
    )
    run = build_run(spec, data_root=tmp_path, device=CPU)
    x, y = next(run.data.epoch_batches())
    logits = run.net(x)
    log_p = torch.log_softmax(logits, dim=1)
    expected = (0.8 * -log_p.gather(1, y[:, None]).squeeze(1) + 0.2 * -log_p.mean(dim=1)).mean()
    torch.testing.assert_close(run.objective(logits, y), expected)
    torch.testing.assert_close(run.loss_fn(logits, y), nn.functional.cross_entropy(logits, y))


def test_gradient_noise_is_added_with_a_decaying_std(tmp_path: Path) -> None:
    sigma, gamma = 0.5, 0.55
    run = run_of(
        tmp_path,
        {"name": "sgd", "lr": 1.0},
        regularization={"gradient_noise": sigma, "gradient_noise_decay": gamma},
    )
    params = [p for group in run.optimizer.param_groups for p in group["params"]]  # draw order
    for t in range(3):
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.zeros_like(p)
        torch.manual_seed(t)
        run.optimizer.step()
        torch.manual_seed(t)
        std = sigma / (1 + t) ** (gamma / 2)
        for p, b in zip(params, before, strict=True):  # lr 1, zero gradient: the step is −noise
            torch.testing.assert_close(p.detach(), b - std * torch.randn_like(p))


def test_weight_noise_takes_the_gradient_at_perturbed_weights(tmp_path: Path) -> None:
    run = run_of(tmp_path, {"name": "sgd", "lr": 0.1}, regularization={"weight_noise": 0.3})
    twin = copy.deepcopy(run.net)
    x, y = next(run.data.epoch_batches())
    clean = [p.detach().clone() for p in run.net.parameters()]
    torch.manual_seed(7)
    run.step(run, x, y)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    nn.functional.mse_loss(twin(x), y).backward()
    for after, w, noisy in zip(run.net.parameters(), clean, twin.parameters(), strict=True):
        torch.testing.assert_close(after.detach(), w - 0.1 * noisy.grad)


def test_every_regularizer_in_one_job(tmp_path: Path) -> None:
    spec = {
        "model": {"name": "mlp", "args": {"hidden": [32], "dropout": 0.2}},
        "data": {"name": "digits"},
        "optimizer": {"name": "sgd", "lr": 0.1, "args": {"momentum": 0.9}},
        "regularization": {
            "weight_decay": 1e-3,
            "decay": "decoupled",
            "l1": 1e-4,
            "label_smoothing": 0.1,
            "gradient_noise": 0.01,
            "weight_noise": 0.01,
        },
        "max_steps": 60,
    }
    sink = MemorySink(flush_seconds=3600)
    outcome = train(JobSpec.model_validate(spec), sink, data_root=tmp_path, device=CPU)
    assert outcome.status == "succeeded" and sink.series("val_acc")[-1] > 0.6
