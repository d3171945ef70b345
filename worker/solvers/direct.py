"""Direct methods: explicit inverse and LU of the normal equations, QR (Householder through
LAPACK, and Gram-Schmidt written out as 002 works it by hand), SVD pseudo-inverse, ridge.

Gram-Schmidt and back substitution are our own code on purpose: they are the document's hand
method, and the classical/modified pair shows how the order of the same arithmetic changes the
loss of orthogonality on ill-conditioned matrices. Everything else calls numpy/scipy/torch.
"""

import numpy as np
import scipy.linalg

from models.catalog.base import NoArgs
from models.catalog.solvers import QRArgs, RidgeArgs, SVDArgs
from worker.solvers.base import Context, Solution, normal_equations, stacked_system


def normal_inverse(args: NoArgs, ctx: Context) -> Solution:
    """w = (XᵀX)⁻¹ Xᵀy with the inverse formed explicitly (002's "matrix inversion")."""
    gram, rhs = normal_equations(ctx)
    inverse = np.linalg.inv(gram)
    return Solution(inverse @ rhs, details={"inverse": inverse})


def normal_lu(args: NoArgs, ctx: Context) -> Solution:
    """XᵀX w = Xᵀy by an LU factorization with partial pivoting and two triangular solves."""
    gram, rhs = normal_equations(ctx)
    factors = scipy.linalg.lu_factor(gram, check_finite=False)
    return Solution(scipy.linalg.lu_solve(factors, rhs, check_finite=False))


def qr_householder(args: QRArgs, ctx: Context) -> Solution:
    """X = QR by Householder reflections (LAPACK geqrf in every backend), then R w = Qᵀy."""
    matrix, rhs = stacked_system(ctx)
    if args.backend == "torch":
        import torch

        device = torch.device(ctx.device)
        x = torch.from_numpy(matrix).to(device)
        q, r = torch.linalg.qr(x, mode="reduced")
        qty = q.T @ torch.from_numpy(rhs).to(device)
        coef = torch.linalg.solve_triangular(r, qty[:, None], upper=True)[:, 0]
        return Solution(coef.cpu().numpy(), details={"q": q.cpu().numpy(), "r": r.cpu().numpy()})
    if args.backend == "scipy":
        q, r = scipy.linalg.qr(matrix, mode="economic", check_finite=False)
    else:
        q, r = np.linalg.qr(matrix, mode="reduced")
    coef = scipy.linalg.solve_triangular(r, q.T @ rhs, check_finite=False)
    return Solution(coef, details={"q": q, "r": r})


def classical_gram_schmidt(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """002's hand method: each column minus its projections on the q's before it, where every
    projection coefficient is taken against the *original* column: r_ij = q_iᵀ a_j."""
    rows, cols = matrix.shape
    q = np.zeros((rows, cols))
    r = np.zeros((cols, cols))
    for j in range(cols):
        column = matrix[:, j]
        r[:j, j] = q[:, :j].T @ column
        v = column - q[:, :j] @ r[:j, j]
        r[j, j] = np.linalg.norm(v)
        if r[j, j] == 0.0:
            raise np.linalg.LinAlgError(f"column {j} is a combination of the columns before it")
        q[:, j] = v / r[j, j]
    return q, r


def modified_gram_schmidt(
    matrix: np.ndarray, *, last_may_vanish: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The same arithmetic reordered: as soon as q_i is known, its component is removed from
    every later column, so each projection is taken against the already-updated column.
    `last_may_vanish`: the last column may lie in the span of the others (a zero residual)."""
    v = matrix.astype(np.float64, copy=True)
    rows, cols = v.shape
    q = np.zeros((rows, cols))
    r = np.zeros((cols, cols))
    for i in range(cols):
        r[i, i] = np.linalg.norm(v[:, i])
        if r[i, i] == 0.0 and last_may_vanish and i == cols - 1:
            break
        if r[i, i] == 0.0:
            raise np.linalg.LinAlgError(f"column {i} is a combination of the columns before it")
        q[:, i] = v[:, i] / r[i, i]
        r[i, i + 1 :] = q[:, i] @ v[:, i + 1 :]
        v[:, i + 1 :] -= np.outer(q[:, i], r[i, i + 1 :])
    return q, r


def back_substitution(upper: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve R w = c from the last row up, as 002 does: w_i = (c_i − Σ_{j>i} r_ij w_j) / r_ii."""
    n = len(rhs)
    w = np.zeros(n)
    for i in range(n - 1, -1, -1):
        w[i] = (rhs[i] - upper[i, i + 1 :] @ w[i + 1 :]) / upper[i, i]
    return w


def gram_schmidt_classical(args: NoArgs, ctx: Context) -> Solution:
    """002 by hand: X = QR by classical Gram-Schmidt, then R w = Qᵀy by back substitution."""
    matrix, rhs = stacked_system(ctx)
    q, r = classical_gram_schmidt(matrix)
    return Solution(back_substitution(r, q.T @ rhs), details={"q": q, "r": r})


def gram_schmidt_modified(args: NoArgs, ctx: Context) -> Solution:
    """Modified Gram-Schmidt on [X | y] (Björck): the last column of R is Qᵀy computed with the
    same sweeps as Q, which keeps the solution accurate even where Q loses orthogonality.
    In exact arithmetic this is the classical method's Qᵀy."""
    matrix, rhs = stacked_system(ctx)
    q_aug, r_aug = modified_gram_schmidt(np.column_stack([matrix, rhs]), last_may_vanish=True)
    q, r = q_aug[:, :-1], r_aug[:-1, :-1]
    return Solution(back_substitution(r, r_aug[:-1, -1]), details={"q": q, "r": r})


def svd_pinv(args: SVDArgs, ctx: Context) -> Solution:
    """w = X⁺y = V Σ⁺ Uᵀ y, singular values below rcond·σ_max treated as zero."""
    matrix, rhs = stacked_system(ctx)
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    rcond = args.rcond if args.rcond is not None else max(matrix.shape) * np.finfo(float).eps
    keep = s > rcond * s[0]
    coef = vt[keep].T @ ((u[:, keep].T @ rhs) / s[keep])
    return Solution(coef, details={"singular_values": s, "rank": int(keep.sum())})


def ridge(args: RidgeArgs, ctx: Context) -> Solution:
    """The closed form w = (XᵀX + λI)⁻¹ Xᵀy, evaluated by a Cholesky solve (not an inverse)."""
    lam = args.lam if args.lam is not None else ctx.ridge
    if not lam:
        raise ValueError("ridge needs λ > 0: set methods[].args.lam or solve.ridge")
    gram, rhs = normal_equations(ctx, ridge=lam)
    coef = scipy.linalg.solve(gram, rhs, assume_a="pos", check_finite=False)
    return Solution(coef, details={"lam": lam})
