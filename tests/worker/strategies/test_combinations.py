"""Combinations that cannot run are refused when the spec is validated (at submit time), with
the field to change and the reason; the ones that can run pass."""

import pytest
from pydantic import ValidationError

from models.spec import JobSpec, describe_errors

BASE = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "sgd"}}
POINTS = {"name": "points", "args": {"x": [[1.0], [2.0]], "y": [[3.0], [5.0]]}, "val_fraction": 0}


def errors_of(patch: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({**BASE, **patch})
    return {e["field"]: e["message"] for e in describe_errors(list(caught.value.errors()))}


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"optimizer": {"name": "lbfgs", "sam": {"rho": 0.05}}}, "optimizer.sam", "closure"),
        ({"optimizer": {"name": "newton", "sam": {}}}, "optimizer.sam", "Hessian"),
        ({"optimizer": {"name": "lbfgs"}, "clipping": {"mode": "norm"}}, "clipping.mode", "'none'"),
        ({"optimizer": {"name": "lbfgs"}, "precision": "fp16"}, "precision", "fp32"),
        (
            {"optimizer": {"name": "simulated_annealing"}, "precision": "bf16"},
            "precision",
            "gradient-free",
        ),
        (
            {"optimizer": {"name": "evolution_strategies"}, "regularization": {"l1": 0.1}},
            "regularization.l1",
            "gradient-free",
        ),
        (
            {"optimizer": {"name": "newton"}, "regularization": {"gradient_noise": 0.1}},
            "regularization.gradient_noise",
            "must be 0",
        ),
        (
            {
                "optimizer": {"name": "lbfgs"},
                "regularization": {"weight_decay": 0.1, "decay": "decoupled"},
            },
            "regularization.decay",
            "coupled",
        ),
        (
            {"optimizer": {"name": "schedule_free_adamw"}, "schedule": {"name": "cosine"}},
            "schedule.name",
            "constant",
        ),
        (
            {
                "optimizer": {"name": "sgd", "lr": 0.01},
                "schedule": {"name": "cosine", "args": {"lr_min": 0.1}},
            },
            "schedule.args.lr_min",
            "above",
        ),
        (
            {"data": {"name": "digits", "val_fraction": 0}, "schedule": {"name": "plateau"}},
            "schedule.name",
            "val_fraction",
        ),
        (
            {"data": POINTS, "regularization": {"label_smoothing": 0.1}},
            "regularization.label_smoothing",
            "classification",
        ),
        (
            {
                "data": {"name": "adding_problem"},
                "schedule": {"name": "plateau", "args": {"metric": "val_acc"}},
            },
            "schedule.args.metric",
            "regression",
        ),
        ({"task": "lr_range_test", "optimizer": {"name": "lbfgs"}}, "optimizer.name", "mini-batch"),
        ({"task": "lr_range_test", "optimizer": {"name": "gd"}}, "optimizer.name", "mini-batch"),
        ({"task": "lr_range_test", "schedule": {"name": "cosine"}}, "schedule", "sets the rate"),
        ({"lr_range_test": {"steps": 50}}, "lr_range_test", "only read by task"),
        (
            {"task": "lr_range_test", "lr_range_test": {"lr_min": 1.0, "lr_max": 0.1}},
            "lr_range_test",
            "below",
        ),
        ({"optimizer": {"name": "sgd", "args": {"nesterov": True}}}, "optimizer.args", "momentum"),
        (
            {"optimizer": {"name": "evolution_strategies", "args": {"population": 7}}},
            "optimizer.args",
            "even",
        ),
        (
            {"model": {"name": "rnn", "args": {"cell": "lstm", "orthogonal": "cayley"}}},
            "model.args",
            "cell 'rnn'",
        ),
        (
            {"model": {"name": "transformer", "args": {"d_model": 30, "heads": 4}}},
            "model.args",
            "divisible",
        ),
        (
            {"model": {"name": "mlp", "args": {"orthogonal": "qr", "spectral_norm": True}}},
            "model.args",
            "not both",
        ),
        (
            {"clipping": {"mode": "agc", "max_norm": 2.0}},
            "clipping",
            "max_norm applies to mode 'norm'",
        ),
        (
            {"schedule": {"name": "multistep", "args": {"milestones": [10, 5]}}},
            "schedule.args.milestones",
            "increasing",
        ),
        (
            {"data": {"name": "points", "args": {"x": [[1.0]], "y": [[1.0], [2.0]]}}},
            "data.args",
            "rows",
        ),
    ],
)
def test_refused_with_the_field_and_the_reason(patch: dict, field: str, words: str) -> None:
    errors = errors_of(patch)
    assert field in errors, errors
    assert words in errors[field]


def test_several_problems_are_reported_together() -> None:
    errors = errors_of(
        {
            "optimizer": {"name": "lbfgs", "sam": {"rho": 0.1}},
            "clipping": {"mode": "norm"},
            "precision": "fp16",
        }
    )
    assert {"optimizer.sam", "clipping.mode", "precision"} <= set(errors)


@pytest.mark.parametrize(
    "patch",
    [
        {
            "optimizer": {"name": "adamw", "sam": {"rho": 0.05, "adaptive": True}},
            "precision": "fp16",
            "clipping": {"mode": "norm"},
        },
        {"optimizer": {"name": "lbfgs"}, "regularization": {"weight_decay": 0.01}},
        {
            "optimizer": {"name": "schedule_free_adamw"},
            "schedule": {"name": "constant", "warmup_steps": 100},
        },
        {
            "optimizer": {"name": "muon", "lr": 0.02},
            "regularization": {"weight_decay": 0.1, "decay": "coupled"},
        },
        {
            "optimizer": {"name": "sgd", "lr": 0.1},
            "schedule": {"name": "plateau", "args": {"metric": "val_acc"}},
        },
        {"task": "lr_range_test", "optimizer": {"name": "adam"}, "clipping": {"mode": "norm"}},
        {
            "data": POINTS,
            "model": {"name": "linear"},
            "optimizer": {"name": "gd", "lr": 0.1},
            "init": "zeros",
        },
        {
            "model": {"name": "rnn", "args": {"cell": "rnn", "orthogonal": "householder"}},
            "data": {"name": "adding_problem"},
        },
    ],
)
def test_combinations_that_run_are_accepted(patch: dict) -> None:
    JobSpec.model_validate({**BASE, **patch})


@pytest.mark.parametrize(
    "patch",
    [
        {"clipping": {"mode": "agc", "agc_factor": 0.02}},
        {"optimizer": {"name": "adamw", "sam": {"rho": 0.1}}, "regularization": {"l1": 0.01}},
        {"task": "lr_range_test"},
        {"schedule": {"name": "plateau", "warmup_steps": 5}, "init": "orthogonal"},
    ],
)
def test_a_resolved_spec_validates_again(patch: dict) -> None:
    """The API stores the spec with every default filled in; the worker validates that copy."""
    spec = JobSpec.model_validate({**BASE, **patch})
    again = JobSpec.model_validate(spec.model_dump(mode="json"))
    assert again.spec_hash() == spec.spec_hash()
