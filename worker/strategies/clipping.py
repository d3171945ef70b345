"""Gradient clipping and normalization, applied after unscaling and before the optimizer step.

A clipper takes the parameters, changes their gradients in place and returns the global L2
norm of the gradients before it touched them and whether it clipped, both as device tensors
(no host sync; the sink reads them once per flush). Modes (`clipping.mode`):

- norm: g ← g · min(1, c/‖g‖) over all parameters together (torch's clip_grad_norm_).
- value: each element into [−c, c] (torch's clip_grad_value_).
- adaptive: AutoClip (Seetharaman et al. 2020, https://arxiv.org/abs/2007.14469): the norm
  bound is the p-th percentile of the norms seen so far (the last `history` of them, the
  current one included).
- agc: unit-wise adaptive gradient clipping (Brock et al. 2021, NFNets,
  https://arxiv.org/abs/2102.06171): for each output unit i (row of a weight),
  ‖G_i‖ ≤ λ·max(‖W_i‖, ε), rescaling the rows above it.
- normalize: each parameter's gradient divided by (std(g) + ε) (000's layer-wise gradient
  normalization); it reports no clipping.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

ClipResult = tuple[torch.Tensor, torch.Tensor | None]  # (pre-clip global norm, clipped?)
Clipper = Callable[[list[nn.Parameter]], ClipResult]


def _grads(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    if not grads:
        return torch.zeros(())
    return nn.utils.get_total_norm(grads, foreach=True)


def no_clipping(spec: Any) -> Clipper:
    return lambda params: (global_norm(_grads(params)), None)


def norm_clipping(spec: Any) -> Clipper:
    def clip(params: list[nn.Parameter]) -> ClipResult:
        norm = nn.utils.clip_grad_norm_(params, spec.max_norm, foreach=True)
        return norm, norm > spec.max_norm

    return clip


def value_clipping(spec: Any) -> Clipper:
    def clip(params: list[nn.Parameter]) -> ClipResult:
        grads = _grads(params)
        norm = global_norm(grads)
        largest = torch.stack([g.abs().max() for g in grads]).max()
        nn.utils.clip_grad_value_(params, spec.max_value, foreach=True)
        return norm, largest > spec.max_value

    return clip


@dataclass
class AdaptiveClipper:
    """AutoClip. Non-finite norms (an fp16 overflow, whose step is skipped anyway) are kept
    out of the percentile as NaN."""

    percentile: float
    history: int
    _norms: torch.Tensor | None = None
    _seen: int = 0

    def __call__(self, params: list[nn.Parameter]) -> ClipResult:
        grads = _grads(params)
        norm = global_norm(grads)
        if self._norms is None:
            self._norms = torch.full((self.history,), float("nan"), device=norm.device)
        finite = torch.where(torch.isfinite(norm), norm, torch.full_like(norm, float("nan")))
        self._norms[self._seen % self.history] = finite
        self._seen += 1
        threshold = torch.nanquantile(
            self._norms[: min(self._seen, self.history)], self.percentile / 100
        )
        threshold = torch.nan_to_num(threshold, nan=float("inf"))
        scale = torch.clamp(threshold / (norm + 1e-6), max=1.0)
        torch._foreach_mul_(grads, scale)
        return norm, norm > threshold

    def state_dict(self) -> dict[str, Any]:
        return {"norms": self._norms, "seen": self._seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._norms, self._seen = state["norms"], state["seen"]


def adaptive_clipping(spec: Any) -> Clipper:
    return AdaptiveClipper(percentile=spec.percentile, history=spec.history)


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """Norm of each output unit: whole-tensor norm for vectors and scalars, else over all but
    the first dimension (timm's and the NFNets reference's convention)."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


def agc_clipping(spec: Any) -> Clipper:
    def clip(params: list[nn.Parameter]) -> ClipResult:
        with_grad = [p for p in params if p.grad is not None]
        norm = global_norm(_grads(with_grad))
        clipped = torch.zeros((), dtype=torch.bool, device=norm.device)
        with torch.no_grad():
            for p in with_grad:
                limit = unitwise_norm(p.detach()).clamp_(min=spec.agc_eps) * spec.agc_factor
                g_norm = unitwise_norm(p.grad)
                over = g_norm > limit
                p.grad.mul_(torch.where(over, limit / g_norm.clamp(min=1e-6), 1.0))
                clipped = clipped | over.any()
        return norm, clipped

    return clip


def normalize_gradients(spec: Any) -> Clipper:
    def clip(params: list[nn.Parameter]) -> ClipResult:
        grads = _grads(params)
        norm = global_norm(grads)
        with torch.no_grad():
            for g in grads:
                g.div_(g.std(correction=0) + spec.normalize_eps)
        return norm, None

    return clip


CLIPPERS: dict[str, Callable[[Any], Clipper]] = {
    "none": no_clipping,
    "norm": norm_clipping,
    "value": value_clipping,
    "adaptive": adaptive_clipping,
    "agc": agc_clipping,
    "normalize": normalize_gradients,
}


def build_clipper(spec: Any) -> Clipper:
    return CLIPPERS[spec.mode](spec)
