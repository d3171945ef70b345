"""Newton's method with the exact Hessian, for nets small enough to hold it (n² entries).

    w ← w − lr · (H + λI)⁻¹ g,    g = ∇L(w),  H = ∇²L(w)  (002: x_new = x_old − H⁻¹∇f)

On a quadratic loss (linear regression with MSE) one undamped step with lr = 1 lands on the
exact minimum; lr < 1 is 002's "damping" of the step (x: 3 → 1.5 → 0.75 on f = x² with lr ½),
λ > 0 is Levenberg's, which keeps (H + λI) invertible. torch.optim has no Newton method; the
Hessian comes from torch.func (forward-over-reverse), and the engine supplies it through the
closure (worker/engine/steps.py: `newton_closure`).
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, jacfwd, jacrev

NewtonClosure = Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class Newton(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1.0, damping: float = 0.0, max_parameters: int = 4096):  # type: ignore[no-untyped-def]
        if lr <= 0:
            raise ValueError(f"Newton needs lr > 0, got {lr}")
        if damping < 0:
            raise ValueError(f"Newton needs damping ≥ 0, got {damping}")
        super().__init__(params, {"lr": lr, "damping": damping})
        size = sum(p.numel() for g in self.param_groups for p in g["params"])
        if size > max_parameters:
            raise ValueError(
                f"newton: the net has {size} parameters, above max_parameters {max_parameters}; "
                f"its Hessian would hold {size * size:,} entries. Use a smaller net or lbfgs."
            )

    @torch.no_grad()
    def step(self, closure: NewtonClosure) -> torch.Tensor:  # type: ignore[override]
        """`closure()` returns (loss, gradient, Hessian) over the flattened parameters."""
        loss, grad, hessian = closure()
        params = [p for g in self.param_groups for p in g["params"]]
        group = self.param_groups[0]
        if group["damping"]:
            hessian = hessian + group["damping"] * torch.eye(len(grad), device=grad.device)
        direction = torch.linalg.solve(hessian, grad)
        flat = nn.utils.parameters_to_vector(params) - group["lr"] * direction
        nn.utils.vector_to_parameters(flat, params)
        return loss


def newton_closure(
    net: nn.Module,
    params: list[nn.Parameter],
    x: torch.Tensor,
    objective: Callable[[torch.Tensor, dict[int, torch.Tensor]], torch.Tensor],
) -> NewtonClosure:
    """A closure for Newton.step: the loss, gradient and Hessian of `objective(net(x), values)`
    as a function of the flattened `params` (`values` maps id(param) to its tensor, for
    penalties on the weights)."""
    names = {id(p): name for name, p in net.named_parameters()}
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        tensors = [t.view(shape) for t, shape in zip(flat.split(sizes), shapes, strict=True)]
        replaced = {names[id(p)]: t for p, t in zip(params, tensors, strict=True)}
        values = {id(p): t for p, t in zip(params, tensors, strict=True)}
        return objective(functional_call(net, replaced, (x,)), values)

    def closure() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = nn.utils.parameters_to_vector(params).detach()
        with torch.enable_grad():
            hessian = jacfwd(jacrev(loss_of), randomness="same")(flat)
            grad, loss = grad_and_value(loss_of)(flat)
        return loss.detach(), grad.detach(), hessian.detach()

    return closure
