"""Every method against numpy.linalg.lstsq on well-conditioned problems, and the explicit
inverse against QR where the conditioning is bad (measured through the job's own metrics)."""

import pytest
import torch

from models.catalog.solvers import METHOD_ARGS, METHOD_KINDS
from models.spec import JobSpec
from worker.engine.sink import MemorySink
from worker.solvers import run_solve

TIGHT = {"tol": 1e-13, "max_iter": 20_000}
ITERATIVE = {"gradient_descent", "conjugate_gradient", "jacobi", "newton", "power_iteration"}


def solve(problem: dict, methods: list | None = None, **fields):  # type: ignore[no-untyped-def]
    section = {"problem": problem, **fields}
    if methods is not None:
        section["methods"] = methods
    spec = JobSpec.model_validate({"task": "solve", "solve": section, "seed": 3})
    sink = MemorySink(flush_seconds=3600)
    outcome = run_solve(spec, sink, device=torch.device("cpu"))
    assert outcome.status == "succeeded"
    return outcome.summary, sink


def every_method(kind: str, ridge: float = 0.0) -> list[dict]:
    methods = []
    for name in METHOD_ARGS:
        if kind not in METHOD_KINDS[name]:
            continue
        args = TIGHT if name in ITERATIVE - {"newton"} else {}
        if name == "ridge" and not ridge:
            continue
        methods.append({"name": name, "args": args})
    for backend in ("scipy", "torch"):
        methods.append(
            {"name": "qr_householder", "label": f"qr_{backend}", "args": {"backend": backend}}
        )
    return methods


WELL_CONDITIONED = [
    ({"name": "random_regression", "args": {"n_samples": 300, "n_features": 20}}, 0.0),
    ({"name": "random_regression", "args": {"n_samples": 300, "n_features": 20}}, 5.0),
    ({"name": "synthetic_regression", "args": {"n_samples": 200, "n_features": 8}}, 0.0),
    ({"name": "four_points"}, 0.0),
    ({"name": "spd_system", "args": {"size": 30, "condition_number": 3.0}}, 0.0),
]


@pytest.mark.parametrize(("problem", "ridge"), WELL_CONDITIONED)
def test_every_method_agrees_with_lstsq(problem: dict, ridge: float) -> None:
    kind = "linear_system" if problem["name"] == "spd_system" else "least_squares"
    summary, _ = solve(problem, every_method(kind, ridge), ridge=ridge)
    assert summary["condition_number"] < 100
    gaps = {label: row["lstsq_gap"] for label, row in summary["methods"].items()}
    assert len(gaps) >= 12 - (ridge == 0)
    assert max(gaps.values()) < 1e-9, gaps
    iterative = [row for row in summary["methods"].values() if "iterations" in row]
    assert iterative and all(row["converged"] for row in iterative)


def test_ridge_variant_differs_from_plain_least_squares() -> None:
    problem = {"name": "random_regression", "args": {"n_samples": 50, "n_features": 10}}
    plain, _ = solve(problem, ["qr_householder"])
    ridged, _ = solve(problem, ["qr_householder", "ridge"], ridge=50.0)
    # the stacked QR and the closed form solve the same ridge problem …
    assert ridged["methods"]["ridge"]["lstsq_gap"] < 1e-12
    # … which is not the unregularized one: λ pulls the weights toward zero
    assert (
        ridged["methods"]["qr_householder"]["residual"]
        > plain["methods"]["qr_householder"]["residual"]
    )


def test_power_iteration_agrees_with_eigh() -> None:
    summary, _ = solve(
        {"name": "random_symmetric", "args": {"size": 40, "gap": 0.7}},
        [{"name": "power_iteration", "args": TIGHT}, "eigh"],
    )
    power = summary["methods"]["power_iteration"]
    assert power["converged"] and power["coef_error"] < 1e-9
    assert power["eigenvalue_error"] < 1e-12 and summary["eigen_gap"] == pytest.approx(0.7)


def test_explicit_inverse_loses_to_qr_when_ill_conditioned() -> None:
    """κ(X) = 1e10: the normal equations see κ² = 1e20, past 1/ε; QR sees 1e10."""
    summary, _ = solve(
        {"name": "conditioned", "args": {"condition_number": 1e10}},
        ["normal_inverse", "qr_householder", "svd_pinv"],
    )
    errors = {label: row["coef_error"] for label, row in summary["methods"].items()}
    assert summary["condition_number"] == pytest.approx(1e10, rel=1e-3)
    assert errors["normal_inverse"] > 1e3 * errors["qr_householder"], errors
    assert errors["qr_householder"] < 1e-4 and errors["svd_pinv"] < 1e-4


def test_near_singular_example_hurts_the_inverse_not_qr() -> None:
    """000: [[1, 1], [1, 1.0000001]]; κ ≈ 4e7, so its normal matrix has κ ≈ 1.6e15."""
    summary, _ = solve({"name": "near_singular"}, ["normal_inverse", "qr_householder"])
    errors = {label: row["coef_error"] for label, row in summary["methods"].items()}
    assert summary["condition_number"] == pytest.approx(4e7, rel=0.01)
    assert errors["normal_inverse"] > 1e3 * errors["qr_householder"], errors


def test_newton_lands_on_the_minimum_in_one_step() -> None:
    summary, sink = solve({"name": "random_regression", "args": {"n_samples": 200}}, ["newton"])
    assert summary["methods"]["newton"]["iterations"] == 1
    assert sink.series("newton/lstsq_gap")[-1] < 1e-12


def test_gradient_descent_with_the_documents_settings_is_not_converged() -> None:
    """002's code: lr 0.01 on the mean gradient, 1000 iterations, on the 1000×100 problem."""
    summary, _ = solve(
        {"name": "random_regression"},
        [
            "qr_householder",
            {"name": "gradient_descent", "args": {"lr": 0.01, "average": True, "tol": 0.0}},
        ],
    )
    gd, qr = summary["methods"]["gradient_descent"], summary["methods"]["qr_householder"]
    assert gd["iterations"] == 1000 and not gd["converged"]
    assert gd["lstsq_gap"] > 1e-3 > 1e-12 > qr["lstsq_gap"]
    assert gd["coef_error"] > qr["coef_error"]
