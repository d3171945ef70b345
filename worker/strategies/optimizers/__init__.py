"""Optimizer builders by spec name (the implementation half of models/catalog/optimizers.py).

One module per family: torch_optim.py (torch.optim is the implementation), library.py
(pytorch-optimizer where torch.optim lacks one), muon.py (torch's Muon with an AdamW fallback),
newton.py and gradient_free.py (our own; their docstrings say why). SAM/ASAM wraps any of the
gradient-based ones (worker/strategies/sam.py).

Param groups: matrices and kernels are decayed, biases and norm scales (1-D) are not, unless
`regularization.decay_all`. Weight decay goes to the library when it implements the requested
mode; otherwise the group's decay is 0 here and worker/strategies/regularizers.py applies it.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from models.catalog.optimizers import (
    EvolutionStrategiesArgs,
    MuonArgs,
    NewtonArgs,
    SimulatedAnnealingArgs,
)
from worker.strategies.optimizers.context import BuildContext
from worker.strategies.optimizers.gradient_free import EvolutionStrategies, SimulatedAnnealing
from worker.strategies.optimizers.library import LIBRARY_OPTIMIZERS
from worker.strategies.optimizers.muon import MuonWithAdamW, output_layer_params
from worker.strategies.optimizers.newton import Newton
from worker.strategies.optimizers.torch_optim import TORCH_OPTIMIZERS
from worker.strategies.regularizers import decayed, resolve_decay
from worker.strategies.sam import SAM

Groups = list[dict[str, Any]]
OptimizerBuilder = Callable[[Groups, float, Any, BuildContext], torch.optim.Optimizer]


def muon(groups: Groups, lr: float, args: MuonArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return MuonWithAdamW(groups, lr, args, head=output_layer_params(ctx.net))


def _one_group(groups: Groups) -> list[nn.Parameter]:
    return [p for group in groups for p in group["params"]]


def newton(groups: Groups, lr: float, args: NewtonArgs, ctx: BuildContext) -> torch.optim.Optimizer:
    return Newton(
        _one_group(groups), lr=lr, damping=args.damping, max_parameters=args.max_parameters
    )


def simulated_annealing(
    groups: Groups, lr: float, args: SimulatedAnnealingArgs, ctx: BuildContext
) -> torch.optim.Optimizer:
    return SimulatedAnnealing(
        _one_group(groups),
        lr=lr,
        initial_temperature=args.initial_temperature,
        cooling=args.cooling,
    )


def evolution_strategies(
    groups: Groups, lr: float, args: EvolutionStrategiesArgs, ctx: BuildContext
) -> torch.optim.Optimizer:
    return EvolutionStrategies(
        _one_group(groups),
        lr=lr,
        population=args.population,
        sigma=args.sigma,
        antithetic=args.antithetic,
        rank_shaping=args.rank_shaping,
    )


OPTIMIZERS: dict[str, OptimizerBuilder] = {
    **TORCH_OPTIMIZERS,
    **LIBRARY_OPTIMIZERS,
    "muon": muon,
    "newton": newton,
    "simulated_annealing": simulated_annealing,
    "evolution_strategies": evolution_strategies,
}


def parameter_groups(net: nn.Module, weight_decay: float, decay_all: bool = False) -> Groups:
    """Decay matrices and kernels; leave biases and norm scales (1-D tensors) undecayed."""
    params = [p for p in net.parameters() if p.requires_grad]
    decay = [p for p in params if decayed(p, decay_all)]
    rest = [p for p in params if not decayed(p, decay_all)]
    groups = [{"params": decay, "weight_decay": weight_decay}] if decay else []
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


def build_optimizer(spec: Any, net: nn.Module, regularization: Any) -> torch.optim.Optimizer:
    """The spec's optimizer over `net`, with its weight decay if the library applies it, and
    wrapped in SAM/ASAM when `spec.sam` is set."""
    mode, native = resolve_decay(spec.name, regularization)
    groups = parameter_groups(
        net, regularization.weight_decay if native else 0.0, regularization.decay_all
    )
    context = BuildContext(net=net, decoupled=mode == "decoupled")
    optimizer = OPTIMIZERS[spec.name](groups, spec.lr, spec.args, context)
    if spec.sam is not None:
        optimizer = SAM(optimizer, rho=spec.sam.rho, adaptive=spec.sam.adaptive)
    return optimizer
