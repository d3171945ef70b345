"""Optimizer options (the schema half). The torch builders live in worker/strategies/optimizers/.

Defaults are the implementing library's, so a spec that names only the optimizer gets the
library's behaviour. The learning rate is a common field of the spec's `optimizer`; weight decay,
L1 and noise are in the spec's `regularization`; SAM/ASAM is `optimizer.sam`, a wrapper around
any gradient-based entry.

Each args model also carries class-level traits (not options) that the spec validator and the
engine read:
- `kind`: how a step is taken. "gradient" (backward, clip, step), "closure" (the optimizer calls
  the loss itself several times per step: L-BFGS), "newton" (exact Hessian), "search"
  (gradient-free: only loss evaluations).
- `full_batch`: the engine feeds the whole training set as one batch.
- `decay_modes`: how the library itself applies weight decay; the other mode, where allowed, is
  applied by the engine around the library's step (worker/strategies/regularizers.py).
- `schedule_free`: the optimizer keeps its own averaged iterate, so the learning-rate schedule
  must stay constant (warmup allowed), and evaluation runs on the averaged weights.
"""

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from models.catalog.base import Args

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
Eps = Annotated[float, Field(gt=0.0, le=1.0)]
Kind = Literal["gradient", "closure", "newton", "search"]
DecayMode = Literal["coupled", "decoupled"]


class OptimizerArgs(Args):
    kind: ClassVar[Kind] = "gradient"
    full_batch: ClassVar[bool] = False
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("coupled",)
    schedule_free: ClassVar[bool] = False


class SGDArgs(OptimizerArgs):
    """torch.optim.SGD: plain, heavy-ball momentum, or Nesterov."""

    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    dampening: float = Field(0.0, ge=0.0, le=1.0)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "SGDArgs":
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        return self


class GDArgs(SGDArgs):
    """Full-batch gradient descent: SGD whose batch is the whole training set (002's method)."""

    full_batch: ClassVar[bool] = True


class AdagradArgs(OptimizerArgs):
    lr_decay: float = Field(0.0, ge=0.0, le=1.0)
    initial_accumulator_value: float = Field(0.0, ge=0.0, le=1e3)
    eps: Eps = 1e-10


class AdadeltaArgs(OptimizerArgs):
    rho: float = Field(0.9, ge=0.0, lt=1.0)
    eps: Eps = 1e-6


class RMSpropArgs(OptimizerArgs):
    alpha: float = Field(0.99, ge=0.0, lt=1.0)
    eps: Eps = 1e-8
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    centered: bool = False


class AdamArgs(OptimizerArgs):
    """torch.optim.Adam; with `regularization.decay: decoupled` it is AdamW's update."""

    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("coupled", "decoupled")
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-8
    amsgrad: bool = False


class AdamWArgs(AdamArgs):
    """torch.optim.AdamW: decay decoupled from the gradient (Loshchilov & Hutter, 2019)."""

    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("decoupled", "coupled")


class NAdamArgs(OptimizerArgs):
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("coupled", "decoupled")
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-8
    momentum_decay: float = Field(4e-3, ge=0.0, le=1.0)


class RAdamArgs(OptimizerArgs):
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("coupled", "decoupled")
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-8


class AdamaxArgs(OptimizerArgs):
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-8


class ASGDArgs(OptimizerArgs):
    """Averaged SGD (Polyak & Juditsky)."""

    lambd: float = Field(1e-4, ge=0.0, le=1.0, description="decay term")
    alpha: float = Field(0.75, ge=0.0, le=1.0, description="power for eta update")
    t0: float = Field(1e6, ge=0.0, le=1e12, description="step at which averaging starts")


class RpropArgs(OptimizerArgs):
    """Resilient backprop: sign-based steps, meant for full batches."""

    full_batch: ClassVar[bool] = True
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ()
    etas: tuple[
        Annotated[float, Field(gt=0.0, lt=1.0)], Annotated[float, Field(gt=1.0, le=10.0)]
    ] = (0.5, 1.2)
    step_sizes: tuple[
        Annotated[float, Field(ge=0.0, le=1.0)], Annotated[float, Field(gt=0.0, le=1e3)]
    ] = (1e-6, 50.0)


class AdafactorArgs(OptimizerArgs):
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("decoupled",)
    beta2_decay: float = Field(-0.8, ge=-1.0, le=0.0)
    eps: Eps = 1e-3
    d: float = Field(1.0, gt=0.0, le=100.0, description="clipping threshold of the update RMS")


class LBFGSArgs(OptimizerArgs):
    """torch.optim.LBFGS on the full training set; each step runs up to `max_iter` iterations."""

    kind: ClassVar[Kind] = "closure"
    full_batch: ClassVar[bool] = True
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ()
    max_iter: int = Field(20, ge=1, le=10_000, description="iterations per optimizer step")
    history_size: int = Field(100, ge=1, le=1000)
    line_search: Literal["none", "strong_wolfe"] = "strong_wolfe"
    tolerance_grad: float = Field(1e-7, ge=0.0, le=1.0)
    tolerance_change: float = Field(1e-9, ge=0.0, le=1.0)


class MuonArgs(OptimizerArgs):
    """torch.optim.Muon on hidden 2-D weight matrices, AdamW for every other parameter."""

    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("decoupled",)
    momentum: float = Field(0.95, ge=0.0, lt=1.0)
    nesterov: bool = True
    ns_steps: int = Field(5, ge=1, le=20, description="Newton–Schulz iterations")
    adjust_lr: Literal["original", "match_rms_adamw"] = Field(
        "match_rms_adamw",
        description="match_rms_adamw lets Muon and its AdamW fallback share one learning rate",
    )
    fallback_lr_scale: float = Field(
        1.0, gt=0.0, le=100.0, description="AdamW's rate for the other parameters, × lr"
    )


class LionArgs(OptimizerArgs):
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("decoupled", "coupled")
    betas: tuple[Beta, Beta] = (0.9, 0.99)


class LambArgs(OptimizerArgs):
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("decoupled", "coupled")
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-6


class ScheduleFreeAdamWArgs(OptimizerArgs):
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("decoupled",)
    schedule_free: ClassVar[bool] = True
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-8
    r: float = Field(0.0, ge=0.0, le=10.0, description="polynomial weighting power")
    weight_lr_power: float = Field(2.0, ge=0.0, le=10.0)


class ScheduleFreeSGDArgs(OptimizerArgs):
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("coupled",)
    schedule_free: ClassVar[bool] = True
    momentum: float = Field(0.9, gt=0.0, lt=1.0)
    r: float = Field(0.0, ge=0.0, le=10.0)
    weight_lr_power: float = Field(2.0, ge=0.0, le=10.0)


class SOAPArgs(OptimizerArgs):
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ("decoupled",)
    betas: tuple[Beta, Beta] = (0.95, 0.95)
    shampoo_beta: Beta | None = None
    precondition_frequency: int = Field(10, ge=1, le=100_000)
    eps: Eps = 1e-8


class NewtonArgs(OptimizerArgs):
    """Newton's method with the exact Hessian (torch.func) on the full batch, for small nets."""

    kind: ClassVar[Kind] = "newton"
    full_batch: ClassVar[bool] = True
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ()
    damping: float = Field(0.0, ge=0.0, le=1e6, description="λ in (H + λI) d = g")
    max_parameters: int = Field(
        4096, ge=1, le=20_000, description="refuse nets larger than this (the Hessian is n²)"
    )


class SimulatedAnnealingArgs(OptimizerArgs):
    """Random-walk proposals w' = w + lr·N(0, I), accepted by the Metropolis rule at
    temperature T_t = initial_temperature · cooling^t (002's acceptance rule)."""

    kind: ClassVar[Kind] = "search"
    full_batch: ClassVar[bool] = True
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ()
    initial_temperature: float = Field(1.0, gt=0.0, le=1e6)
    cooling: float = Field(0.995, gt=0.0, le=1.0, description="temperature factor per step")


class EvolutionStrategiesArgs(OptimizerArgs):
    """OpenAI-style evolution strategies: a search-gradient estimate from a Gaussian population
    around the weights, antithetic pairs, rank-based fitness shaping; w ← w − lr·ĝ."""

    kind: ClassVar[Kind] = "search"
    full_batch: ClassVar[bool] = True
    decay_modes: ClassVar[tuple[DecayMode, ...]] = ()
    population: int = Field(32, ge=2, le=4096)
    sigma: float = Field(0.05, gt=0.0, le=10.0, description="std of the perturbations")
    antithetic: bool = True
    rank_shaping: bool = True

    @model_validator(mode="after")
    def _even_population(self) -> "EvolutionStrategiesArgs":
        if self.antithetic and self.population % 2:
            raise ValueError("antithetic sampling needs an even population")
        return self


OPTIMIZER_ARGS: dict[str, type[OptimizerArgs]] = {
    "sgd": SGDArgs,
    "gd": GDArgs,
    "adagrad": AdagradArgs,
    "adadelta": AdadeltaArgs,
    "rmsprop": RMSpropArgs,
    "adam": AdamArgs,
    "adamw": AdamWArgs,
    "nadam": NAdamArgs,
    "radam": RAdamArgs,
    "adamax": AdamaxArgs,
    "asgd": ASGDArgs,
    "rprop": RpropArgs,
    "adafactor": AdafactorArgs,
    "lbfgs": LBFGSArgs,
    "muon": MuonArgs,
    "lion": LionArgs,
    "lamb": LambArgs,
    "schedule_free_adamw": ScheduleFreeAdamWArgs,
    "schedule_free_sgd": ScheduleFreeSGDArgs,
    "soap": SOAPArgs,
    "newton": NewtonArgs,
    "simulated_annealing": SimulatedAnnealingArgs,
    "evolution_strategies": EvolutionStrategiesArgs,
}
