"""One optimizer step for each kind of optimizer (models/catalog/optimizers.py `kind`).

- gradient: forward under autocast (at noisy weights when weight noise is on), backward,
  unscale → clip → step → update → zero_grad (STYLE.md's loop, nanoGPT's order).
- sam: the same, with SAM's two passes: the first gradient sets the perturbation, the second,
  taken at w + ε, is clipped and stepped from the clean w.
- closure: L-BFGS calls the loss itself, several times per step.
- newton: loss, gradient and exact Hessian through torch.func.
- search: loss evaluations only (simulated annealing, evolution strategies).

Each returns (loss, pre-clip gradient norm or None) as device tensors, and counts clipped and
fp16-skipped steps on the device (`StepStats`): nothing here reads a value back to the host.

fp16 with SAM: GradScaler can unscale each optimizer once per step, so the first pass is
unscaled through the SAM wrapper and the second through its base; `update()` combines both
overflow flags, so an overflow in either pass halves the scale. An overflow in the first pass
makes ε non-finite, the second pass then sees non-finite gradients and the base step is skipped;
`restore()` copies the clean weights back, so nothing leaks into them.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from worker.engine.sink import MetricSink
from worker.strategies.optimizers.newton import newton_closure
from worker.strategies.regularizers import stepping_optimizer

if TYPE_CHECKING:
    from worker.engine.setup import TrainingRun

StepResult = tuple[torch.Tensor, torch.Tensor | None]
StepFn = Callable[["TrainingRun", torch.Tensor, torch.Tensor], StepResult]


@dataclass
class StepStats:
    """Counters kept on the device and logged at each flush."""

    device: torch.device
    clipped: torch.Tensor = field(init=False)
    skipped: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.clipped = torch.zeros((), device=self.device)
        self.skipped = torch.zeros((), device=self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"clipped": self.clipped, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clipped = state["clipped"].to(self.device)
        self.skipped = state["skipped"].to(self.device)


def forward_backward(run: "TrainingRun", x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with run.regularizer.noisy_weights():
        with run.precision.autocast():
            loss = run.objective(run.net(x), y)
        run.precision.scaler.scale(loss).backward()
    return loss.detach()


def clip_and_step(run: "TrainingRun", optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """unscale → clip → step → update → zero_grad; returns the pre-clip global norm."""
    scaler = run.precision.scaler
    scaler.unscale_(optimizer)
    grad_norm, clipped = run.clipper(run.params)
    if clipped is not None:
        run.stats.clipped += clipped
    if run.precision.scaled:  # GradScaler skips exactly the steps whose gradients overflowed
        run.stats.skipped += ~torch.isfinite(grad_norm)
    scaler.step(optimizer)
    scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    return grad_norm


def gradient_step(run: "TrainingRun", x: torch.Tensor, y: torch.Tensor) -> StepResult:
    loss = forward_backward(run, x, y)
    return loss, clip_and_step(run, run.optimizer)


def sam_step(run: "TrainingRun", x: torch.Tensor, y: torch.Tensor) -> StepResult:
    sam = run.optimizer
    loss = forward_backward(run, x, y)
    run.precision.scaler.unscale_(sam)
    sam.perturb()  # type: ignore[attr-defined]
    sam.zero_grad(set_to_none=True)
    forward_backward(run, x, y)
    sam.restore()  # type: ignore[attr-defined]
    return loss, clip_and_step(run, stepping_optimizer(sam))


def closure_step(run: "TrainingRun", x: torch.Tensor, y: torch.Tensor) -> StepResult:
    def closure() -> torch.Tensor:
        run.optimizer.zero_grad()
        loss = run.objective(run.net(x), y) + run.regularizer.penalty()
        loss.backward()
        return loss

    loss = run.optimizer.step(closure)
    grad_norm, _ = run.clipper(run.params)  # mode none: only measures
    return loss.detach(), grad_norm


def newton_step(run: "TrainingRun", x: torch.Tensor, y: torch.Tensor) -> StepResult:
    def objective(out: torch.Tensor, values: dict[int, torch.Tensor]) -> torch.Tensor:
        return run.objective(out, y) + run.regularizer.penalty(values)

    closure = newton_closure(run.net, run.params, x, objective)
    return run.optimizer.step(closure), None  # type: ignore[arg-type]


def search_step(run: "TrainingRun", x: torch.Tensor, y: torch.Tensor) -> StepResult:
    @torch.no_grad()
    def closure() -> torch.Tensor:
        return run.objective(run.net(x), y) + run.regularizer.penalty()

    return run.optimizer.step(closure), None  # type: ignore[arg-type]


STEPS: dict[str, StepFn] = {
    "gradient": gradient_step,
    "sam": sam_step,
    "closure": closure_step,
    "newton": newton_step,
    "search": search_step,
}


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate for every group, times the group's own `lr_scale` (Muon's AdamW)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def use_averaged_weights(run: "TrainingRun", averaged: bool) -> None:
    """Schedule-free optimizers train at y and evaluate at their average x: switch between
    them around evaluation (a no-op for every other optimizer)."""
    if run.spec.optimizer.args.schedule_free:
        inner = stepping_optimizer(run.optimizer)
        inner.eval() if averaged else inner.train()  # type: ignore[attr-defined]


def log_step_stats(run: "TrainingRun", sink: MetricSink, step: int, epoch: float) -> None:
    """At a flush: share of clipped steps, and fp16 overflow steps skipped so far."""
    if run.spec.clipping.mode not in ("none", "normalize") and step:
        sink.log("clip_fraction", step, run.stats.clipped / step, epoch)
    if run.precision.scaled:
        sink.log("skipped_steps", step, run.stats.skipped.clone(), epoch)


def trainable(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]
