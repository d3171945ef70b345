"""Solve-task options (the schema half): problems and the methods that solve them.

`task: solve` runs direct and classical methods (normal equations, QR, SVD, conjugate gradient,
power iteration …) on one problem and reports per-method metrics. The implementations live in
worker/solvers/; tests/worker/solvers/test_catalog.py asserts both halves name the same entries.

Every problem has a kind, and every method says which kinds it solves:
- least_squares: minimize ‖Xw − y‖² (+ ridge·‖w‖² when `solve.ridge` > 0). Iterative methods
  work on the normal equations XᵀX w = Xᵀy; QR, Gram-Schmidt and SVD factor X itself.
- linear_system: A x = b with A symmetric positive definite. The "normal" matrix is A itself:
  `normal_inverse` is A⁻¹b, conjugate gradient runs on A (002's 2×2 example).
- eigen: the dominant eigenpair of a symmetric matrix (power iteration).
"""

from typing import Any, Literal

from pydantic import Field, model_validator

from models.catalog.base import Args, NoArgs

ProblemKind = Literal["least_squares", "linear_system", "eigen"]

MaxIter = Field(1000, ge=1, le=1_000_000, description="iterations at most")
Tol = Field(
    1e-10, ge=0.0, le=1.0, description="stop when the gradient (or change) falls below tol × start"
)


# Problems -------------------------------------------------------------------------------------

MAX_ENTRIES = 16_000_000  # 128 MB of float64 per matrix: a worker holds a few copies at most


class MatrixArgs(Args):
    """Problems whose matrix size the spec chooses; rows × columns is capped at MAX_ENTRIES."""

    @model_validator(mode="after")
    def _fits_in_memory(self) -> "MatrixArgs":
        rows, cols = matrix_shape(self)
        if rows * cols > MAX_ENTRIES:
            raise ValueError(
                f"a {rows}×{cols} matrix has {rows * cols:,} entries; the limit is {MAX_ENTRIES:,}"
            )
        return self


def matrix_shape(args: Any) -> tuple[int, int]:
    """(rows, columns) of a sized problem's matrix, from its args."""
    if hasattr(args, "size"):
        return args.size, args.size
    bias = 1 if isinstance(args, SyntheticRegressionProblemArgs) else 0
    return args.n_samples, args.n_features + bias


def problem_shape(problem: Any) -> tuple[int, int]:
    """(rows, columns) of the matrix of a spec's `solve.problem`, without building it."""
    if isinstance(problem.args, MatrixArgs):
        return matrix_shape(problem.args)
    return (4, 2) if problem.name == "four_points" else (2, 2)  # the documents' examples


class RandomRegressionArgs(MatrixArgs):
    """002's "practical comparison": X ~ N(0,1), w ~ N(0,1), y = Xw + noise·N(0,1).

    Drawn in 002's order with numpy's legacy generator seeded by the spec's seed, so `seed: 42`
    reproduces the document's exact matrix.
    """

    n_samples: int = Field(1000, ge=1, le=200_000)
    n_features: int = Field(100, ge=1, le=4096)
    noise: float = Field(0.1, ge=0.0, le=100.0, description="std of the Gaussian label noise")


class SyntheticRegressionProblemArgs(MatrixArgs):
    """The rows of the `synthetic_regression` data set (same args, same seed → same numbers),
    with a column of ones for the bias: a solve job and a training job can fit the same data."""

    n_samples: int = Field(1000, ge=2, le=200_000)
    n_features: int = Field(10, ge=1, le=4096)
    noise: float = Field(0.1, ge=0.0, le=100.0)


class ConditionedArgs(MatrixArgs):
    """X = U·diag(σ)·Vᵀ with singular values spaced geometrically from 1 to 1/κ, and
    y = X w + r with r orthogonal to X's columns: w is the exact least-squares solution, so the
    coefficient error measures the method's numerical error alone."""

    n_samples: int = Field(100, ge=2, le=20_000)
    n_features: int = Field(10, ge=2, le=2048)
    condition_number: float = Field(1e6, ge=1.0, le=1e16, description="κ(X) = σ_max / σ_min")
    residual: float = Field(
        0.0, ge=0.0, le=1e6, description="‖r‖, the part of y no coefficient can fit (0: consistent)"
    )


class NearSingularArgs(Args):
    """000's nearly singular matrix [[1, 1], [1, 1 + epsilon]] with true weights [1, 1]."""

    epsilon: float = Field(1e-7, gt=0.0, le=1.0)


class SPDSystemArgs(MatrixArgs):
    """A = Q·diag(λ)·Qᵀ with eigenvalues spaced geometrically from 1 to 1/κ, x ~ N(0,1), b = Ax."""

    size: int = Field(100, ge=2, le=4096)
    condition_number: float = Field(100.0, ge=1.0, le=1e16)


class RandomSymmetricArgs(MatrixArgs):
    """A symmetric matrix with eigenvalues 1, gap, gap², …: power iteration's error shrinks by
    `gap` per iteration."""

    size: int = Field(100, ge=2, le=4096)
    gap: float = Field(0.9, gt=0.0, lt=1.0, description="|λ₂ / λ₁|")


PROBLEM_ARGS: dict[str, type[Args]] = {
    "two_points": NoArgs,  # 002: the line through (1,3), (2,5) → a = 2, b = 1
    "four_points": NoArgs,  # 002: (1,2), (2,3), (3,4), (4,5) → weights [1, 1]
    "random_regression": RandomRegressionArgs,
    "synthetic_regression": SyntheticRegressionProblemArgs,
    "conditioned": ConditionedArgs,
    "near_singular": NearSingularArgs,
    "cg_example": NoArgs,  # 002: A = [[4, 1], [1, 3]], b = [1, 2]
    "spd_system": SPDSystemArgs,
    "power_example": NoArgs,  # 002: A = [[2, 1], [1, 2]], v₀ = [1, 0]
    "random_symmetric": RandomSymmetricArgs,
}

PROBLEM_KINDS: dict[str, ProblemKind] = {
    "two_points": "least_squares",
    "four_points": "least_squares",
    "random_regression": "least_squares",
    "synthetic_regression": "least_squares",
    "conditioned": "least_squares",
    "near_singular": "least_squares",
    "cg_example": "linear_system",
    "spd_system": "linear_system",
    "power_example": "eigen",
    "random_symmetric": "eigen",
}


# Methods --------------------------------------------------------------------------------------


class QRArgs(Args):
    backend: Literal["numpy", "scipy", "torch"] = Field(
        "numpy", description="all three call LAPACK's Householder QR (geqrf)"
    )


class SVDArgs(Args):
    rcond: float | None = Field(
        None, ge=0.0, lt=1.0, description="singular values below rcond·σ_max are dropped"
    )


class RidgeArgs(Args):
    lam: float | None = Field(
        None, gt=0.0, le=1e6, description="λ of (XᵀX + λI)⁻¹Xᵀy; default: solve.ridge"
    )


class GradientDescentArgs(Args):
    """Full-batch gradient descent on ½‖Xw − y‖² (002's hand iterations use lr 0.1)."""

    lr: float | None = Field(
        None,
        gt=0.0,
        le=1e6,
        description="default ≈ 1/L, L = λ_max(XᵀX + λI) from 30 power iterations",
    )
    average: bool = Field(False, description="divide the gradient by n_samples (002's code)")
    max_iter: int = MaxIter
    tol: float = Tol


class IterativeArgs(Args):
    max_iter: int = MaxIter
    tol: float = Tol


class NewtonArgs(Args):
    max_iter: int = Field(10, ge=1, le=10_000)
    damping: float = Field(1.0, gt=0.0, le=1.0, description="step = damping · H⁻¹∇f")
    tol: float = Tol


METHOD_ARGS: dict[str, type[Args]] = {
    "normal_inverse": NoArgs,
    "normal_lu": NoArgs,
    "qr_householder": QRArgs,
    "gram_schmidt_classical": NoArgs,
    "gram_schmidt_modified": NoArgs,
    "svd_pinv": SVDArgs,
    "ridge": RidgeArgs,
    "gradient_descent": GradientDescentArgs,
    "conjugate_gradient": IterativeArgs,
    "jacobi": IterativeArgs,
    "newton": NewtonArgs,
    "power_iteration": IterativeArgs,
    "eigh": NoArgs,
}

_LINEAR: frozenset[ProblemKind] = frozenset({"least_squares", "linear_system"})
METHOD_KINDS: dict[str, frozenset[ProblemKind]] = {
    **{name: _LINEAR for name in METHOD_ARGS},
    "ridge": frozenset({"least_squares"}),
    "power_iteration": frozenset({"eigen"}),
    "eigh": frozenset({"eigen"}),
}


def methods_for(kind: ProblemKind, *, ridge: float = 0.0) -> list[str]:
    """The methods that solve a kind of problem, in catalog order: a solve spec's default.
    `ridge` (the closed form) is among them only when the problem is the ridge variant."""
    return [
        name
        for name in METHOD_ARGS
        if kind in METHOD_KINDS[name] and (name != "ridge" or ridge > 0)
    ]
