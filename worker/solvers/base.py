"""What every solver method receives and returns, and the two views of a linear problem.

A least-squares problem min ‖Xw − y‖² + λ‖w‖² can be attacked two ways:
- through the normal equations H w = g with H = XᵀX + λI, g = Xᵀy (inverse, LU, gradient
  descent, conjugate gradient, Jacobi, Newton), which square the condition number;
- through a factorization of X itself (QR, Gram-Schmidt, SVD), on the stacked system
  [X; √λ·I] w ≈ [y; 0] when λ > 0, which keeps κ(X).
For a linear system A x = b (A symmetric positive definite) both views are A and b.

Each method builds what it needs inside its own timed call, so forming XᵀX counts against the
methods that use it.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.solvers.problems import Problem


@dataclass
class Iterate:
    step: int
    coef: np.ndarray
    seconds: float  # since the method started


@dataclass
class Recorder:
    """Keeps every `every`-th iterate (and always the first and the last) with its time."""

    every: int = 1
    started: float = field(default_factory=time.perf_counter)
    kept: list[Iterate] = field(default_factory=list)
    _last: Iterate | None = None

    def __call__(self, step: int, coef: np.ndarray) -> None:
        point = Iterate(step, coef.copy(), time.perf_counter() - self.started)
        if step % self.every == 0:
            self.kept.append(point)
            self._last = None
        else:
            self._last = point

    def finish(self) -> list[Iterate]:
        if self._last is not None:
            self.kept.append(self._last)
            self._last = None
        return self.kept


@dataclass
class Context:
    problem: Problem
    ridge: float = 0.0
    seed: int = 0
    device: str = "cpu"
    record: Callable[[int, np.ndarray], None] = lambda step, coef: None


@dataclass
class Solution:
    coef: np.ndarray
    iterations: int | None = None  # None for direct methods
    converged: bool | None = None
    diverged: bool = False
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # extra per-step
    details: dict[str, Any] = field(default_factory=dict)  # intermediate results, for checks
    eigenvalue: float | None = None


def normal_equations(ctx: Context, ridge: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """H = XᵀX + λI and g = Xᵀy, or A and b for a linear system."""
    p = ctx.problem
    assert p.target is not None
    if p.kind == "linear_system":
        return p.matrix, p.target
    lam = ctx.ridge if ridge is None else ridge
    gram = p.matrix.T @ p.matrix
    if lam:
        gram = gram + lam * np.eye(gram.shape[0])
    return gram, p.matrix.T @ p.target


def normal_operator(ctx: Context) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    """w ↦ Hw without forming H (two products with X), and g: what the iterative methods use."""
    p = ctx.problem
    assert p.target is not None
    if p.kind == "linear_system":
        a = p.matrix
        return (lambda w: a @ w), p.target
    x, lam = p.matrix, ctx.ridge
    return (lambda w: x.T @ (x @ w) + lam * w), x.T @ p.target


def normal_diagonal(ctx: Context) -> np.ndarray:
    p = ctx.problem
    if p.kind == "linear_system":
        return np.diag(p.matrix).copy()
    return np.einsum("ij,ij->j", p.matrix, p.matrix) + ctx.ridge


def stacked_system(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """The matrix and right-hand side a factorization method solves in the least-squares sense."""
    p = ctx.problem
    assert p.target is not None
    if p.kind == "linear_system" or not ctx.ridge:
        return p.matrix, p.target
    cols = p.matrix.shape[1]
    return (
        np.vstack([p.matrix, np.sqrt(ctx.ridge) * np.eye(cols)]),
        np.concatenate([p.target, np.zeros(cols)]),
    )


def finite(coef: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(coef)))
