"""A solve job's shape: metric names and steps, summary, cancel, and failures that are results."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from models.catalog.base import NoArgs
from models.catalog.solvers import METHOD_ARGS, METHOD_KINDS, PROBLEM_ARGS, PROBLEM_KINDS
from models.spec import JobSpec, describe_errors
from worker.engine.sink import MemorySink
from worker.solvers import METHODS, PROBLEMS, run_solve
from worker.solvers.base import Context, Recorder
from worker.solvers.problems import Problem
from worker.solvers.runner import run_method


def spec_of(section: dict, **fields) -> JobSpec:  # type: ignore[no-untyped-def]
    return JobSpec.model_validate({"task": "solve", "solve": section, **fields})


def test_schema_and_implementation_halves_match() -> None:
    assert set(PROBLEM_ARGS) == set(PROBLEMS) == set(PROBLEM_KINDS)
    assert set(METHOD_ARGS) == set(METHODS) == set(METHOD_KINDS)


@pytest.mark.parametrize("name", sorted(PROBLEM_ARGS))
def test_every_problem_builds_with_its_declared_kind(name: str) -> None:
    problem = PROBLEMS[name](PROBLEM_ARGS[name](), 0)
    assert problem.kind == PROBLEM_KINDS[name]
    if problem.kind != "eigen":
        assert problem.target is not None and problem.truth.shape == (problem.shape[1],)


def test_metrics_are_series_per_method_and_the_summary_has_the_conditioning() -> None:
    spec = spec_of(
        {"problem": {"name": "two_points"}, "methods": ["qr_householder", "conjugate_gradient"]}
    )
    sink = MemorySink(flush_seconds=3600)
    outcome = run_solve(spec, sink, device=torch.device("cpu"))
    steps = {}
    for point in sink.points:
        steps.setdefault(point["name"], []).append(point["step"])
    assert steps["qr_householder/coef_error"] == [1]  # a direct method: one point
    assert steps["conjugate_gradient/coef_error"] == [0, 1, 2]  # initial guess, two CG steps
    assert steps["conjugate_gradient/alpha"] == [1, 2]
    for metric in ("residual", "loss", "lstsq_gap", "time_s", "orthogonality_loss"):
        assert f"qr_householder/{metric}" in steps
    assert sink.flushes == 2  # one write per method: progress moves method by method
    summary = outcome.summary
    # κ of [[1, 1], [2, 1]]: singular values √(7 ± √45)/… ; its square is κ(AᵀA) of [[5,3],[3,2]]
    gram_eigen = np.linalg.eigvalsh([[5.0, 3.0], [3.0, 2.0]])
    assert summary["normal_condition_number"] == pytest.approx(gram_eigen[1] / gram_eigen[0])
    assert summary["condition_number"] == pytest.approx(np.sqrt(gram_eigen[1] / gram_eigen[0]))
    assert summary["methods"]["conjugate_gradient"]["iterations"] == 2
    assert summary["final"]["qr_householder/coef_error"] < 1e-14
    assert summary["shape"] == [2, 2] and summary["task"] == "solve"


def test_a_singular_matrix_is_reported_as_that_methods_result() -> None:
    singular = Problem(
        "least_squares", np.ones((3, 2)), np.ones(3), np.array([0.5, 0.5]), "rank one"
    )
    sink = MemorySink(flush_seconds=3600)
    recorder = Recorder()
    spec = spec_of({"problem": {"name": "two_points"}, "methods": ["normal_inverse"]})
    row = run_method(
        spec.solve.methods[0],  # type: ignore[union-attr]
        Context(singular, record=recorder),
        recorder,
        np.array([0.5, 0.5]),
        sink,
        "normal_inverse",
    )
    assert row["failed"].startswith("LinAlgError") and "coef_error" not in row
    assert sink.series("normal_inverse/coef_error") == []


def test_a_diverging_method_stops_and_says_so() -> None:
    spec = spec_of(
        {
            "problem": {"name": "two_points"},
            "methods": [{"name": "gradient_descent", "args": {"lr": 1.0}}],
        }
    )
    sink = MemorySink(flush_seconds=3600)
    outcome = run_solve(spec, sink, device=torch.device("cpu"))
    row = outcome.summary["methods"]["gradient_descent"]
    assert outcome.status == "succeeded"  # the comparison is the result, divergence included
    assert row["diverged"] and not row["converged"] and row["iterations"] < 1000
    assert all(np.isfinite(v) for v in sink.series("gradient_descent/coef_error"))


@dataclass
class CancelingSink(MemorySink):
    def write(self, points, *, step, epoch, totals):  # type: ignore[no-untyped-def]
        super().write(points, step=step, epoch=epoch, totals=totals)
        return True


def test_cancel_stops_between_methods() -> None:
    spec = spec_of({"problem": {"name": "two_points"}, "methods": ["normal_lu", "svd_pinv"]})
    outcome = run_solve(spec, CancelingSink(flush_seconds=3600), device=torch.device("cpu"))
    assert outcome.status == "canceled" and list(outcome.summary["methods"]) == ["normal_lu"]


def test_gradient_descent_default_step_is_about_one_over_the_largest_eigenvalue() -> None:
    """Power iteration estimates λ_max from below, so lr ≥ 1/L; it must stay well under the
    2/L where gradient descent diverges."""
    problem = PROBLEMS["random_regression"](PROBLEM_ARGS["random_regression"](), 0)
    solution = METHODS["gradient_descent"](
        METHOD_ARGS["gradient_descent"](max_iter=1), Context(problem)
    )
    largest = np.linalg.norm(problem.matrix, 2) ** 2
    assert 1.0 <= solution.details["lr"] * largest < 1.1


def errors_of(spec: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(spec)
    return {e["field"]: e["message"] for e in describe_errors(list(caught.value.errors()))}


def test_solve_spec_defaults_to_every_method_for_the_problem_kind() -> None:
    spec = spec_of({"problem": {"name": "power_example"}})
    assert [m.name for m in spec.solve.methods] == ["power_iteration", "eigh"]  # type: ignore[union-attr]
    least = spec_of({"problem": {"name": "four_points"}})
    assert "ridge" not in [m.name for m in least.solve.methods]  # type: ignore[union-attr]
    ridged = spec_of({"problem": {"name": "four_points"}, "ridge": 0.1})
    assert "ridge" in [m.name for m in ridged.solve.methods]  # type: ignore[union-attr]


def test_solve_spec_round_trips_through_its_stored_form() -> None:
    spec = spec_of({"problem": {"name": "conditioned"}, "methods": ["svd_pinv"]}, seed=4)
    stored = spec.model_dump(mode="json")
    assert set(stored) == {"version", "name", "tags", "task", "solve", "seed", "device"}
    again = JobSpec.model_validate(stored)
    assert again == spec and again.spec_hash() == spec.spec_hash()


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"task": "solve"}, "solve", "required"),
        (
            {"task": "solve", "solve": {"problem": {"name": "two_points"}}, "epochs": 3},
            "epochs",
            "not used by task 'solve'",
        ),
        (
            {"task": "solve", "solve": {"problem": {"name": "nope"}}},
            "solve.problem.name",
            "'cg_example'",
        ),
        (
            {"task": "solve", "solve": {"problem": {"name": "two_points"}, "methods": ["lu"]}},
            "solve.methods.0.name",
            "'normal_lu'",
        ),
        (
            {"task": "solve", "solve": {"problem": {"name": "two_points"}, "methods": ["eigh"]}},
            "solve.methods.0.name",
            "does not solve least_squares",
        ),
        (
            {
                "task": "solve",
                "solve": {"problem": {"name": "two_points"}, "methods": ["svd_pinv", "svd_pinv"]},
            },
            "solve.methods.1.label",
            "used twice",
        ),
        (
            {"task": "solve", "solve": {"problem": {"name": "cg_example"}, "ridge": 1.0}},
            "solve.ridge",
            "least-squares",
        ),
        (
            {"task": "solve", "solve": {"problem": {"name": "two_points"}, "methods": ["ridge"]}},
            "solve.methods.0.args.lam",
            "λ > 0",
        ),
        (
            {
                "task": "solve",
                "solve": {"problem": {"name": "conditioned", "args": {"condition_number": 0.5}}},
            },
            "solve.problem.args.condition_number",
            "greater than or equal to 1",
        ),
        ({"optimizer": {"name": "adam"}, "data": {"name": "digits"}}, "model", "required"),
    ],
)
def test_bad_solve_specs_name_the_field(spec: dict, field: str, words: str) -> None:
    errors = errors_of(spec)
    assert field in errors, errors
    assert words in errors[field]


def test_noargs_problems_take_no_args() -> None:
    assert PROBLEM_ARGS["two_points"] is NoArgs
    assert "solve.problem.args.extra" in errors_of(
        {"task": "solve", "solve": {"problem": {"name": "two_points", "args": {"extra": 1}}}}
    )
