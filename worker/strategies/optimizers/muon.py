"""Muon for the hidden weight matrices, AdamW for everything else.

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) orthogonalizes the
momentum of a 2-D weight with Newton–Schulz iterations: the update is ≈ U Vᵀ of the momentum's
SVD, scaled by the learning rate. torch.optim.Muon implements it for 2-D parameters only; the
authors apply it to hidden matrices and train the rest — biases, norm scales, convolution
kernels, and the output layer — with AdamW. This module is that split: one optimizer object
whose param groups are Muon's followed by AdamW's, so the engine's learning rate reaches both
(`adjust_lr: match_rms_adamw`, the default, scales Muon's update to AdamW's RMS so one rate
serves both; `fallback_lr_scale` multiplies AdamW's).
"""

from typing import Any

import torch
from torch import nn

from models.catalog.optimizers import MuonArgs


def output_layer_params(net: nn.Module) -> set[int]:
    """Ids of the parameters of the last module that holds a weight (the classifier head)."""
    last: nn.Module | None = None
    for module in net.modules():
        if isinstance(getattr(module, "weight", None), nn.Parameter):
            last = module
    return {id(p) for p in last.parameters(recurse=False)} if last is not None else set()


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on hidden 2-D matrices, torch.optim.AdamW on the rest."""

    def __init__(
        self, groups: list[dict[str, Any]], lr: float, args: MuonArgs, head: set[int]
    ) -> None:
        muon_groups, adamw_groups = [], []
        for group in groups:
            hidden = [p for p in group["params"] if p.ndim == 2 and id(p) not in head]
            rest = [p for p in group["params"] if not (p.ndim == 2 and id(p) not in head)]
            if hidden:
                muon_groups.append({**group, "params": hidden})
            if rest:
                adamw_groups.append({**group, "params": rest, "lr_scale": args.fallback_lr_scale})
        self.muon = (
            torch.optim.Muon(
                muon_groups,
                lr=lr,
                momentum=args.momentum,
                nesterov=args.nesterov,
                ns_steps=args.ns_steps,
                adjust_lr_fn=args.adjust_lr,
            )
            if muon_groups
            else None
        )
        self.adamw = (
            torch.optim.AdamW(adamw_groups, lr=lr * args.fallback_lr_scale)
            if adamw_groups
            else None
        )
        parts = [opt for opt in (self.muon, self.adamw) if opt is not None]
        super().__init__([g for opt in parts for g in opt.param_groups], {})
        self.parts = parts

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for part, state in zip(self.parts, state_dict["parts"], strict=True):
            part.load_state_dict(state)
