"""Learning-rate schedule options (the schema half); worker/strategies/schedules.py has the math.

Every schedule counts optimizer steps t = 0 … T−1 (T = the steps after warmup) and maps them to
a rate; the spec's `optimizer.lr` is the peak rate. `warmup_steps`, a common field of the spec's
`schedule`, puts a linear warmup in front of any of them. `lr_min` values are absolute rates and
must not exceed `optimizer.lr` (checked by the spec).
"""

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from models.catalog.base import Args

Steps = Annotated[int, Field(ge=1, le=10_000_000)]
LrMin = Field(0.0, ge=0.0, le=10.0, description="absolute rate at the end (≤ optimizer.lr)")


class ScheduleArgs(Args):
    """`reactive`: the schedule moves on validation results, not only on the step count."""

    reactive: ClassVar[bool] = False


class ConstantArgs(ScheduleArgs):
    """The spec's lr at every step."""


class StepArgs(ScheduleArgs):
    """lr · γ^⌊t / step_size⌋ (StepLR)."""

    step_size: Steps = Field(1000, description="steps between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0)


class MultiStepArgs(ScheduleArgs):
    """lr · γ^(number of milestones ≤ t) (MultiStepLR)."""

    milestones: list[Steps] = Field([1000, 2000], min_length=1, max_length=64)
    gamma: float = Field(0.1, gt=0.0, le=1.0)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError("milestones must be strictly increasing")
        return value


class ExponentialArgs(ScheduleArgs):
    """lr · γ^t (ExponentialLR, per step)."""

    gamma: float = Field(0.999, gt=0.0, le=1.0)


class LinearArgs(ScheduleArgs):
    """Straight line from lr at t=0 to lr_min at t=T (LinearLR)."""

    lr_min: float = LrMin


class PolynomialArgs(ScheduleArgs):
    """lr_min + (lr − lr_min)(1 − t/T)^power (PolynomialLR when lr_min = 0)."""

    power: float = Field(1.0, gt=0.0, le=10.0)
    lr_min: float = LrMin


class CosineArgs(ScheduleArgs):
    """lr_min + ½(lr − lr_min)(1 + cos(π·t/T)) (000's formula; CosineAnnealingLR)."""

    lr_min: float = LrMin


class CosineRestartsArgs(ScheduleArgs):
    """SGDR (Loshchilov & Hutter): cosine over `period` steps, then restart; each period is
    `multiplier` times the previous (CosineAnnealingWarmRestarts)."""

    period: Steps = Field(1000, description="steps of the first cycle")
    multiplier: int = Field(1, ge=1, le=10)
    lr_min: float = LrMin


class OneCycleArgs(ScheduleArgs):
    """Smith's 1cycle (OneCycleLR): from lr/div_factor up to lr over pct_start of the steps,
    then down to lr/(div_factor·final_div_factor)."""

    pct_start: float = Field(0.3, gt=0.0, lt=1.0)
    anneal: Literal["cos", "linear"] = "cos"
    div_factor: float = Field(25.0, ge=1.0, le=1e6)
    final_div_factor: float = Field(1e4, ge=1.0, le=1e9)
    three_phase: bool = False


class CyclicArgs(ScheduleArgs):
    """Smith's cyclical rates (CyclicLR) between lr_min and lr."""

    lr_min: float = LrMin
    step_size_up: Steps = 2000
    step_size_down: Steps | None = None
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    gamma: float = Field(1.0, gt=0.0, le=1.0, description="exp_range decay per step")


class PlateauArgs(ScheduleArgs):
    """ReduceLROnPlateau on a validation metric, checked at every evaluation."""

    reactive: ClassVar[bool] = True
    metric: Literal["val_loss", "val_acc"] = "val_loss"
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto: max for *_acc")
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(10, ge=0, le=100_000, description="evaluations without improvement")
    threshold: float = Field(1e-4, ge=0.0, le=1e3)
    threshold_mode: Literal["rel", "abs"] = "rel"
    cooldown: int = Field(0, ge=0, le=100_000)
    lr_min: float = LrMin

    @model_validator(mode="after")
    def _mode_fits_metric(self) -> "PlateauArgs":
        if self.mode == "min" and self.metric.endswith("acc"):
            raise ValueError("accuracy improves upwards: use mode max or auto")
        return self


SCHEDULE_ARGS: dict[str, type[ScheduleArgs]] = {
    "constant": ConstantArgs,
    "step": StepArgs,
    "multistep": MultiStepArgs,
    "exponential": ExponentialArgs,
    "linear": LinearArgs,
    "polynomial": PolynomialArgs,
    "cosine": CosineArgs,
    "cosine_restarts": CosineRestartsArgs,
    "onecycle": OneCycleArgs,
    "cyclic": CyclicArgs,
    "plateau": PlateauArgs,
}
