"""Problems for `task: solve`, each fully determined by (args, seed), all in float64.

A least-squares problem is (X, y) with the true weights; a linear system is (A, b) with its exact
solution; an eigen problem is a symmetric matrix with its dominant eigenpair. Where the document
worked an example by hand (002, 000), the problem is that example with the document's numbers.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.catalog.datasets import SyntheticRegressionArgs
from models.catalog.solvers import (
    PROBLEM_KINDS,
    ConditionedArgs,
    NearSingularArgs,
    ProblemKind,
    RandomRegressionArgs,
    RandomSymmetricArgs,
    SPDSystemArgs,
    SyntheticRegressionProblemArgs,
)


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    matrix: np.ndarray  # X (least squares), A (linear system or eigen)
    target: np.ndarray | None  # y or b; None for eigen problems
    truth: np.ndarray  # true weights, exact solution, or unit dominant eigenvector
    description: str
    eigenvalue: float | None = None  # eigen problems: the dominant eigenvalue
    start: np.ndarray | None = None  # eigen problems: the starting vector, when the source fixes it

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.matrix.shape
        return rows, cols


def two_points(args: Any, seed: int) -> Problem:
    matrix = np.array([[1.0, 1.0], [2.0, 1.0]])  # columns: slope a, intercept b
    return Problem(
        "least_squares",
        matrix,
        np.array([3.0, 5.0]),
        np.array([2.0, 1.0]),
        "002: the line through (1,3) and (2,5); a = 2, b = 1",
    )


def four_points(args: Any, seed: int) -> Problem:
    matrix = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    return Problem(
        "least_squares",
        matrix,
        np.array([2.0, 3.0, 4.0, 5.0]),
        np.array([1.0, 1.0]),
        "002: the line through (1,2), (2,3), (3,4), (4,5); weights [1, 1]",
    )


def random_regression(args: RandomRegressionArgs, seed: int) -> Problem:
    rng = np.random.RandomState(seed)  # 002's np.random.seed(42) + np.random.randn, same order
    x = rng.randn(args.n_samples, args.n_features)
    weights = rng.randn(args.n_features)
    y = x @ weights + args.noise * rng.randn(args.n_samples)
    return Problem(
        "least_squares",
        x,
        y,
        weights,
        f"002: random {args.n_samples}×{args.n_features}, known weights, noise {args.noise}",
    )


def synthetic_regression(args: SyntheticRegressionProblemArgs, seed: int) -> Problem:
    from worker.datasets.synthetic import regression_problem

    data_args = SyntheticRegressionArgs(
        n_samples=args.n_samples, n_features=args.n_features, n_targets=1, noise=args.noise
    )
    x, y, weight, bias = (t.double().numpy() for t in regression_problem(data_args, seed))
    design = np.hstack([x, np.ones((len(x), 1))])
    return Problem(
        "least_squares",
        design,
        y[:, 0],
        np.concatenate([weight[:, 0], bias]),
        f"the synthetic_regression data set ({args.n_samples}×{args.n_features}, noise "
        f"{args.noise}, seed {seed}) with a bias column",
    )


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def _geometric(count: int, condition_number: float) -> np.ndarray:
    """count values from 1 down to 1/κ, equally spaced on a log scale."""
    return np.logspace(0.0, -math.log10(condition_number), count)


def conditioned(args: ConditionedArgs, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    n, p = args.n_samples, args.n_features
    if n < p:
        raise ValueError(f"conditioned: n_samples ({n}) must be at least n_features ({p})")
    basis = _orthonormal(rng, n, min(n, p + 1))  # one spare column for the residual direction
    u = basis[:, :p]
    v = _orthonormal(rng, p, p)
    x = (u * _geometric(p, args.condition_number)) @ v.T
    weights = rng.standard_normal(p)
    weights /= np.linalg.norm(weights)
    y = x @ weights
    if args.residual > 0:
        if n == p:
            raise ValueError("conditioned: a residual needs n_samples > n_features")
        y = y + args.residual * basis[:, p]
    return Problem(
        "least_squares",
        x,
        y,
        weights,
        f"{n}×{p} with κ(X) = {args.condition_number:.3g}, residual norm {args.residual}",
    )


def near_singular(args: NearSingularArgs, seed: int) -> Problem:
    matrix = np.array([[1.0, 1.0], [1.0, 1.0 + args.epsilon]])
    weights = np.array([1.0, 1.0])
    return Problem(
        "least_squares",
        matrix,
        matrix @ weights,
        weights,
        f"000: the nearly singular [[1, 1], [1, {1 + args.epsilon!r}]], weights [1, 1]",
    )


def cg_example(args: Any, seed: int) -> Problem:
    matrix = np.array([[4.0, 1.0], [1.0, 3.0]])
    return Problem(
        "linear_system",
        matrix,
        np.array([1.0, 2.0]),
        np.array([1.0, 7.0]) / 11.0,
        "002: conjugate gradient's A = [[4, 1], [1, 3]], b = [1, 2]; x = [1/11, 7/11]",
    )


def spd_system(args: SPDSystemArgs, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    q = _orthonormal(rng, args.size, args.size)
    matrix = (q * _geometric(args.size, args.condition_number)) @ q.T
    matrix = (matrix + matrix.T) / 2
    solution = rng.standard_normal(args.size)
    return Problem(
        "linear_system",
        matrix,
        matrix @ solution,
        solution,
        f"symmetric positive definite {args.size}×{args.size}, κ = {args.condition_number:.3g}",
    )


def power_example(args: Any, seed: int) -> Problem:
    return Problem(
        "eigen",
        np.array([[2.0, 1.0], [1.0, 2.0]]),
        None,
        np.array([1.0, 1.0]) / math.sqrt(2.0),
        "002: power iteration on A = [[2, 1], [1, 2]] from v₀ = [1, 0]; λ = 3",
        eigenvalue=3.0,
        start=np.array([1.0, 0.0]),
    )


def random_symmetric(args: RandomSymmetricArgs, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    q = _orthonormal(rng, args.size, args.size)
    eigenvalues = args.gap ** np.arange(args.size)
    matrix = (q * eigenvalues) @ q.T
    return Problem(
        "eigen",
        (matrix + matrix.T) / 2,
        None,
        q[:, 0],
        f"symmetric {args.size}×{args.size}, eigenvalues 1, {args.gap}, {args.gap}², …",
        eigenvalue=1.0,
    )


PROBLEMS = {
    "two_points": two_points,
    "four_points": four_points,
    "random_regression": random_regression,
    "synthetic_regression": synthetic_regression,
    "conditioned": conditioned,
    "near_singular": near_singular,
    "cg_example": cg_example,
    "spd_system": spd_system,
    "power_example": power_example,
    "random_symmetric": random_symmetric,
}


def build_problem(spec: Any, seed: int) -> Problem:
    problem = PROBLEMS[spec.name](spec.args, seed)
    assert problem.kind == PROBLEM_KINDS[spec.name], "schema and implementation disagree"
    return problem
