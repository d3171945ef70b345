"""Optimizers whose implementation is torch.optim: each builder maps the spec's args onto the
constructor, nothing else. Update rules and papers are in torch.optim's documentation.

`weight_decay` arrives in the param groups; `decoupled` says which mode the spec resolved to
(worker/strategies/regularizers.py), for the optimizers that implement both.
"""

from typing import Any

import torch

from models.catalog.optimizers import (
    AdadeltaArgs,
    AdafactorArgs,
    AdagradArgs,
    AdamArgs,
    AdamaxArgs,
    ASGDArgs,
    LBFGSArgs,
    NAdamArgs,
    RAdamArgs,
    RMSpropArgs,
    RpropArgs,
    SGDArgs,
)
from worker.strategies.optimizers.context import BuildContext

Groups = list[dict[str, Any]]


def sgd(groups: Groups, lr: float, args: SGDArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        groups, lr=lr, momentum=args.momentum, dampening=args.dampening, nesterov=args.nesterov
    )


def adagrad(
    groups: Groups, lr: float, args: AdagradArgs, ctx: BuildContext
) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(
        groups,
        lr=lr,
        lr_decay=args.lr_decay,
        initial_accumulator_value=args.initial_accumulator_value,
        eps=args.eps,
    )


def adadelta(
    groups: Groups, lr: float, args: AdadeltaArgs, ctx: BuildContext
) -> torch.optim.Optimizer:
    return torch.optim.Adadelta(groups, lr=lr, rho=args.rho, eps=args.eps)


def rmsprop(
    groups: Groups, lr: float, args: RMSpropArgs, ctx: BuildContext
) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        groups,
        lr=lr,
        alpha=args.alpha,
        eps=args.eps,
        momentum=args.momentum,
        centered=args.centered,
    )


def adam(groups: Groups, lr: float, args: AdamArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    """Adam; with decoupled decay this is exactly AdamW (torch.optim.AdamW subclasses it)."""
    return torch.optim.Adam(
        groups,
        lr=lr,
        betas=args.betas,
        eps=args.eps,
        amsgrad=args.amsgrad,
        decoupled_weight_decay=ctx.decoupled,
    )


def nadam(groups: Groups, lr: float, args: NAdamArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return torch.optim.NAdam(
        groups,
        lr=lr,
        betas=args.betas,
        eps=args.eps,
        momentum_decay=args.momentum_decay,
        decoupled_weight_decay=ctx.decoupled,
    )


def radam(groups: Groups, lr: float, args: RAdamArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return torch.optim.RAdam(
        groups, lr=lr, betas=args.betas, eps=args.eps, decoupled_weight_decay=ctx.decoupled
    )


def adamax(groups: Groups, lr: float, args: AdamaxArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return torch.optim.Adamax(groups, lr=lr, betas=args.betas, eps=args.eps)


def asgd(groups: Groups, lr: float, args: ASGDArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return torch.optim.ASGD(groups, lr=lr, lambd=args.lambd, alpha=args.alpha, t0=args.t0)


def rprop(groups: Groups, lr: float, args: RpropArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return torch.optim.Rprop(groups, lr=lr, etas=args.etas, step_sizes=args.step_sizes)


def adafactor(
    groups: Groups, lr: float, args: AdafactorArgs, ctx: BuildContext
) -> torch.optim.Optimizer:
    return torch.optim.Adafactor(
        groups, lr=lr, beta2_decay=args.beta2_decay, eps=(None, args.eps), d=args.d
    )


def lbfgs(groups: Groups, lr: float, args: LBFGSArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    """torch.optim.LBFGS takes one param group; decay reaches it as an L2 term in the loss."""
    params = [p for group in groups for p in group["params"]]
    return torch.optim.LBFGS(
        params,
        lr=lr,
        max_iter=args.max_iter,
        history_size=args.history_size,
        line_search_fn=None if args.line_search == "none" else args.line_search,
        tolerance_grad=args.tolerance_grad,
        tolerance_change=args.tolerance_change,
    )


TORCH_OPTIMIZERS = {
    "sgd": sgd,
    "gd": sgd,
    "adagrad": adagrad,
    "adadelta": adadelta,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adam,
    "nadam": nadam,
    "radam": radam,
    "adamax": adamax,
    "asgd": asgd,
    "rprop": rprop,
    "adafactor": adafactor,
    "lbfgs": lbfgs,
}
