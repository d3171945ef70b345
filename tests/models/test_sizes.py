"""Job sizes from the spec alone (no torch): every catalog name has an estimator, and the steps
follow the engine's rule. tests/worker/test_net_sizes.py checks the counts against torch."""

import math

import pytest

from models.catalog import DATASET_ARGS, NET_ARGS
from models.catalog.sizes import (
    DATA_SHAPES,
    FALLBACK_FLOOR,
    NET_SIZES,
    estimate_job,
    fallback_size,
)
from models.spec import JobSpec

MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


def test_every_net_has_a_size_estimator() -> None:
    missing = sorted(set(NET_ARGS) - set(NET_SIZES))
    assert not missing, f"add an estimator to models/catalog/sizes.py NET_SIZES for {missing}"
    assert not set(NET_SIZES) - set(NET_ARGS), "an estimator for a net that does not exist"


def test_every_data_set_has_a_shape() -> None:
    missing = sorted(set(DATASET_ARGS) - set(DATA_SHAPES))
    assert not missing, f"add a shape to models/catalog/sizes.py DATA_SHAPES for {missing}"
    assert not set(DATA_SHAPES) - set(DATASET_ARGS)


@pytest.mark.parametrize(
    ("spec", "steps"),
    [
        (MINIMAL, 23),  # 1797 digits, 359 held out, 1438 / 64 → 23 batches
        ({**MINIMAL, "epochs": 3, "data": {"name": "digits", "batch_size": 100}}, 3 * 15),
        ({**MINIMAL, "max_steps": 7, "epochs": 50}, 7),
        ({**MINIMAL, "data": {"name": "digits", "batch_size": 5000}}, 1),  # one full batch
        ({**MINIMAL, "data": {"name": "digits", "val_fraction": 0.0}}, math.ceil(1797 / 64)),
        ({**MINIMAL, "data": {"name": "mnist", "args": {"subset": 1000}}}, math.ceil(800 / 64)),
    ],
)
def test_steps_follow_the_engine(spec: dict, steps: int) -> None:
    assert estimate_job(JobSpec.model_validate(spec)).steps == steps


def test_mlp_on_digits_is_counted_exactly() -> None:
    size = estimate_job(JobSpec.model_validate(MINIMAL))
    assert size.parameters == 64 * 128 + 128 + 128 * 10 + 10
    assert size.estimated_by == "net:mlp" and size.work == size.steps * size.parameters


def test_ten_billion_parameters_are_seen() -> None:
    spec = {**MINIMAL, "model": {"name": "mlp", "args": {"hidden": [65_536] * 4}}}
    assert estimate_job(JobSpec.model_validate(spec)).parameters == 12_890_013_706


def test_a_net_without_estimator_gets_a_high_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(NET_SIZES, "mlp")
    size = estimate_job(JobSpec.model_validate(MINIMAL))
    assert size.estimated_by == "fallback"
    assert size.parameters >= FALLBACK_FLOOR > 64 * 128 + 128 * 10 + 138
    # a wide net is guessed wide: 16 · 65,536² · 4 options
    wide = JobSpec.model_validate(
        {**MINIMAL, "model": {"name": "mlp", "args": {"hidden": [65_536] * 4}}}
    )
    assert fallback_size(wide.model.args, (64,), 10) > 2.7e11


def test_an_estimator_that_breaks_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args, shape, outputs):  # type: ignore[no-untyped-def]
        return args.no_such_option

    monkeypatch.setitem(NET_SIZES, "mlp", broken)
    assert estimate_job(JobSpec.model_validate(MINIMAL)).estimated_by == "fallback"


def test_estimating_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, models.catalog.sizes; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
