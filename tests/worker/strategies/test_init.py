"""Initialization schemes: each against its definition, and the catalog halves agree."""

from pathlib import Path

import pytest
import torch
from torch import nn

from models.catalog.training import INIT_SCHEMES
from models.spec import JobSpec
from worker.engine.setup import build_run
from worker.strategies.init import INITIALIZERS, apply_init


def test_every_scheme_has_an_implementation() -> None:
    assert set(INIT_SCHEMES) == set(INITIALIZERS)


def net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.LayerNorm(32), nn.Conv2d(3, 8, 3)
    )


@pytest.mark.parametrize("scheme", ["orthogonal", "svd"])
def test_orthogonal_schemes_give_orthonormal_rows(scheme: str) -> None:
    model = net()
    apply_init(model, scheme)
    for module in (model[0], model[2]):
        w = module.weight.detach()
        torch.testing.assert_close(w @ w.T, torch.eye(w.shape[0]), atol=1e-5, rtol=0)
        assert torch.equal(module.bias, torch.zeros_like(module.bias))
    kernel = model[4].weight.detach().reshape(8, -1)  # conv kernels as (out, in·k·k) matrices
    torch.testing.assert_close(kernel @ kernel.T, torch.eye(8), atol=1e-5, rtol=0)
    assert torch.equal(model[3].weight, torch.ones(32))  # norm scales keep their defaults


def test_orthogonal_is_q_of_a_gaussian_with_signs_fixed() -> None:
    """torch.nn.init.orthogonal_: Q·sign(diag R) of the QR of a Gaussian drawn from the seed."""
    torch.manual_seed(3)
    layer = nn.Linear(16, 16)
    torch.manual_seed(4)
    apply_init(layer, "orthogonal")
    torch.manual_seed(4)
    q, r = torch.linalg.qr(torch.randn(16, 16))
    torch.testing.assert_close(layer.weight.detach(), q * torch.sign(torch.diagonal(r)))


def test_svd_is_the_nearest_orthogonal_matrix_to_a_gaussian() -> None:
    torch.manual_seed(5)
    layer = nn.Linear(12, 12)
    apply_init(layer, "svd")
    torch.manual_seed(5)
    nn.Linear(12, 12)  # the same draws as the layer's own construction
    gaussian = torch.randn(12, 12)
    u, _, vh = torch.linalg.svd(gaussian)
    torch.testing.assert_close(layer.weight.detach(), u @ vh, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("scheme", "std"),
    [
        ("xavier_normal", (2 / (512 + 256)) ** 0.5),
        ("xavier_uniform", (2 / (512 + 256)) ** 0.5),
        ("kaiming_normal", (2 / 512) ** 0.5),
        ("kaiming_uniform", (2 / 512) ** 0.5),
    ],
)
def test_variance_scaling_schemes_have_their_std(scheme: str, std: float) -> None:
    layer = nn.Linear(512, 256)
    apply_init(layer, scheme)
    assert layer.weight.std().item() == pytest.approx(std, rel=0.03)


def test_zeros_and_default(tmp_path: Path) -> None:
    base = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "sgd"}}
    zero = build_run(
        JobSpec.model_validate({**base, "init": "zeros"}),
        data_root=tmp_path,
        device=torch.device("cpu"),
    )
    assert all(torch.count_nonzero(p) == 0 for p in zero.net.parameters())
    torch.manual_seed(0)
    default = build_run(
        JobSpec.model_validate(base), data_root=tmp_path, device=torch.device("cpu")
    )
    assert all(torch.count_nonzero(p) > 0 for p in default.net.parameters())


def test_unknown_scheme_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="'orthogonal'"):
        JobSpec.model_validate(
            {
                "model": {"name": "mlp"},
                "data": {"name": "digits"},
                "optimizer": {"name": "sgd"},
                "init": "he",
            }
        )


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_a_job_trains_from_each_scheme(scheme: str, tmp_path: Path) -> None:
    from worker.engine import train
    from worker.engine.sink import MemorySink

    # all-zero hidden layers stay symmetric and never learn: zeros is for linear models (002)
    model = {"name": "linear"} if scheme == "zeros" else {"name": "mlp", "args": {"hidden": [16]}}
    spec = {
        "model": model,
        "data": {"name": "digits", "batch_size": 128},
        "optimizer": {"name": "adam", "lr": 0.01},
        "init": scheme,
        "max_steps": 15,
    }
    sink = MemorySink(flush_seconds=3600)
    outcome = train(
        JobSpec.model_validate(spec), sink, data_root=tmp_path, device=torch.device("cpu")
    )
    losses = sink.series("train_loss")
    assert outcome.status == "succeeded" and losses[-1] < losses[0]
