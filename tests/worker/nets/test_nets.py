"""Every net builds for its kind of input, trains, and keeps the constraints it promises."""

from pathlib import Path

import pytest
import torch
from torch import nn

from models.catalog import NET_ARGS
from models.catalog.nets import MLPArgs, RNNArgs
from models.spec import JobSpec
from worker.engine import train
from worker.engine.setup import build_run
from worker.engine.sink import MemorySink
from worker.nets import NETS, build_net
from worker.nets.constraints import QROrthogonal, constrain

CPU = torch.device("cpu")
RECALL = {
    "name": "associative_recall",
    "args": {"n_samples": 256, "pairs": 4, "n_keys": 8, "n_values": 4},
}
ADDING = {"name": "adding_problem", "args": {"n_samples": 256, "length": 12}}
DIGITS = {"name": "digits", "batch_size": 64}

NETS_ON_DATA = [
    ({"name": "linear"}, DIGITS),
    ({"name": "mlp", "args": {"hidden": [32, 32], "norm": "batch", "dropout": 0.1}}, DIGITS),
    ({"name": "mlp", "args": {"hidden": [32], "norm": "layer", "orthogonal": "cayley"}}, DIGITS),
    ({"name": "mlp", "args": {"hidden": [32], "spectral_norm": True}}, DIGITS),
    ({"name": "seed_cnn", "args": {"filters": 4}}, DIGITS),
    ({"name": "cnn", "args": {"channels": [8, 16], "norm": "batch"}}, DIGITS),
    ({"name": "cnn", "args": {"channels": [8], "norm": "layer", "dropout": 0.2}}, DIGITS),
    ({"name": "resnet", "args": {"width": 8, "blocks": [1, 1]}}, DIGITS),
    ({"name": "rnn", "args": {"cell": "lstm", "hidden": 16}}, ADDING),
    ({"name": "rnn", "args": {"cell": "gru", "hidden": 16, "layers": 2}}, RECALL),
    ({"name": "rnn", "args": {"cell": "rnn", "hidden": 16, "orthogonal": "qr"}}, ADDING),
    ({"name": "transformer", "args": {"d_model": 16, "heads": 2, "layers": 1}}, RECALL),
    (
        {"name": "transformer", "args": {"d_model": 16, "heads": 2, "layers": 1, "norm": "none"}},
        ADDING,
    ),
]


def test_every_net_is_exercised() -> None:
    assert set(NET_ARGS) == set(NETS) == {model["name"] for model, _ in NETS_ON_DATA}


@pytest.mark.parametrize(("model", "data"), NETS_ON_DATA, ids=lambda v: str(v)[:60])
def test_trains_on_its_kind_of_data(model: dict, data: dict, tmp_path: Path) -> None:
    spec = {
        "model": model,
        "data": data,
        "optimizer": {"name": "adam", "lr": 0.01},
        "max_steps": 25,
    }
    sink = MemorySink(flush_seconds=3600)
    outcome = train(JobSpec.model_validate(spec), sink, data_root=tmp_path, device=CPU)
    losses = sink.series("train_loss")
    assert outcome.status == "succeeded", outcome.error
    assert sum(losses[-5:]) / 5 < losses[0]


@pytest.mark.parametrize("kind", ["qr", "cayley", "householder", "matrix_exp"])
def test_orthogonal_recurrent_weight_stays_orthogonal_while_training(
    kind: str, tmp_path: Path
) -> None:
    spec = JobSpec.model_validate(
        {
            "model": {"name": "rnn", "args": {"cell": "rnn", "hidden": 8, "orthogonal": kind}},
            "data": ADDING,
            "optimizer": {"name": "adam", "lr": 0.05},
        }
    )
    run = build_run(spec, data_root=tmp_path, device=CPU)
    recurrent = run.net.body[0].recurrent
    before = recurrent.weight.detach().clone()
    x, y = next(run.data.epoch_batches())
    for _ in range(5):
        run.step(run, x, y)
    w = recurrent.weight.detach()
    assert not torch.allclose(w, before)  # it learned
    torch.testing.assert_close(w @ w.T, torch.eye(8), atol=1e-4, rtol=0)


def test_qr_map_fixes_orthogonal_matrices_and_handles_wide_ones() -> None:
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    q = q * torch.sign(torch.diagonal(torch.linalg.qr(q)[1]))
    torch.testing.assert_close(QROrthogonal()(q), q, atol=1e-5, rtol=0)
    wide = QROrthogonal()(torch.randn(3, 7))
    torch.testing.assert_close(wide @ wide.T, torch.eye(3), atol=1e-5, rtol=0)
    layer = constrain(nn.Linear(6, 4), "qr")
    out = layer(torch.randn(2, 6)).sum()
    out.backward()
    assert layer.parametrizations.weight.original.grad is not None


def test_spectral_norm_bounds_the_largest_singular_value() -> None:
    net = build_net(
        type("Spec", (), {"name": "mlp", "args": MLPArgs(hidden=[64], spectral_norm=True)})(),
        (32,),
        10,
    )
    net.train()
    x = torch.randn(8, 32)
    for _ in range(20):  # power iterations run on forward passes in training mode
        net(x)
    dense = net[1]
    assert torch.linalg.matrix_norm(dense.weight.detach(), ord=2).item() == pytest.approx(
        1.0, rel=0.05
    )


def test_own_rnn_loop_matches_torch_rnn_without_constraint() -> None:
    """The orthogonal RNN's loop is the Elman recurrence torch.nn.RNN computes."""
    args = RNNArgs(cell="rnn", hidden=5, orthogonal="qr")
    spec = type("Spec", (), {"name": "rnn", "args": args})()
    net = build_net(spec, (7, 3), 2)
    layer = net.body[0]
    reference = nn.RNN(3, 5, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(layer.input.weight)
        reference.bias_ih_l0.copy_(layer.input.bias)
        reference.weight_hh_l0.copy_(layer.recurrent.weight)
        reference.bias_hh_l0.zero_()
    x = torch.randn(4, 7, 3)
    torch.testing.assert_close(layer(x), reference(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("model", "shape", "message"),
    [
        ("cnn", (64,), "image input"),
        ("resnet", (12, 2), "image input"),
        ("rnn", (1, 8, 8), "sequence input"),
        ("transformer", (10,), "sequence input"),
    ],
)
def test_wrong_input_shape_is_explained(model: str, shape: tuple, message: str) -> None:
    spec = type("Spec", (), {"name": model, "args": NET_ARGS[model]()})()
    with pytest.raises(ValueError, match=message):
        build_net(spec, shape, 3)


def constrained_weights(net: nn.Module) -> list[torch.Tensor]:
    """The weights a parametrization computes, each as a matrix (a conv's as out × in·k·k)."""
    from torch.nn.utils import parametrize

    weights = [
        module.weight.detach()
        for module in net.modules()
        if parametrize.is_parametrized(module, "weight")
    ]
    return [weight.reshape(weight.shape[0], -1) for weight in weights]


def train_job(model: dict, tmp_path: Path) -> tuple[list[torch.Tensor], list[float], nn.Module]:
    """A training job as a worker runs it: the trained net's constrained weights (read in eval
    mode, which runs no power iteration), its losses, and the net."""
    spec = {"model": model, "data": DIGITS, "optimizer": {"name": "adam", "lr": 0.01}}
    sink = MemorySink(flush_seconds=3600)
    outcome = train(
        JobSpec.model_validate({**spec, "max_steps": 30}), sink, data_root=tmp_path, device=CPU
    )
    assert outcome.status == "succeeded" and outcome.net is not None, outcome.error
    return constrained_weights(outcome.net.eval()), sink.series("train_loss"), outcome.net


@pytest.mark.parametrize(
    ("model", "layers"),
    [
        ({"name": "mlp", "args": {"hidden": [96, 32], "spectral_norm": True}}, 3),
        ({"name": "cnn", "args": {"channels": [8, 16], "spectral_norm": True}}, 2),
    ],
    ids=["mlp", "cnn"],
)
def test_spectral_norm_keeps_the_largest_singular_value_at_one_after_training(
    model: dict, layers: int, tmp_path: Path
) -> None:
    """torch's spectral norm divides W by σ̂ = uᵀWv from one power iteration per training
    step, so σ_max(W / σ̂) ≥ 1 always (σ̂ never exceeds σ_max), and is 1 once the iteration has
    caught up with the trained weights (forward passes, no optimizer step). Evaluation right after
    the last step uses u, v from before that step: measured 1.0–1.3 there on this job."""
    weights, losses, net = train_job(model, tmp_path)
    assert sum(losses[-5:]) / 5 < losses[0]  # it learned under the constraint
    assert len(weights) == layers
    for weight in weights:
        assert torch.linalg.matrix_norm(weight, ord=2).item() >= 1 - 1e-4
    net.train()
    with torch.no_grad():
        for _ in range(20):
            net(torch.randn(4, 1, 8, 8))
    for weight in constrained_weights(net.eval()):
        assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("kind", ["qr", "cayley", "householder", "matrix_exp"])
def test_orthogonal_mlp_hidden_weights_stay_orthogonal_after_training(
    kind: str, tmp_path: Path
) -> None:
    """Hidden layers 64 → 96 (tall: WᵀW = I) and 96 → 32 (wide: WWᵀ = I); the head is free."""
    model = {"name": "mlp", "args": {"hidden": [96, 32], "orthogonal": kind}}
    weights, losses, _ = train_job(model, tmp_path)
    assert sum(losses[-5:]) / 5 < losses[0]
    assert [tuple(w.shape) for w in weights] == [(96, 64), (32, 96)]
    tall, wide = weights
    torch.testing.assert_close(tall.T @ tall, torch.eye(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(wide @ wide.T, torch.eye(32), atol=1e-4, rtol=0)
