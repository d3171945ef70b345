"""`task: solve`: run every method of the spec on one problem and log what each achieved.

Metrics go through the same sink as a training job's, named `<method>/<metric>`:
coef_error (‖w − w_true‖₂, or the eigenvector's distance up to sign), residual (‖Xw − y‖₂,
‖Ax − b‖₂ or ‖Av − λv‖₂), loss (mean squared residual, what a training job logs as train_loss),
lstsq_gap (‖w − w_ref‖ / ‖w_ref‖ against numpy.linalg.lstsq, or eigh), time_s, and for
iterative methods all of them per iteration (step = iteration; direct methods log at step 1).
The summary holds the problem's condition number and one row per method; on problems with at
most SHOWN_COEFFICIENTS unknowns (the documents' hand examples) a row also holds the solution
itself, `coef`, so the result reads as the document states it (a = 2, b = 1).
"""

import platform
import time
from typing import Any

import numpy as np
import scipy
import torch

from models.spec import JobSpec
from models.tables import JobStatus
from worker.engine.loop import VERSION, Outcome
from worker.engine.setup import resolve_device
from worker.engine.sink import MetricSink
from worker.solvers.base import Context, Iterate, Recorder, Solution, stacked_system
from worker.solvers.problems import Problem, build_problem
from worker.solvers.registry import METHODS

SHOWN_COEFFICIENTS = 10


def run_solve(spec: JobSpec, sink: MetricSink, *, device: torch.device | None = None) -> Outcome:
    started = time.perf_counter()
    assert spec.solve is not None
    solve = spec.solve
    device = device or resolve_device(spec.device)
    problem = build_problem(solve.problem, spec.seed)
    reference = reference_solution(problem, solve.ridge)
    total = len(solve.methods)
    sink.set_totals(total, 1.0)
    rows: dict[str, dict[str, Any]] = {}
    status = JobStatus.succeeded
    for done, method in enumerate(solve.methods, start=1):
        label = method.label or method.name
        recorder = Recorder(every=solve.record_every)
        ctx = Context(problem, solve.ridge, spec.seed, str(device), recorder)
        rows[label] = run_method(method, ctx, recorder, reference, sink, label)
        if sink.flush(done, done / total):
            status = JobStatus.canceled
            break
    summary = sink.summary()
    summary.update(
        task="solve",
        problem=solve.problem.name,
        description=problem.description,
        shape=list(problem.shape),
        ridge=solve.ridge,
        methods=rows,
        steps=len(rows),
        wall_time_s=round(time.perf_counter() - started, 3),
        device=str(device),
        spec_hash=spec.spec_hash(),
        seed=spec.seed,
        versions={
            "descent": VERSION,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        **conditioning(problem, solve.ridge),
    )
    return Outcome(status, summary)


def run_method(
    method: Any,
    ctx: Context,
    recorder: Recorder,
    reference: np.ndarray,
    sink: MetricSink,
    label: str,
) -> dict[str, Any]:
    """Solve, time it, log its metrics. A numerical failure (singular matrix) is a result."""
    solver = METHODS[method.name]
    row: dict[str, Any] = {"method": method.name}
    began = time.perf_counter()
    recorder.started = began
    try:
        with np.errstate(all="ignore"):  # overflow in a diverging method is reported, not warned
            solution = solver(method.args, ctx)
    except np.linalg.LinAlgError as exc:
        row["failed"] = f"LinAlgError: {exc}"
        return row
    seconds = time.perf_counter() - began
    iterates = recorder.finish()
    if solution.iterations is None:  # a direct method: one point
        iterates = [Iterate(1, solution.coef, seconds)]
    else:
        iterates[-1] = Iterate(iterates[-1].step, iterates[-1].coef, seconds)
    final: dict[str, float] = {}
    with np.errstate(all="ignore"):
        for point in iterates:
            final = measures(ctx.problem, point.coef, reference)
            final["time_s"] = point.seconds
            for name, value in final.items():
                if np.isfinite(value):
                    sink.log(f"{label}/{name}", point.step, value, None)
    for name, points in solution.series.items():
        for step, value in points:
            if np.isfinite(value):
                sink.log(f"{label}/{name}", step, value, None)
    if "q" in solution.details:  # how far the computed Q is from orthonormal: ‖QᵀQ − I‖_F
        q = solution.details["q"]
        final["orthogonality_loss"] = float(np.linalg.norm(q.T @ q - np.eye(q.shape[1])))
        sink.log(
            f"{label}/orthogonality_loss", iterates[-1].step, final["orthogonality_loss"], None
        )
    row.update({k: (v if np.isfinite(v) else None) for k, v in final.items()})
    coef = iterates[-1].coef
    if len(coef) <= SHOWN_COEFFICIENTS:
        row["coef"] = [float(c) if np.isfinite(c) else None for c in coef]
    if solution.iterations is not None:
        row.update(
            iterations=solution.iterations,
            converged=bool(solution.converged),
            diverged=solution.diverged,
        )
    return row


def measures(problem: Problem, coef: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a = problem.matrix
    if problem.kind == "eigen":
        eigenvalue = float(coef @ a @ coef)
        assert problem.eigenvalue is not None
        return {
            "coef_error": float(
                min(np.linalg.norm(coef - problem.truth), np.linalg.norm(coef + problem.truth))
            ),
            "eigenvalue": eigenvalue,
            "eigenvalue_error": abs(eigenvalue - problem.eigenvalue),
            "residual": float(np.linalg.norm(a @ coef - eigenvalue * coef)),
        }
    assert problem.target is not None
    residual = a @ coef - problem.target
    out = {
        "coef_error": float(np.linalg.norm(coef - problem.truth)),
        "residual": float(np.linalg.norm(residual)),
        "lstsq_gap": float(np.linalg.norm(coef - reference) / (np.linalg.norm(reference) or 1.0)),
    }
    if problem.kind == "least_squares":
        out["loss"] = float(np.mean(residual**2))
    return out


def reference_solution(problem: Problem, ridge: float) -> np.ndarray:
    """numpy.linalg.lstsq (LAPACK gelsd, SVD-based) on the problem as posed; eigh's vector for
    eigen problems."""
    if problem.kind == "eigen":
        values, vectors = np.linalg.eigh(problem.matrix)
        return vectors[:, int(np.argmax(np.abs(values)))]
    matrix, rhs = stacked_system(Context(problem, ridge))
    return np.linalg.lstsq(matrix, rhs, rcond=None)[0]


def conditioning(problem: Problem, ridge: float) -> dict[str, float | None]:
    """κ of the matrix the factorization methods see; the normal equations see its square."""
    if problem.kind == "eigen":
        magnitudes = np.sort(np.abs(np.linalg.eigvalsh(problem.matrix)))[::-1]
        return {"eigen_gap": float(magnitudes[1] / magnitudes[0])}
    matrix, _ = stacked_system(Context(problem, ridge))
    singular = np.linalg.svd(matrix, compute_uv=False)
    kappa = float(singular[0] / singular[-1]) if singular[-1] > 0 else float("inf")
    normal = kappa**2 if problem.kind == "least_squares" else kappa
    return {
        "condition_number": kappa if np.isfinite(kappa) else None,
        "normal_condition_number": normal if np.isfinite(normal) else None,
    }


__all__ = ["Solution", "run_solve"]
