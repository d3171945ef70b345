"""Decompositions inside training: low-rank SVD compression of trained linear layers, and PCA
preprocessing fit on the training split only."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn

from models.spec import JobSpec
from worker.datasets import load_data
from worker.engine import train
from worker.engine.compress import compressed_copy, low_rank, parameter_count
from worker.engine.sink import MemorySink

DIGITS_MLP = {
    "model": {"name": "mlp", "args": {"hidden": [64]}},
    "data": {"name": "digits", "batch_size": 64},
    "optimizer": {"name": "adam", "lr": 0.01},
    "epochs": 3,
}


def test_low_rank_factors_are_the_truncated_svd() -> None:
    """Eckart–Young: the rank-r factorization is U_r S_r V_rᵀ, and its spectral-norm error is
    σ_{r+1}."""
    torch.manual_seed(0)
    layer = nn.Linear(20, 12)
    factored = low_rank(layer, 4)
    product = (factored[1].weight @ factored[0].weight).detach().double().numpy()
    weight = layer.weight.detach().double().numpy()
    u, s, vt = np.linalg.svd(weight)
    np.testing.assert_allclose(product, (u[:, :4] * s[:4]) @ vt[:4], atol=1e-5)
    assert np.linalg.norm(weight - product, 2) == pytest.approx(s[4], rel=1e-4)
    assert torch.equal(factored[1].bias, layer.bias)


def test_full_rank_factorization_reproduces_the_layer() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(8, 6)
    x = torch.randn(5, 8)
    torch.testing.assert_close(low_rank(layer, 6)(x), layer(x), atol=1e-5, rtol=1e-5)


def test_only_layers_that_shrink_are_factored_and_the_original_is_kept() -> None:
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    before = [p.clone() for p in net.parameters()]
    small, replaced = compressed_copy(net, 4)
    # 64×64 → 4·(64+64) weights; 64×10 → 4·74 = 296 < 640 shrinks too
    assert replaced == 2
    assert parameter_count(small) == 4 * 128 + 64 + 4 * 74 + 10
    large, replaced_large = compressed_copy(net, 16)  # 16·74 > 640: the head stays whole
    assert replaced_large == 1 and isinstance(large[2], nn.Linear)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def run(spec: dict, tmp_path: Path):  # type: ignore[no-untyped-def]
    sink = MemorySink(flush_seconds=3600)
    outcome = train(
        JobSpec.model_validate(spec), sink, data_root=tmp_path, device=torch.device("cpu")
    )
    return outcome, sink


def test_compression_job_reports_parameters_against_accuracy(tmp_path: Path) -> None:
    outcome, sink = run({**DIGITS_MLP, "compress": {"ranks": [1, 8, 64]}}, tmp_path)
    assert outcome.status == "succeeded"
    section = outcome.summary["compression"]
    rows = {row["rank"]: row for row in section["ranks"]}
    assert section["parameters"] == outcome.summary["parameters"]
    assert rows[1]["parameters"] < rows[8]["parameters"] < section["parameters"]
    # rank 64 factors nothing (64·(64+64) > 64·64): the trained net itself
    assert rows[64]["layers_factored"] == 0
    assert rows[64]["val_acc"] == pytest.approx(outcome.summary["final"]["val_acc"])
    assert rows[1]["val_acc"] < rows[8]["val_acc"]
    steps = [p["step"] for p in sink.points if p["name"] == "compress_val_acc"]
    assert steps == [1, 8, 64]  # a series over rank
    assert sink.series("compress_parameter_fraction")[0] < 0.1


def test_compress_needs_validation_data() -> None:
    from pydantic import ValidationError

    spec = {**DIGITS_MLP, "data": {"name": "digits", "val_fraction": 0}, "compress": {"ranks": [2]}}
    with pytest.raises(ValidationError, match="val_fraction"):
        JobSpec.model_validate(spec)


def test_pca_is_fit_on_the_training_split_only(tmp_path: Path) -> None:
    spec = JobSpec.model_validate({**DIGITS_MLP, "data": {"name": "digits", "pca": 10}})
    plain = JobSpec.model_validate(DIGITS_MLP)
    reduced = load_data(spec.data, seed=0, data_root=tmp_path)
    full = load_data(plain.data, seed=0, data_root=tmp_path)
    assert reduced.input_shape == (10,) and len(reduced.x_val) == len(full.x_val)
    flat_train = full.x_train.reshape(len(full.x_train), -1).double().numpy()
    flat_val = full.x_val.reshape(len(full.x_val), -1).double().numpy()
    reference = PCA(n_components=10, svd_solver="full").fit(flat_train)
    np.testing.assert_allclose(reduced.x_val.numpy(), reference.transform(flat_val), atol=1e-4)
    np.testing.assert_allclose(reduced.x_train.mean(dim=0).numpy(), 0.0, atol=1e-4)
    assert not np.allclose(reduced.x_val.mean(dim=0).numpy(), 0.0, atol=1e-4)  # not refit
    assert "PCA to 10 components" in reduced.source


def test_pca_job_trains_on_the_projected_inputs(tmp_path: Path) -> None:
    outcome, _ = run({**DIGITS_MLP, "data": {"name": "digits", "pca": 16}}, tmp_path)
    assert outcome.status == "succeeded" and outcome.summary["final"]["val_acc"] > 0.8
    assert "PCA to 16 components" in outcome.summary["data_source"]


def test_pca_larger_than_the_inputs_fails_with_the_sizes(tmp_path: Path) -> None:
    spec = JobSpec.model_validate({**DIGITS_MLP, "data": {"name": "digits", "pca": 100}})
    with pytest.raises(ValueError, match="min\\(1438, 64\\)"):
        load_data(spec.data, seed=0, data_root=tmp_path)
