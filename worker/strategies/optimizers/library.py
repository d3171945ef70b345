"""Optimizers torch.optim does not have, from pytorch-optimizer (PyPI `pytorch_optimizer`,
kozistr/pytorch_optimizer): a maintained collection whose implementations follow the papers'
reference code and run on any torch ≥ 2.1 without pulling another torch.

- Lion (Chen et al. 2023, https://arxiv.org/abs/2302.06675):
  c = β₁m + (1−β₁)g;  w ← w − lr·(sign(c) + λw);  m ← β₂m + (1−β₂)g
- LAMB (You et al. 2020, https://arxiv.org/abs/1904.00962): Adam's update u, rescaled per
  layer by the trust ratio ‖w‖/‖u‖.
- Schedule-free AdamW / SGD (Defazio et al. 2024, https://arxiv.org/abs/2405.15682): gradients
  at y = (1−β)z + βx, z the base iterate, x its weighted running average; evaluation uses x
  (the engine calls `.eval()` / `.train()` around evaluation).
- SOAP (Vyas et al. 2024, https://arxiv.org/abs/2409.11321): Adam in the eigenbasis of
  Shampoo's preconditioner.
"""

from typing import Any

import pytorch_optimizer
import torch

from models.catalog.optimizers import (
    LambArgs,
    LionArgs,
    ScheduleFreeAdamWArgs,
    ScheduleFreeSGDArgs,
    SOAPArgs,
)
from worker.strategies.optimizers.context import BuildContext

Groups = list[dict[str, Any]]


def lion(groups: Groups, lr: float, args: LionArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return pytorch_optimizer.Lion(groups, lr=lr, betas=args.betas, weight_decouple=ctx.decoupled)


def lamb(groups: Groups, lr: float, args: LambArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    # max_grad_norm=0: no clipping inside the optimizer; the spec's `clipping` does that.
    return pytorch_optimizer.Lamb(
        groups,
        lr=lr,
        betas=args.betas,
        eps=args.eps,
        weight_decouple=ctx.decoupled,
        max_grad_norm=0.0,
    )


def schedule_free_adamw(
    groups: Groups, lr: float, args: ScheduleFreeAdamWArgs, ctx: BuildContext
) -> torch.optim.Optimizer:
    return pytorch_optimizer.ScheduleFreeAdamW(
        groups,
        lr=lr,
        betas=args.betas,
        eps=args.eps,
        r=args.r,
        weight_lr_power=args.weight_lr_power,
    )


def schedule_free_sgd(
    groups: Groups, lr: float, args: ScheduleFreeSGDArgs, ctx: BuildContext
) -> torch.optim.Optimizer:
    return pytorch_optimizer.ScheduleFreeSGD(
        groups, lr=lr, momentum=args.momentum, r=args.r, weight_lr_power=args.weight_lr_power
    )


def soap(groups: Groups, lr: float, args: SOAPArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return pytorch_optimizer.SOAP(
        groups,
        lr=lr,
        betas=args.betas,
        shampoo_beta=args.shampoo_beta,
        precondition_frequency=args.precondition_frequency,
        eps=args.eps,
    )


LIBRARY_OPTIMIZERS = {
    "lion": lion,
    "lamb": lamb,
    "schedule_free_adamw": schedule_free_adamw,
    "schedule_free_sgd": schedule_free_sgd,
    "soap": soap,
}
