"""The numbers 002 (and 000) work out by hand, reproduced by the solver code a job runs."""

import math

import numpy as np
import pytest

from models.catalog.base import NoArgs
from models.catalog.solvers import GradientDescentArgs, IterativeArgs, QRArgs
from worker.solvers.base import Context, Recorder
from worker.solvers.direct import (
    back_substitution,
    classical_gram_schmidt,
    modified_gram_schmidt,
    normal_inverse,
    qr_householder,
)
from worker.solvers.eigen import power_iteration
from worker.solvers.iterative import conjugate_gradient, gradient_descent
from worker.solvers.problems import Problem, cg_example, power_example, two_points

SQRT5 = math.sqrt(5.0)
TWO_POINTS = two_points(NoArgs(), 0)


def recorded(problem: Problem, method, args) -> tuple[list[np.ndarray], object]:  # type: ignore[no-untyped-def]
    recorder = Recorder()
    solution = method(args, Context(problem, record=recorder))
    return [point.coef for point in recorder.finish()], solution


def test_gram_schmidt_gives_the_hand_q_and_r() -> None:
    """002: q₁ = [1, 2]/√5, q₂ = [2, −1]/√5, R = [[√5, 3/√5], [0, 1/√5]]."""
    for factorize in (classical_gram_schmidt, modified_gram_schmidt):
        q, r = factorize(TWO_POINTS.matrix)
        np.testing.assert_allclose(q, np.array([[1.0, 2.0], [2.0, -1.0]]) / SQRT5, atol=1e-15)
        np.testing.assert_allclose(r, [[SQRT5, 3 / SQRT5], [0.0, 1 / SQRT5]], atol=1e-15)


def test_back_substitution_gives_a_2_b_1() -> None:
    """002: Qᵀy = [13/√5, 1/√5]; row 2 gives b = 1, row 1 then a = 2."""
    r = np.array([[SQRT5, 3 / SQRT5], [0.0, 1 / SQRT5]])
    np.testing.assert_allclose(back_substitution(r, np.array([13, 1]) / SQRT5), [2.0, 1.0])


@pytest.mark.parametrize("backend", ["numpy", "scipy", "torch"])
def test_householder_r_matches_the_hand_r_up_to_row_signs(backend: str) -> None:
    solution = qr_householder(QRArgs(backend=backend), Context(TWO_POINTS))
    r = solution.details["r"]
    signs = np.sign(np.diag(r))[:, None]  # Householder may flip a row; R's rows fix Q's columns
    np.testing.assert_allclose(signs * r, [[SQRT5, 3 / SQRT5], [0.0, 1 / SQRT5]], atol=1e-14)
    np.testing.assert_allclose(solution.coef, [2.0, 1.0], atol=1e-14)


def test_normal_equations_inverse_is_the_hand_inverse() -> None:
    """002: AᵀA = [[5, 3], [3, 2]], det 1, (AᵀA)⁻¹ = [[2, −3], [−3, 5]], x = [2, 1]."""
    solution = normal_inverse(NoArgs(), Context(TWO_POINTS))
    np.testing.assert_allclose(solution.details["inverse"], [[2.0, -3.0], [-3.0, 5.0]], atol=1e-12)
    np.testing.assert_allclose(solution.coef, [2.0, 1.0], atol=1e-12)


def test_gradient_descent_takes_the_hand_steps() -> None:
    """002: lr 0.1 from (0, 0): (1.3, 0.8) → (1.71, 1.05) → (1.84, 1.13), then toward (2, 1)."""
    iterates, solution = recorded(
        TWO_POINTS, gradient_descent, GradientDescentArgs(lr=0.1, max_iter=2000)
    )
    np.testing.assert_allclose(iterates[1], [1.3, 0.8], atol=1e-12)
    np.testing.assert_allclose(iterates[2], [1.71, 1.05], atol=1e-12)
    np.testing.assert_allclose(iterates[3], [1.84, 1.13], atol=0.005)  # 002 rounds to 2 places
    assert solution.converged
    np.testing.assert_allclose(solution.coef, [2.0, 1.0], atol=1e-8)


def test_conjugate_gradient_first_step_on_the_stated_system() -> None:
    """002's system A = [[4, 1], [1, 3]], b = [1, 2]: r₀ = p₀ = [1, 2], r₀ᵀr₀ = 5, Ap₀ = [6, 7],
    p₀ᵀAp₀ = 20, so α₀ = 1/4 and x₁ = [1/4, 1/2]; CG is exact after n = 2 steps."""
    problem = cg_example(NoArgs(), 0)
    iterates, solution = recorded(problem, conjugate_gradient, IterativeArgs(tol=0.0))
    assert solution.series["alpha"][0] == (1, pytest.approx(0.25, abs=1e-15))
    np.testing.assert_allclose(iterates[1], [0.25, 0.5], atol=1e-15)
    assert solution.iterations == 2
    np.testing.assert_allclose(solution.coef, [1 / 11, 7 / 11], atol=1e-15)


def test_the_documents_cg_numbers_belong_to_its_power_iteration_matrix() -> None:
    """002 prints α₀ = 5/14 and x₁ = [5/14, 10/14] for that system; p₀ᵀAp₀ = 14 holds for the
    power-iteration example's A = [[2, 1], [1, 2]] (Ap₀ = [4, 5]), not for [[4, 1], [1, 3]].
    With that matrix the same code reproduces the document's figures exactly."""
    matrix = np.array([[2.0, 1.0], [1.0, 2.0]])
    problem = Problem("linear_system", matrix, np.array([1.0, 2.0]), np.array([0.0, 1.0]), "2x2")
    iterates, solution = recorded(problem, conjugate_gradient, IterativeArgs())
    assert solution.series["alpha"][0][1] == pytest.approx(5 / 14, abs=1e-15)
    np.testing.assert_allclose(iterates[1], [5 / 14, 10 / 14], atol=1e-15)


def test_power_iteration_takes_the_hand_steps() -> None:
    """002: A = [[2, 1], [1, 2]], v₀ = [1, 0] → [2, 1]/√5 → [5, 4]/√41 → the eigenvector
    [1, 1]/√2 with eigenvalue 3."""
    iterates, solution = recorded(power_example(NoArgs(), 0), power_iteration, IterativeArgs())
    np.testing.assert_allclose(iterates[1], np.array([2.0, 1.0]) / SQRT5, atol=1e-15)
    np.testing.assert_allclose(iterates[2], np.array([5.0, 4.0]) / math.sqrt(41), atol=1e-15)
    assert solution.converged and solution.eigenvalue == pytest.approx(3.0, abs=1e-12)
    np.testing.assert_allclose(solution.coef, np.array([1.0, 1.0]) / math.sqrt(2), atol=1e-9)
