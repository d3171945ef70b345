"""Low-rank SVD compression of a trained net's linear layers, as a post-training step.

A layer y = Wx + b with W (out × in) is replaced by two layers y = U_r (S_r V_rᵀ x) + b from the
truncated SVD W ≈ U_r S_r V_rᵀ (Eckart–Young: the best rank-r approximation in Frobenius and
spectral norm). That keeps r·(in + out) weights instead of in·out, so only layers with
r < in·out / (in + out) shrink; the others are left whole. Each rank is evaluated on the
validation split and reported as metrics over step = rank and as a table in the summary.
"""

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def low_rank(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Rank-`rank` factors of one linear layer: Linear(in→r, no bias) → Linear(r→out)."""
    weight = layer.weight.detach().float()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    root = s[:rank].sqrt()
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    dtype, device = layer.weight.dtype, layer.weight.device
    return nn.Sequential(first, second).to(device=device, dtype=dtype)


def worth_factoring(layer: nn.Linear, rank: int) -> bool:
    return rank * (layer.in_features + layer.out_features) < layer.in_features * layer.out_features


def compressed_copy(net: nn.Module, rank: int) -> tuple[nn.Module, int]:
    """A copy of `net` with every linear layer that shrinks at this rank factored; the count of
    layers replaced."""
    copied = copy.deepcopy(net)
    targets = [
        (name, module)
        for name, module in copied.named_modules()
        if isinstance(module, nn.Linear) and worth_factoring(module, rank)
    ]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = copied.get_submodule(parent_name) if parent_name else copied
        setattr(parent, child, low_rank(module, rank))
    return copied, len(targets)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def compression_report(
    net: nn.Module,
    ranks: list[int],
    evaluate: Callable[[nn.Module], dict[str, torch.Tensor]],
    log: Callable[[str, int, Any], None],
) -> dict[str, Any]:
    """Evaluate the net compressed at each rank. Logs `compress_<metric>` at step = rank
    (val_loss, val_acc, …, parameters, parameter_fraction) and returns the summary section."""
    full = parameter_count(net)
    rows = []
    for rank in sorted(set(ranks)):
        candidate, replaced = compressed_copy(net, rank)
        metrics = {name: float(value) for name, value in evaluate(candidate).items()}
        kept = parameter_count(candidate)
        row = {
            "rank": rank,
            "layers_factored": replaced,
            "parameters": kept,
            "parameter_fraction": kept / full,
            **metrics,
        }
        rows.append(row)
        for name, value in row.items():
            if name != "rank":
                log(f"compress_{name}", rank, value)
    return {"compression": {"parameters": full, "ranks": rows}}
