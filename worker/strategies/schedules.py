"""Learning-rate schedules as plain functions of the step (optax's habit, STYLE.md).

A schedule maps the optimizer step t (0-based, counted after warmup) to a learning rate; the
spec's lr is the peak. Warmup is a join of a linear ramp and any schedule (`with_warmup`), not a
kind of its own. The engine sets the rate before each step and logs it as `lr`.

The formulas are written out rather than driving torch.optim.lr_scheduler objects, so a rate
is a pure function of t (no hidden state to checkpoint, no stepping order to get wrong);
tests/worker/strategies/test_schedules.py checks each against its lr_scheduler twin step by
step and against closed forms. ReduceLROnPlateau is the exception: it reacts to validation
results, so it is an object with `observe(metrics)`, and it uses torch's own implementation.
"""

import bisect
import math
from collections.abc import Callable
from typing import Any

import torch

from models.catalog.schedules import (
    ConstantArgs,
    CosineArgs,
    CosineRestartsArgs,
    CyclicArgs,
    ExponentialArgs,
    LinearArgs,
    MultiStepArgs,
    OneCycleArgs,
    PlateauArgs,
    PolynomialArgs,
    StepArgs,
)

Schedule = Callable[[int], float]
ScheduleBuilder = Callable[[float, int, Any], Schedule]


def constant(lr: float, total_steps: int, args: ConstantArgs) -> Schedule:
    return lambda t: lr


def step_decay(lr: float, total_steps: int, args: StepArgs) -> Schedule:
    """lr · γ^⌊t / step_size⌋ (StepLR counted in steps)."""
    return lambda t: lr * args.gamma ** (t // args.step_size)


def multistep(lr: float, total_steps: int, args: MultiStepArgs) -> Schedule:
    """lr · γ^k, k = number of milestones ≤ t (MultiStepLR)."""
    return lambda t: lr * args.gamma ** bisect.bisect_right(args.milestones, t)


def exponential(lr: float, total_steps: int, args: ExponentialArgs) -> Schedule:
    """lr · γ^t (ExponentialLR, stepped every optimizer step)."""
    return lambda t: lr * args.gamma**t


def linear(lr: float, total_steps: int, args: LinearArgs) -> Schedule:
    """lr + (lr_min − lr)·min(t, T)/T (LinearLR with end_factor lr_min/lr)."""
    return lambda t: lr + (args.lr_min - lr) * min(t, total_steps) / total_steps


def polynomial(lr: float, total_steps: int, args: PolynomialArgs) -> Schedule:
    """lr_min + (lr − lr_min)(1 − min(t, T)/T)^power (PolynomialLR when lr_min = 0)."""
    return lambda t: (
        args.lr_min + (lr - args.lr_min) * (1 - min(t, total_steps) / total_steps) ** args.power
    )


def _cosine_between(high: float, low: float, progress: float) -> float:
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * progress))


def cosine(lr: float, total_steps: int, args: CosineArgs) -> Schedule:
    """lr_min + ½(lr − lr_min)(1 + cos(π·t/T)), T = total steps (000's formula)."""
    return lambda t: _cosine_between(lr, args.lr_min, min(t, total_steps) / total_steps)


def cosine_restarts(lr: float, total_steps: int, args: CosineRestartsArgs) -> Schedule:
    """SGDR: cosine from lr to lr_min over T_i steps, then restart at lr; T_{i+1} = mult·T_i."""
    period, mult = args.period, args.multiplier

    def schedule(t: int) -> float:
        if mult == 1:
            t_cur, t_i = t % period, period
        else:
            cycle = int(math.log(t / period * (mult - 1) + 1, mult))
            t_cur = t - period * (mult**cycle - 1) // (mult - 1)
            t_i = period * mult**cycle
            if t_cur >= t_i:  # float log rounding at a cycle boundary
                t_cur, t_i = t_cur - t_i, t_i * mult
        return _cosine_between(lr, args.lr_min, t_cur / t_i)

    return schedule


def onecycle(lr: float, total_steps: int, args: OneCycleArgs) -> Schedule:
    """1cycle (OneCycleLR's phases): warm up from lr/div_factor to lr over pct_start·T steps,
    anneal to lr/(div_factor·final_div_factor); three_phase returns to the start first."""
    initial = lr / args.div_factor
    final = initial / args.final_div_factor
    up_end = args.pct_start * total_steps - 1
    if args.three_phase:
        phases = [
            (up_end, initial, lr),
            (2 * up_end, lr, initial),
            (total_steps - 1, initial, final),
        ]
    else:
        phases = [(up_end, initial, lr), (total_steps - 1, lr, final)]

    def anneal(start: float, end: float, pct: float) -> float:
        if args.anneal == "cos":
            return _cosine_between(start, end, pct)
        return start + (end - start) * pct

    def schedule(t: int) -> float:
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(phases):
            if t <= end_step or i == len(phases) - 1:
                span = end_step - start_step
                pct = (t - start_step) / span if span > 0 else 1.0
                return anneal(start, end, min(pct, 1.0))
            start_step = end_step
        raise AssertionError("unreachable")

    return schedule


def cyclic(lr: float, total_steps: int, args: CyclicArgs) -> Schedule:
    """Triangular cycles between lr_min and lr (CyclicLR): triangular keeps the height,
    triangular2 halves it every cycle, exp_range multiplies it by γ^t."""
    up = args.step_size_up
    total = up + (args.step_size_down or up)
    ratio = up / total

    def schedule(t: int) -> float:
        cycle = math.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        height = (lr - args.lr_min) * scale
        if args.mode == "triangular2":
            height *= 1 / 2.0 ** (cycle - 1)
        elif args.mode == "exp_range":
            height *= args.gamma**t
        return args.lr_min + height

    return schedule


class Plateau:
    """ReduceLROnPlateau (torch's) on a validation metric; `observe` after each evaluation.

    It reads the metric on the host, one sync per evaluation (not per step).
    """

    def __init__(self, lr: float, total_steps: int, args: PlateauArgs):
        self.metric = args.metric
        mode = (
            args.mode if args.mode != "auto" else ("max" if args.metric.endswith("acc") else "min")
        )
        self._holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        self._torch = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self._holder,
            mode=mode,
            factor=args.factor,
            patience=args.patience,
            threshold=args.threshold,
            threshold_mode=args.threshold_mode,
            cooldown=args.cooldown,
            min_lr=args.lr_min,
        )

    def __call__(self, t: int) -> float:
        return float(self._holder.param_groups[0]["lr"])

    def observe(self, metrics: dict[str, Any]) -> None:
        if self.metric in metrics:
            self._torch.step(float(metrics[self.metric]))

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self._torch.state_dict(), "lr": self(0)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._torch.load_state_dict(state["scheduler"])
        self._holder.param_groups[0]["lr"] = state["lr"]


SCHEDULES: dict[str, ScheduleBuilder] = {
    "constant": constant,
    "step": step_decay,
    "multistep": multistep,
    "exponential": exponential,
    "linear": linear,
    "polynomial": polynomial,
    "cosine": cosine,
    "cosine_restarts": cosine_restarts,
    "onecycle": onecycle,
    "cyclic": cyclic,
    "plateau": Plateau,
}


class Warmup:
    """Linear ramp to the schedule's first value over `steps`, then the schedule, shifted."""

    def __init__(self, schedule: Schedule, steps: int):
        self.schedule, self.steps = schedule, steps

    def __call__(self, t: int) -> float:
        if t < self.steps:
            return self.schedule(0) * (t + 1) / self.steps
        return self.schedule(t - self.steps)

    def observe(self, metrics: dict[str, Any]) -> None:
        observe = getattr(self.schedule, "observe", None)
        if observe is not None:
            observe(metrics)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped schedule's state (ReduceLROnPlateau's), for checkpoints."""
        inner = getattr(self.schedule, "state_dict", None)
        return inner() if inner is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.schedule.load_state_dict(state)  # type: ignore[attr-defined]


def with_warmup(schedule: Schedule, warmup_steps: int) -> Schedule:
    return Warmup(schedule, warmup_steps) if warmup_steps > 0 else schedule


def build_schedule(spec: Any, lr: float, total_steps: int) -> Schedule:
    """The spec's schedule over the steps that follow warmup, with the warmup in front."""
    main = SCHEDULES[spec.name](lr, max(total_steps - spec.warmup_steps, 1), spec.args)
    return with_warmup(main, spec.warmup_steps)
