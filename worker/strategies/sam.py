"""SAM and ASAM: sharpness-aware minimization as a wrapper around any gradient optimizer.

SAM (Foret et al. 2021, https://arxiv.org/abs/2010.01412) minimizes the worst loss within a
ball of radius ρ around the weights. One step takes two passes:

    g  = ∇L(w)                                  first forward/backward
    ε  = ρ · T² g / ‖T g‖                       T = I (SAM) or diag(|w|) (ASAM)
    g' = ∇L(w + ε)                              second forward/backward, at the perturbed point
    w  ← base_step(w, g')                       the base optimizer's update, from the clean w

ASAM (Kwon et al. 2021, https://arxiv.org/abs/2102.11600) makes the ball scale-invariant by
measuring it in |w| units; 000 writes its perturbation as ρ·g⊙|w|/‖g⊙|w|‖, the paper's
ρ·|w|²⊙g/‖|w|⊙g‖ is what the authors' code and pytorch-optimizer compute, and what we do.

Our own and not pytorch-optimizer's `SAM`: the library's second step restores the weights and
steps the base optimizer in one call that needs a closure, so GradScaler cannot skip an
overflowing fp16 step, and clipping cannot sit between the restore and the step. Here the
engine drives the passes (worker/engine/steps.py: perturb → second pass → restore → unscale →
clip → base step). tests/worker/strategies/test_sam.py checks one step against the library.
"""

from collections.abc import Callable
from typing import Any

import torch


class SAM(torch.optim.Optimizer):
    """Shares its param groups (and so the learning rate) with `base`."""

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False):
        if rho <= 0:
            raise ValueError(f"SAM needs rho > 0, got {rho}")
        self.base = base
        self.rho = rho
        self.adaptive = adaptive
        super().__init__(base.param_groups, {})
        self._clean: list[torch.Tensor] = []
        self._perturbed: list[torch.Tensor] = []

    @torch.no_grad()
    def perturb(self) -> None:
        """w ← w + ε(w, g), remembering w. Gradients must be unscaled."""
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        scaled = torch._foreach_mul(grads, torch._foreach_abs(params)) if self.adaptive else grads
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in scaled]))
        scale = self.rho / (norm + 1e-12)
        if self.adaptive:
            eps = torch._foreach_mul(scaled, torch._foreach_abs(params))
        else:
            eps = [g.clone() for g in grads]
        torch._foreach_mul_(eps, scale)
        self._clean = [p.detach().clone() for p in params]
        self._perturbed = params
        torch._foreach_add_(params, eps)

    @torch.no_grad()
    def restore(self) -> None:
        """Back to the clean w (by copy, so a non-finite ε leaves no trace)."""
        torch._foreach_copy_(self._perturbed, self._clean)
        self._clean, self._perturbed = [], []

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Both passes with a closure that zeroes, evaluates and backpropagates the loss."""
        if closure is None:
            raise RuntimeError("SAM.step needs a closure; the engine calls perturb/restore")
        with torch.enable_grad():
            loss = closure()
        self.perturb()
        with torch.enable_grad():
            closure()
        self.restore()
        self.base.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
