"""Options of the training loop around the optimizer (the schema half): gradient clipping,
regularization, SAM/ASAM, initialization, the learning-rate range test, and the rules for which
of them combine.

The worker halves: worker/strategies/clipping.py (CLIPPERS), regularizers.py, sam.py, init.py
(INITIALIZERS) and worker/engine/lr_range_test.py. tests/worker/test_catalog_halves.py checks
that CLIPPING_MODES and INIT_SCHEMES name exactly what the worker implements.

`combination_errors` is what makes a spec that cannot run fail at submit time, with a field path
and a reason, instead of failing on a worker.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.catalog.datasets import REGRESSION_DATA
from models.catalog.optimizers import OPTIMIZER_ARGS

CLIPPING_MODES = ("none", "norm", "value", "adaptive", "agc", "normalize")
INIT_SCHEMES = (
    "default",
    "zeros",
    "orthogonal",
    "svd",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
)
ClippingMode = Literal[CLIPPING_MODES]  # type: ignore[valid-type]
InitScheme = Literal[INIT_SCHEMES]  # type: ignore[valid-type]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Which ClippingSpec fields each mode reads; setting another mode's field is a mistake we name.
_CLIPPING_FIELDS = {
    "none": set(),
    "norm": {"max_norm"},
    "value": {"max_value"},
    "adaptive": {"percentile", "history"},
    "agc": {"agc_factor", "agc_eps"},
    "normalize": {"normalize_eps"},
}


class ClippingSpec(Options):
    """Gradient clipping after unscaling, before the step. The pre-clip global norm is logged as
    `grad_norm` every step, the share of steps that were clipped as `clip_fraction`."""

    mode: ClippingMode = Field(
        "none",
        description="norm: global L2 norm; value: each element; adaptive: norm bounded by a "
        "percentile of past norms (AutoClip); agc: unit-wise adaptive clipping (NFNets); "
        "normalize: each parameter's gradient divided by (std + eps)",
    )
    max_norm: float = Field(1.0, gt=0.0, le=1e6, description="global L2 norm bound (norm)")
    max_value: float = Field(1.0, gt=0.0, le=1e6, description="per-element bound (value)")
    percentile: float = Field(10.0, gt=0.0, le=100.0, description="of past norms (adaptive)")
    history: int = Field(1000, ge=1, le=100_000, description="norms remembered (adaptive)")
    agc_factor: float = Field(0.01, gt=0.0, le=10.0, description="λ: ‖G_i‖ ≤ λ·‖W_i‖ (agc)")
    agc_eps: float = Field(1e-3, gt=0.0, le=1.0, description="floor on ‖W_i‖ (agc)")
    normalize_eps: float = Field(1e-8, gt=0.0, le=1.0, description="ε (normalize)")

    @model_validator(mode="after")
    def _fields_of_mode(self) -> "ClippingSpec":
        # Only a changed value is a mistake: a stored (resolved) spec carries every default.
        changed = {
            name
            for name in self.model_fields_set - {"mode"}
            if getattr(self, name) != type(self).model_fields[name].default
        }
        stray = changed - _CLIPPING_FIELDS[self.mode]
        if stray:
            modes = {f: m for m, fields in _CLIPPING_FIELDS.items() for f in fields}
            field = sorted(stray)[0]
            raise ValueError(f"{field} applies to mode {modes[field]!r}, not {self.mode!r}")
        return self


class RegularizationSpec(Options):
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="λ of the decay")
    decay: Literal["auto", "coupled", "decoupled"] = Field(
        "auto",
        description="coupled: L2, λ·w added to the gradient; decoupled: w ← w − lr·λ·w beside "
        "the update (AdamW); auto: the optimizer's own kind (decoupled for adamw, lion, lamb, "
        "muon, schedule-free, soap, adafactor; coupled otherwise)",
    )
    decay_all: bool = Field(
        False, description="also decay biases and normalization parameters (1-D tensors)"
    )
    l1: float = Field(
        0.0, ge=0.0, le=1.0, description="proximal L1: w ← sign(w)·max(|w| − lr·l1, 0) per step"
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="classification only")
    gradient_noise: float = Field(
        0.0, ge=0.0, le=10.0, description="σ₀: N(0, σ₀²/(1+t)^γ) added to the gradient"
    )
    gradient_noise_decay: float = Field(0.55, ge=0.0, le=2.0, description="γ")
    weight_noise: float = Field(
        0.0, ge=0.0, le=10.0, description="σ₀: the gradient is taken at w + N(0, σ_t²)"
    )
    weight_noise_decay: float = Field(0.0, ge=0.0, le=2.0, description="σ_t = σ₀/(1+t)^γ")


class SAMSpec(Options):
    """Sharpness-aware minimization (Foret et al. 2021) around the optimizer: the gradient is
    taken at w + ε, ε = ρ·g/‖g‖; adaptive (ASAM, Kwon et al. 2021): ε = ρ·T²g/‖T g‖, T = |w|."""

    rho: float = Field(0.05, gt=0.0, le=10.0)
    adaptive: bool = False


class LRRangeTestSpec(Options):
    """Smith's learning-rate range test: the rate grows exponentially from lr_min to lr_max over
    `steps` steps; the smoothed loss per step is recorded and a rate suggested."""

    lr_min: float = Field(1e-7, gt=0.0, le=10.0)
    lr_max: float = Field(10.0, gt=0.0, le=100.0)
    steps: int = Field(100, ge=10, le=100_000)
    smoothing: float = Field(0.98, ge=0.0, lt=1.0, description="EMA factor of the loss")
    stop_factor: float | None = Field(
        4.0, ge=1.0, le=1e6, description="stop when the smoothed loss exceeds this × its best"
    )

    @model_validator(mode="after")
    def _increasing(self) -> "LRRangeTestSpec":
        if self.lr_min >= self.lr_max:
            raise ValueError("lr_min must be below lr_max")
        return self


Problem = tuple[tuple[str | int, ...], str]  # (field path, message)


def combination_errors(spec: Any) -> list[Problem]:
    """Combinations of a training spec that cannot run, each with the field to change."""
    optimizer, schedule, reg = spec.optimizer, spec.schedule, spec.regularization
    traits = OPTIMIZER_ARGS[optimizer.name]
    problems: list[Problem] = []
    regression = spec.data.name in REGRESSION_DATA
    if traits.kind != "gradient":
        what = {
            "closure": "calls the loss itself (closure)",
            "newton": "steps with the exact Hessian",
            "search": "is gradient-free",
        }[traits.kind]
        not_for = f"{optimizer.name!r} {what}"
        if optimizer.sam is not None:
            problems.append((("optimizer", "sam"), f"SAM wraps gradient steps; {not_for}"))
        if spec.clipping.mode != "none":
            problems.append((("clipping", "mode"), f"use mode 'none': {not_for}"))
        if spec.precision != "fp32":
            problems.append((("precision",), f"use fp32: {not_for}"))
        for field in ("l1", "gradient_noise", "weight_noise"):
            if getattr(reg, field):
                problems.append((("regularization", field), f"must be 0: {not_for}"))
        if reg.weight_decay and reg.decay == "decoupled":
            problems.append(
                (("regularization", "decay"), f"use coupled (an L2 term in the loss): {not_for}")
            )
    if traits.schedule_free and schedule.name != "constant":
        problems.append(
            (
                ("schedule", "name"),
                f"{optimizer.name!r} averages its iterates instead of following a schedule; "
                "use 'constant' (warmup_steps allowed)",
            )
        )
    lr_min = getattr(schedule.args, "lr_min", 0.0)
    if lr_min > optimizer.lr:
        problems.append(
            (("schedule", "args", "lr_min"), f"{lr_min} is above optimizer.lr {optimizer.lr}")
        )
    if schedule.name == "plateau":
        if spec.data.val_fraction == 0:
            problems.append(
                (("schedule", "name"), "plateau reads validation metrics: data.val_fraction is 0")
            )
        if schedule.args.metric == "val_acc" and regression:
            problems.append(
                (("schedule", "args", "metric"), f"{spec.data.name!r} is regression: no val_acc")
            )
    if reg.label_smoothing and regression:
        problems.append(
            (("regularization", "label_smoothing"), f"{spec.data.name!r} is not classification")
        )
    if spec.task == "lr_range_test":
        if traits.kind != "gradient" or traits.full_batch:
            problems.append(
                (("optimizer", "name"), "the range test needs a mini-batch gradient optimizer")
            )
        if schedule.name != "constant" or schedule.warmup_steps:
            problems.append(
                (("schedule",), "the range test sets the rate itself: leave the schedule out")
            )
    elif spec.lr_range_test is not None:
        problems.append(
            (("lr_range_test",), f"only read by task 'lr_range_test', not {spec.task!r}")
        )
    return problems
