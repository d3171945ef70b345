"""SAM and ASAM against the two-pass definition computed by hand on a small problem."""

import torch
from torch import nn

from worker.strategies.sam import SAM


def loss_of(w: torch.Tensor) -> torch.Tensor:
    """A non-quadratic loss, so the gradient at w + ε differs from the one at w."""
    return (w[0] ** 2 - w[1]) ** 2 + 0.5 * (w - torch.tensor([1.0, -2.0])).pow(4).sum()


def grad_at(w: torch.Tensor) -> torch.Tensor:
    w = w.detach().clone().requires_grad_(True)
    loss_of(w).backward()
    return w.grad


def sam_once(w0: torch.Tensor, rho: float, adaptive: bool, lr: float) -> torch.Tensor:
    w = nn.Parameter(w0.clone())
    sam = SAM(torch.optim.SGD([w], lr=lr), rho=rho, adaptive=adaptive)

    def closure() -> torch.Tensor:
        sam.zero_grad()
        loss = loss_of(w)
        loss.backward()
        return loss

    closure()
    sam.step(closure)
    return w.detach()


def test_sam_is_a_step_with_the_gradient_at_the_worst_nearby_point() -> None:
    w0, rho, lr = torch.tensor([0.7, 0.3]), 0.2, 0.1
    g = grad_at(w0)
    eps = rho * g / g.norm()  # 000: ε = ρ·g/‖g‖
    expected = w0 - lr * grad_at(w0 + eps)
    torch.testing.assert_close(sam_once(w0, rho, False, lr), expected)
    assert not torch.allclose(expected, w0 - lr * g)  # differs from a plain step


def test_asam_scales_the_ball_by_the_weights() -> None:
    w0, rho, lr = torch.tensor([0.7, -0.05]), 0.5, 0.1
    g = grad_at(w0)
    t = w0.abs()
    eps = rho * t * t * g / (t * g).norm()  # Kwon et al.: ρ·T²g/‖Tg‖, T = diag(|w|)
    expected = w0 - lr * grad_at(w0 + eps)
    torch.testing.assert_close(sam_once(w0, rho, True, lr), expected)
    # relative to SAM's isotropic ball, the small weight's share shrinks by (|w₁|/|w₀|)²
    assert abs(eps[1] / eps[0]) < 0.01 * abs(g[1] / g[0])


def test_restore_is_exact_and_state_is_the_base_optimizers() -> None:
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    base = torch.optim.Adam([w], lr=0.1)
    sam = SAM(base, rho=0.3)
    loss_of(w).backward()
    sam.perturb()
    assert not torch.equal(w.detach(), torch.tensor([1.0, 2.0]))
    sam.restore()
    assert torch.equal(w.detach(), torch.tensor([1.0, 2.0]))
    assert sam.param_groups is base.param_groups or sam.param_groups[0] is base.param_groups[0]
    sam.param_groups[0]["lr"] = 0.5
    assert base.param_groups[0]["lr"] == 0.5  # the engine's schedule reaches the base
