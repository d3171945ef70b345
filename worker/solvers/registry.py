"""The implementation half of the solve catalog: method name → function(args, ctx) → Solution."""

from collections.abc import Callable
from typing import Any

from worker.solvers.base import Context, Solution
from worker.solvers.direct import (
    gram_schmidt_classical,
    gram_schmidt_modified,
    normal_inverse,
    normal_lu,
    qr_householder,
    ridge,
    svd_pinv,
)
from worker.solvers.eigen import eigh, power_iteration
from worker.solvers.iterative import conjugate_gradient, gradient_descent, jacobi, newton

Method = Callable[[Any, Context], Solution]

METHODS: dict[str, Method] = {
    "normal_inverse": normal_inverse,
    "normal_lu": normal_lu,
    "qr_householder": qr_householder,
    "gram_schmidt_classical": gram_schmidt_classical,
    "gram_schmidt_modified": gram_schmidt_modified,
    "svd_pinv": svd_pinv,
    "ridge": ridge,
    "gradient_descent": gradient_descent,
    "conjugate_gradient": conjugate_gradient,
    "jacobi": jacobi,
    "newton": newton,
    "power_iteration": power_iteration,
    "eigh": eigh,
}
