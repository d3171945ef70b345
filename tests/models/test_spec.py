"""JobSpec: what passes, what is refused, and how the refusal reads."""

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from models.catalog import DATASET_ARGS, NET_ARGS, OPTIMIZER_ARGS, SCHEDULE_ARGS
from models.spec import JobSpec, describe_errors

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.*"))
MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


def errors_of(spec: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(spec)
    return {e["field"]: e["message"] for e in describe_errors(list(caught.value.errors()))}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    JobSpec.model_validate(yaml.safe_load(path.read_text()))


def test_minimal_spec_gets_documented_defaults() -> None:
    spec = JobSpec.model_validate(MINIMAL)
    assert spec.schedule.name == "constant"
    assert spec.optimizer.lr == 1e-3 and spec.optimizer.args.betas == (0.9, 0.999)
    assert spec.data.batch_size == 64 and spec.epochs == 1 and spec.precision == "fp32"


@pytest.mark.parametrize(
    ("component", "catalog"),
    [
        ("model", NET_ARGS),
        ("data", DATASET_ARGS),
        ("optimizer", OPTIMIZER_ARGS),
        ("schedule", SCHEDULE_ARGS),
    ],
)
def test_unknown_name_lists_valid_choices(component: str, catalog: dict) -> None:
    errors = errors_of({**MINIMAL, component: {"name": "no_such_thing"}})
    message = errors[f"{component}.name"]
    assert "no_such_thing" in message
    assert all(repr(name) in message for name in catalog)


def test_missing_name_lists_valid_choices() -> None:
    errors = errors_of({**MINIMAL, "optimizer": {"lr": 0.1}})
    assert "'adamw'" in errors["optimizer.name"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"optimizer": {"name": "adam", "lr": 0}}, "optimizer.lr"),
        ({"optimizer": {"name": "adam", "lr": 11}}, "optimizer.lr"),
        ({"optimizer": {"name": "sgd", "args": {"momentum": 1.5}}}, "optimizer.args.momentum"),
        ({"optimizer": {"name": "adam", "args": {"betas": [0.9, 1.0]}}}, "optimizer.args.betas.1"),
        ({"data": {"name": "digits", "batch_size": 0}}, "data.batch_size"),
        ({"model": {"name": "mlp", "args": {"hidden": [0]}}}, "model.args.hidden.0"),
        ({"epochs": 10**9}, "epochs"),
        ({"seed": -1}, "seed"),
        ({"clipping": {"mode": "norm", "max_norm": -1}}, "clipping.max_norm"),
    ],
)
def test_out_of_range_number_names_its_path(patch: dict, field: str) -> None:
    assert field in errors_of({**MINIMAL, **patch})


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"data": {"name": "digits", "batch_size": "big"}}, "data.batch_size"),
        ({"precision": "fp8"}, "precision"),
        ({"tags": ["a"]}, "tags"),
        ({"optimizer": {"name": "sgd", "args": {"nesterov": "maybe"}}}, "optimizer.args.nesterov"),
    ],
)
def test_wrong_type_names_its_path(patch: dict, field: str) -> None:
    assert field in errors_of({**MINIMAL, **patch})


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"optimizer": {"name": "adam", "args": {"momentum": 0.9}}}, "optimizer.args.momentum"),
        ({"optimizer": {"name": "adam", "betas": [0.9, 0.99]}}, "optimizer.betas"),
    ],
)
def test_extra_field_is_refused(patch: dict, field: str) -> None:
    assert errors_of({**MINIMAL, **patch})[field] == "Extra inputs are not permitted"


@pytest.mark.parametrize("missing", ["model", "data", "optimizer"])
def test_missing_field_is_named(missing: str) -> None:
    spec = {k: v for k, v in MINIMAL.items() if k != missing}
    assert errors_of(spec)[missing] == "Field required"


def test_dataset_path_cannot_escape_the_data_dir() -> None:
    errors = errors_of({**MINIMAL, "data": {"name": "mnist", "args": {"path": "../../etc"}}})
    assert "data.args.path" in errors


def test_hash_is_canonical_and_ignores_labels() -> None:
    explicit = {**MINIMAL, "optimizer": {"name": "adam", "lr": 0.001}, "seed": 0}
    labelled = {**MINIMAL, "name": "x", "tags": {"study": "s"}}
    reference = JobSpec.model_validate(MINIMAL).spec_hash()
    assert JobSpec.model_validate(explicit).spec_hash() == reference
    assert JobSpec.model_validate(labelled).spec_hash() == reference
    assert JobSpec.model_validate({**MINIMAL, "seed": 1}).spec_hash() != reference


def test_openapi_schema_lists_every_optimizer() -> None:
    schema = json.dumps(JobSpec.model_json_schema())
    assert all(f'"const": "{name}"' in schema for name in OPTIMIZER_ARGS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_resolved_spec_validates_again(path: Path) -> None:
    """The worker re-validates the stored, defaults-filled spec: it must pass unchanged."""
    resolved = JobSpec.model_validate(yaml.safe_load(path.read_text())).model_dump(mode="json")
    assert JobSpec.model_validate(resolved).model_dump(mode="json") == resolved
