"""Regularizers around the optimizer's step: weight decay in the mode the library does not
offer itself, proximal L1, gradient noise, weight noise, and the L2 term for optimizers that
only see a loss (L-BFGS, Newton, gradient-free).

Decay, L1 and gradient noise are optimizer step hooks (`register_step_pre_hook` /
`register_step_post_hook`), so they run exactly when the update runs: a step that GradScaler
skips on an fp16 overflow decays, thresholds and perturbs nothing.

- coupled decay (L2): g ← g + λ·w before the update (what torch.optim's `weight_decay` does
  for SGD and Adam).
- decoupled decay: w ← w − lr·λ·w before the update (what AdamW does).
- proximal L1: after the update, w ← sign(w)·max(|w| − lr·λ₁, 0), the proximal map of
  lr·λ₁‖w‖₁ (002's soft threshold: 1.5 → 1.2 at threshold 0.3).
- gradient noise (Neelakantan et al. 2015): g ← g + N(0, σ₀²/(1+t)^γ) before the update.
- weight noise (Graves 2011; An 1996): the loss and gradient are computed at w + N(0, σ_t²),
  σ_t = σ₀/(1+t)^γ; the update is applied to the clean w.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.catalog.optimizers import OPTIMIZER_ARGS


def soft_threshold(w: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """S(w, λ) = sign(w)·max(|w| − λ, 0)."""
    return torch.sign(w) * torch.clamp(w.abs() - threshold, min=0.0)


def decayed(param: nn.Parameter, decay_all: bool) -> bool:
    """Matrices and kernels are decayed; biases and norm scales (1-D) only with decay_all."""
    return param.requires_grad and (decay_all or param.ndim >= 2)


def resolve_decay(optimizer_name: str, reg: Any) -> tuple[str | None, bool]:
    """(mode, native): the decay mode a spec asks for, and whether the library applies it."""
    if reg.weight_decay == 0:
        return None, False
    traits = OPTIMIZER_ARGS[optimizer_name]
    if reg.decay == "auto":
        mode = traits.decay_modes[0] if traits.decay_modes else "coupled"
    else:
        mode = reg.decay
    return mode, mode in traits.decay_modes


def stepping_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer whose step() changes the weights (SAM steps through its base)."""
    return getattr(optimizer, "base", optimizer)


@dataclass
class Regularizer:
    """What the step functions need besides the optimizer's hooks."""

    l2_terms: list[tuple[list[nn.Parameter], float]] = field(default_factory=list)
    weight_noise: float = 0.0
    weight_noise_decay: float = 0.0
    noisy_params: list[nn.Parameter] = field(default_factory=list)
    noise_steps: int = 0

    def penalty(self, values: dict[int, torch.Tensor] | None = None) -> torch.Tensor | float:
        """½·Σ λ‖w‖² for optimizers that minimize the loss as given (coupled decay); `values`
        replaces parameters by id (Newton's functional Hessian)."""
        total: torch.Tensor | float = 0.0
        for params, lam in self.l2_terms:
            tensors = [values.get(id(p), p) if values else p for p in params]
            total = total + 0.5 * lam * sum((t * t).sum() for t in tensors)
        return total

    @contextmanager
    def noisy_weights(self) -> Iterator[None]:
        """Forward and backward inside this block see w + noise; the clean w comes back after."""
        if not self.weight_noise:
            yield
            return
        sigma = self.weight_noise / (1 + self.noise_steps) ** self.weight_noise_decay
        self.noise_steps += 1
        with torch.no_grad():
            noise = [torch.randn_like(p) * sigma for p in self.noisy_params]
            torch._foreach_add_(self.noisy_params, noise)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_sub_(self.noisy_params, noise)


def _decay_hook(params: set[int], lam: float, mode: str):  # type: ignore[no-untyped-def]
    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for group in optimizer.param_groups:
                mine = [p for p in group["params"] if id(p) in params and p.grad is not None]
                if not mine:
                    continue
                if mode == "coupled":
                    torch._foreach_add_([p.grad for p in mine], mine, alpha=lam)
                else:
                    torch._foreach_mul_(mine, 1.0 - group["lr"] * lam)

    return hook


def _l1_hook(params: set[int], lam: float):  # type: ignore[no-untyped-def]
    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for group in optimizer.param_groups:
                threshold = group["lr"] * lam
                for p in group["params"]:
                    if id(p) in params:
                        p.copy_(soft_threshold(p, threshold))

    return hook


def _gradient_noise_hook(sigma: float, gamma: float):  # type: ignore[no-untyped-def]
    steps = [0]

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        std = sigma / (1 + steps[0]) ** (gamma / 2)
        steps[0] += 1
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.add_(torch.randn_like(p.grad), alpha=std)

    return hook


def build_regularizer(spec: Any, net: nn.Module, optimizer: torch.optim.Optimizer) -> Regularizer:
    """Attach the spec's regularization hooks to `optimizer`; return what the step needs."""
    reg = spec.regularization
    kind = OPTIMIZER_ARGS[spec.optimizer.name].kind
    targets = [p for p in net.parameters() if decayed(p, reg.decay_all)]
    target_ids = {id(p) for p in targets}
    stepper = stepping_optimizer(optimizer)
    regularizer = Regularizer()
    mode, native = resolve_decay(spec.optimizer.name, reg)
    if mode is not None and not native:
        if kind == "gradient":
            stepper.register_step_pre_hook(_decay_hook(target_ids, reg.weight_decay, mode))
        else:  # the spec validator allows only coupled decay here: an L2 term in the loss
            regularizer.l2_terms.append((targets, reg.weight_decay))
    if reg.gradient_noise:
        stepper.register_step_pre_hook(
            _gradient_noise_hook(reg.gradient_noise, reg.gradient_noise_decay)
        )
    if reg.l1:
        stepper.register_step_post_hook(_l1_hook(target_ids, reg.l1))
    if reg.weight_noise:
        regularizer.weight_noise = reg.weight_noise
        regularizer.weight_noise_decay = reg.weight_noise_decay
        regularizer.noisy_params = [p for p in net.parameters() if p.requires_grad]
    return regularizer
