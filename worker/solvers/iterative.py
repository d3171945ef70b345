"""Iterative methods on the normal equations H w = g (H = XᵀX + λI, g = Xᵀy; or A x = b).

Written out here rather than called from scipy.sparse.linalg because the point is the path:
every iterate is recorded (error per iteration, the curves that compare with training jobs),
and conjugate gradient's step sizes α_k are reported so 002's hand step can be checked.
All start from zero, as the document's hand examples do.
"""

import numpy as np

from models.catalog.solvers import GradientDescentArgs, IterativeArgs, NewtonArgs
from worker.solvers.base import (
    Context,
    Solution,
    finite,
    normal_diagonal,
    normal_equations,
    normal_operator,
)

BLOWUP = 1e150  # an iterate this large has diverged; stop before it overflows


def _stop(norm: float, start: float, tol: float) -> bool:
    return norm <= tol * start or norm == 0.0


def largest_eigenvalue(apply, size: int, seed: int, iterations: int = 30) -> float:  # type: ignore[no-untyped-def]
    """A power-iteration estimate of λ_max(H): cheaper than an SVD, enough for a step size."""
    v = np.random.default_rng(seed).standard_normal(size)
    estimate = 0.0
    for _ in range(iterations):
        w = apply(v)
        estimate = float(np.linalg.norm(w))
        if estimate == 0.0:
            return 0.0
        v = w / estimate
    return estimate


def gradient_descent(args: GradientDescentArgs, ctx: Context) -> Solution:
    """w ← w − lr·∇, ∇ = XᵀXw − Xᵀy + λw (÷ n_samples with `average`), the gradient of
    ½‖Xw − y‖² + ½λ‖w‖². The default lr is 1/L with L ≈ λ_max(XᵀX + λI)."""
    apply, rhs = normal_operator(ctx)
    scale = 1.0 / ctx.problem.shape[0] if args.average else 1.0
    lr = args.lr
    if lr is None:
        lr = 1.0 / (scale * largest_eigenvalue(apply, len(rhs), ctx.seed) or 1.0)
    w = np.zeros(len(rhs))
    ctx.record(0, w)
    start = float(np.linalg.norm(rhs))
    converged, diverged, step = False, False, 0
    for step in range(1, args.max_iter + 1):
        grad = scale * (apply(w) - rhs)
        w = w - lr * grad
        ctx.record(step, w)
        if not finite(w) or np.abs(w).max() > BLOWUP:
            diverged = True
            break
        if _stop(float(np.linalg.norm(grad)) / scale, start, args.tol):
            converged = True
            break
    return Solution(w, step, converged, diverged, details={"lr": lr})


def conjugate_gradient(args: IterativeArgs, ctx: Context) -> Solution:
    """Hestenes–Stiefel CG on H w = g: r₀ = g − Hw₀, p₀ = r₀, α_k = r_kᵀr_k / p_kᵀHp_k,
    w_{k+1} = w_k + α_k p_k, r_{k+1} = r_k − α_k Hp_k, β_k = r_{k+1}ᵀr_{k+1} / r_kᵀr_k,
    p_{k+1} = r_{k+1} + β_k p_k. Exact in n steps in exact arithmetic."""
    apply, rhs = normal_operator(ctx)
    w = np.zeros(len(rhs))
    ctx.record(0, w)
    r = rhs - apply(w)
    p = r.copy()
    rr = float(r @ r)
    start = np.sqrt(rr)
    alphas: list[tuple[int, float]] = []
    converged, diverged, step = _stop(start, start, args.tol), False, 0
    while not converged and step < args.max_iter:
        hp = apply(p)
        curvature = float(p @ hp)
        if curvature <= 0.0:  # H is not positive definite along p (or p vanished)
            diverged = curvature < 0.0
            break
        alpha = rr / curvature
        step += 1
        w = w + alpha * p
        r = r - alpha * hp
        alphas.append((step, alpha))
        ctx.record(step, w)
        rr_next = float(r @ r)
        if not np.isfinite(rr_next):
            diverged = True
            break
        converged = _stop(np.sqrt(rr_next), start, args.tol)
        p = r + (rr_next / rr) * p
        rr = rr_next
    return Solution(w, step, converged, diverged, series={"alpha": alphas})


def jacobi(args: IterativeArgs, ctx: Context) -> Solution:
    """w_i ← (g_i − Σ_{j≠i} H_ij w_j) / H_ii for all i at once, i.e. w ← w + D⁻¹(g − Hw).
    Converges when the spectral radius of D⁻¹(H − D) is below 1 (e.g. diagonal dominance)."""
    apply, rhs = normal_operator(ctx)
    diagonal = normal_diagonal(ctx)
    if np.any(diagonal == 0.0):
        raise np.linalg.LinAlgError("Jacobi needs a nonzero diagonal")
    w = np.zeros(len(rhs))
    ctx.record(0, w)
    start = float(np.linalg.norm(rhs))
    converged, diverged, step = False, False, 0
    for step in range(1, args.max_iter + 1):
        residual = rhs - apply(w)
        if _stop(float(np.linalg.norm(residual)), start, args.tol):
            converged, step = True, step - 1
            break
        w = w + residual / diagonal
        ctx.record(step, w)
        if not finite(w) or np.abs(w).max() > BLOWUP:
            diverged = True
            break
    return Solution(w, step, converged, diverged)


def newton(args: NewtonArgs, ctx: Context) -> Solution:
    """w ← w − damping·H⁻¹∇f on f = ½‖Xw − y‖² + ½λ‖w‖² (Hessian H, solved, not inverted).
    On this quadratic one undamped step lands on the minimum."""
    hessian, rhs = normal_equations(ctx)
    w = np.zeros(len(rhs))
    ctx.record(0, w)
    start = float(np.linalg.norm(rhs))
    converged, step = False, 0
    for step in range(1, args.max_iter + 1):
        grad = hessian @ w - rhs
        if _stop(float(np.linalg.norm(grad)), start, args.tol):
            converged, step = True, step - 1
            break
        w = w - args.damping * np.linalg.solve(hessian, grad)
        ctx.record(step, w)
    else:
        converged = _stop(float(np.linalg.norm(hessian @ w - rhs)), start, args.tol)
    return Solution(w, step, converged)
