"""The dominant eigenpair of a symmetric matrix: power iteration (002), and LAPACK's eigh as
the direct reference."""

import numpy as np

from models.catalog.base import NoArgs
from models.catalog.solvers import IterativeArgs
from worker.solvers.base import Context, Solution


def power_iteration(args: IterativeArgs, ctx: Context) -> Solution:
    """v ← Av / ‖Av‖, eigenvalue estimate λ = vᵀAv (the Rayleigh quotient); stops when
    ‖Av − λv‖ ≤ tol·|λ|. Starts from the problem's v₀ (002: [1, 0]) or a seeded random vector."""
    a = ctx.problem.matrix
    start = ctx.problem.start
    if start is None:
        start = np.random.default_rng(ctx.seed).standard_normal(len(a))
    v = start / np.linalg.norm(start)
    ctx.record(0, v)
    av = a @ v
    eigenvalue, converged, step = float(v @ av), False, 0
    for step in range(1, args.max_iter + 1):
        norm = float(np.linalg.norm(av))
        if norm == 0.0:
            raise np.linalg.LinAlgError("the start vector lies in the null space of A")
        v = av / norm
        ctx.record(step, v)
        av = a @ v
        eigenvalue = float(v @ av)
        if np.linalg.norm(av - eigenvalue * v) <= args.tol * abs(eigenvalue):
            converged = True
            break
    return Solution(v, step, converged, eigenvalue=eigenvalue)


def eigh(args: NoArgs, ctx: Context) -> Solution:
    """All eigenpairs by LAPACK (syevd); keeps the one of largest magnitude."""
    values, vectors = np.linalg.eigh(ctx.problem.matrix)
    top = int(np.argmax(np.abs(values)))
    return Solution(vectors[:, top], eigenvalue=float(values[top]))
