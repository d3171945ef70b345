"""Clipping modes against their definitions, their metrics in a job, and fp16's skipped steps."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from models.catalog.training import CLIPPING_MODES, ClippingSpec
from models.spec import JobSpec
from worker.engine import train
from worker.engine.setup import build_run
from worker.engine.sink import MemorySink
from worker.strategies.clipping import CLIPPERS, build_clipper

CPU = torch.device("cpu")
TINY = {
    "model": {"name": "mlp", "args": {"hidden": [16]}},
    "data": {"name": "synthetic_classification", "args": {"n_samples": 160}, "batch_size": 32},
    "optimizer": {"name": "adam", "lr": 0.01},
    "max_steps": 20,
}


def test_every_mode_has_an_implementation() -> None:
    assert set(CLIPPING_MODES) == set(CLIPPERS)


def params_with(*grads: list[list[float]] | list[float], weights=None):  # type: ignore[no-untyped-def]
    params = []
    for i, grad in enumerate(grads):
        g = torch.tensor(grad)
        w = torch.tensor(weights[i]) if weights else torch.zeros_like(g)
        param = nn.Parameter(w.clone())
        param.grad = g.clone()
        params.append(param)
    return params


def clip(params, **spec):  # type: ignore[no-untyped-def]
    return build_clipper(ClippingSpec(**spec))(params)


def all_grads(params) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.cat([p.grad.flatten() for p in params])


def test_norm_clipping_brings_the_global_norm_to_the_threshold() -> None:
    params = params_with([3.0, 4.0], [12.0])
    norm, clipped = clip(params, mode="norm", max_norm=1.0)
    assert norm.item() == pytest.approx(13.0) and clipped.item()
    assert all_grads(params).norm().item() == pytest.approx(1.0, rel=1e-5)
    assert all_grads(params).tolist() == pytest.approx([3 / 13, 4 / 13, 12 / 13], rel=1e-5)
    small = params_with([0.3, 0.4])
    norm, clipped = clip(small, mode="norm", max_norm=1.0)
    assert not clipped.item() and all_grads(small).tolist() == pytest.approx([0.3, 0.4])


def test_value_clipping_bounds_each_element() -> None:
    params = params_with([3.0, -4.0, 0.1])
    norm, clipped = clip(params, mode="value", max_value=0.5)
    assert norm.item() == pytest.approx(math.sqrt(25.01)) and clipped.item()
    assert all_grads(params).tolist() == pytest.approx([0.5, -0.5, 0.1])


def test_adaptive_clipping_bounds_by_a_percentile_of_past_norms() -> None:
    clipper = build_clipper(ClippingSpec(mode="adaptive", percentile=50, history=4))
    seen = []
    for norm in (1.0, 3.0, 2.0, 10.0, 4.0):
        params = params_with([norm, 0.0])
        pre, clipped = clipper(params)
        seen = [*seen, norm][-4:]
        threshold = torch.quantile(torch.tensor(seen), 0.5).item()
        assert pre.item() == pytest.approx(norm)
        assert all_grads(params).norm().item() == pytest.approx(min(norm, threshold), rel=1e-5)
        assert bool(clipped.item()) == (norm > threshold)
    # the last norm, 4.0, is bounded by the median of (3, 2, 10, 4) = 3.5
    assert threshold == pytest.approx(3.5)


def test_adaptive_clipping_ignores_overflowed_norms() -> None:
    clipper = build_clipper(ClippingSpec(mode="adaptive", percentile=50, history=8))
    clipper(params_with([2.0]))
    clipper(params_with([float("inf")]))
    params = params_with([4.0])
    clipper(params)
    assert all_grads(params).norm().item() == pytest.approx(3.0)  # median of (2, 4)


def test_agc_clips_each_unit_to_a_share_of_its_weight_norm() -> None:
    # two output units: row norms of W are 5 and 1; gradient rows have norms 1 and 0.01
    params = params_with([[0.6, 0.8], [0.01, 0.0]], weights=[[[3.0, 4.0], [1.0, 0.0]]])
    norm, clipped = clip(params, mode="agc", agc_factor=0.1, agc_eps=1e-3)
    grad = params[0].grad
    assert grad[0].norm().item() == pytest.approx(0.5)  # 1 > 0.1·5: scaled to 0.5
    assert grad[1].tolist() == pytest.approx([0.01, 0.0])  # 0.01 ≤ 0.1·1: kept
    assert clipped.item() and norm.item() == pytest.approx(math.sqrt(1 + 1e-4))
    # a zero weight still allows eps·factor (NFNets' floor)
    zero = params_with([[1.0, 0.0]], weights=[[[0.0, 0.0]]])
    clip(zero, mode="agc", agc_factor=0.5, agc_eps=1e-2)
    assert zero[0].grad.norm().item() == pytest.approx(5e-3)


def test_normalize_divides_each_gradient_by_its_std() -> None:
    params = params_with([1.0, 3.0], [2.0, 2.0, 2.0, 6.0])
    norm, clipped = clip(params, mode="normalize", normalize_eps=1e-8)
    assert clipped is None
    assert params[0].grad.tolist() == pytest.approx([1.0, 3.0])  # std 1
    assert params[1].grad.std(correction=0).item() == pytest.approx(1.0, rel=1e-6)


def test_fields_of_another_mode_are_refused() -> None:
    with pytest.raises(ValueError, match="max_value applies to mode 'value'"):
        ClippingSpec(mode="norm", max_value=2.0)


@pytest.mark.parametrize("mode", ["norm", "value", "adaptive", "agc"])
def test_a_job_logs_the_pre_clip_norm_and_the_clipped_fraction(mode: str, tmp_path: Path) -> None:
    bounds = {
        "norm": {"max_norm": 0.01},
        "value": {"max_value": 1e-4},
        "adaptive": {"percentile": 50},
        "agc": {"agc_factor": 1e-4},
    }
    spec = {**TINY, "clipping": {"mode": mode, **bounds[mode]}}
    sink = MemorySink(flush_seconds=3600)
    outcome = train(JobSpec.model_validate(spec), sink, data_root=tmp_path, device=CPU)
    norms = sink.series("grad_norm")
    assert len(norms) == 20 and all(n > 0 for n in norms)
    fraction = sink.series("clip_fraction")[-1]
    if mode == "adaptive":  # about half the norms lie above their running median
        assert 0.1 < fraction < 0.9
    else:
        assert fraction == 1.0  # the bounds are far below every gradient
    assert outcome.summary["final"]["clip_fraction"] == fraction


def test_norm_clipping_is_applied_to_the_step(tmp_path: Path) -> None:
    """With plain SGD the clipped update is exactly lr · max_norm long."""
    spec = JobSpec.model_validate(
        {
            **TINY,
            "optimizer": {"name": "sgd", "lr": 0.1},
            "clipping": {"mode": "norm", "max_norm": 0.05},
        }
    )
    run = build_run(spec, data_root=tmp_path, device=CPU)
    before = nn.utils.parameters_to_vector(run.net.parameters()).clone()
    x, y = next(run.data.epoch_batches())
    _, grad_norm = run.step(run, x, y)
    moved = nn.utils.parameters_to_vector(run.net.parameters()) - before
    assert grad_norm.item() > 0.05
    assert moved.norm().item() == pytest.approx(0.1 * 0.05, rel=1e-4)


def test_fp16_overflow_skips_the_step_and_halves_the_scale(tmp_path: Path) -> None:
    spec = JobSpec.model_validate({**TINY, "precision": "fp16"})
    run = build_run(spec, data_root=tmp_path, device=CPU)
    x, y = next(run.data.epoch_batches())
    run.step(run, x, y)  # one good step: Adam's state exists
    scale = run.precision.scaler.get_scale()
    before = [p.detach().clone() for p in run.net.parameters()]
    state = [s["exp_avg"].clone() for s in run.optimizer.state.values()]
    hook = run.params[0].register_hook(lambda g: torch.full_like(g, float("inf")))
    _, grad_norm = run.step(run, x, y)
    hook.remove()
    assert not math.isfinite(grad_norm.item())
    assert run.precision.scaler.get_scale() == scale / 2
    assert run.stats.skipped.item() == 1
    for p, b in zip(run.net.parameters(), before, strict=True):
        assert torch.equal(p, b)  # the weights did not move
    for s, b in zip(run.optimizer.state.values(), state, strict=True):
        assert torch.equal(s["exp_avg"], b)  # nor did the optimizer's moments
    run.step(run, x, y)
    assert run.stats.skipped.item() == 1  # the next step is a normal one again


def test_fp16_job_reports_scale_and_skipped_steps(tmp_path: Path) -> None:
    sink = MemorySink(flush_seconds=3600)
    outcome = train(
        JobSpec.model_validate({**TINY, "precision": "fp16"}), sink, data_root=tmp_path, device=CPU
    )
    assert sink.series("loss_scale") == [65536.0]
    assert sink.series("skipped_steps") == [0.0]
    assert outcome.summary["final"]["skipped_steps"] == 0.0


def test_fp16_with_sam_skips_an_overflow_in_the_first_pass(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {**TINY, "precision": "fp16", "optimizer": {"name": "sgd", "lr": 0.1, "sam": {"rho": 0.05}}}
    )
    run = build_run(spec, data_root=tmp_path, device=CPU)
    x, y = next(run.data.epoch_batches())
    before = [p.detach().clone() for p in run.net.parameters()]
    scale = run.precision.scaler.get_scale()
    calls = []

    def first_pass_only(g: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.full_like(g, float("inf")) if len(calls) == 1 else g

    hook = run.params[0].register_hook(first_pass_only)
    run.step(run, x, y)
    hook.remove()
    assert len(calls) == 2  # both passes ran
    assert run.precision.scaler.get_scale() == scale / 2
    for p, b in zip(run.net.parameters(), before, strict=True):
        assert torch.equal(p, b)  # restored exactly, no step taken
    run.step(run, x, y)
    assert all(torch.isfinite(p).all() for p in run.net.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(run.net.parameters(), before, strict=True))


def test_bf16_and_sam_with_clipping_train(tmp_path: Path) -> None:
    spec = {
        **TINY,
        "precision": "bf16",
        "optimizer": {"name": "adam", "lr": 0.01, "sam": {"rho": 0.05, "adaptive": True}},
        "clipping": {"mode": "norm", "max_norm": 1.0},
    }
    sink = MemorySink(flush_seconds=3600)
    outcome = train(JobSpec.model_validate(spec), sink, data_root=tmp_path, device=CPU)
    losses = sink.series("train_loss")
    assert outcome.status == "succeeded" and losses[-1] < losses[0]


def test_a_job_with_per_layer_gradient_normalization_trains(tmp_path: Path) -> None:
    spec = {**TINY, "optimizer": {"name": "sgd", "lr": 0.01}, "clipping": {"mode": "normalize"}}
    sink = MemorySink(flush_seconds=3600)
    outcome = train(JobSpec.model_validate(spec), sink, data_root=tmp_path, device=CPU)
    losses = sink.series("train_loss")
    assert outcome.status == "succeeded" and losses[-1] < losses[0]
    assert sink.series("clip_fraction") == []  # normalization is not clipping
