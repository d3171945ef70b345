"""`task: lr_range_test`: Smith's learning-rate range test ("LR finder").

The rate grows exponentially from lr_min to lr_max over N steps,

    lr_i = lr_min · (lr_max / lr_min)^(i / (N − 1)),

with the spec's net, data, optimizer, clipping and precision. Each step logs `lr`, `train_loss`
and `smoothed_loss`, the bias-corrected exponential average avg_i / (1 − β^i). The test stops
early once the smoothed loss exceeds `stop_factor` × its best (or is not finite): past that point
the rate only diverges. The summary suggests:

- `steepest_lr`: where the smoothed loss falls fastest against log(lr), before its minimum
  (Smith 2017, https://arxiv.org/abs/1506.01186; fastai's "steepest");
- `min_loss_lr / 10`: a tenth of the rate at the lowest smoothed loss (fastai's "minimum");
- `suggested_lr`: the steepest one.

Losses are read back to the host every `CHUNK` steps (one sync per chunk) for the stop rule.
"""

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.spec import JobSpec
from models.tables import JobStatus
from worker.engine.loop import Outcome, summarize
from worker.engine.setup import build_run
from worker.engine.sink import MetricSink
from worker.engine.steps import set_learning_rate

CHUNK = 10


def sweep(lr_min: float, lr_max: float, steps: int) -> list[float]:
    return [lr_min * (lr_max / lr_min) ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average; NaN/inf pass through as inf."""
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            out.append(math.inf)
            continue
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def suggest(rates: list[float], smoothed: list[float]) -> dict[str, float | None]:
    finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    if len(finite) < 3:
        return {"suggested_lr": None, "steepest_lr": None, "min_loss_lr": None}
    best = min(finite, key=lambda i: smoothed[i])
    upto = [i for i in finite if i <= best]
    steepest = None
    if len(upto) >= 3:
        slope = np.gradient(np.array([smoothed[i] for i in upto]), np.log([rates[i] for i in upto]))
        steepest = rates[upto[int(np.argmin(slope))]]
    return {
        "suggested_lr": steepest if steepest is not None else rates[best] / 10,
        "steepest_lr": steepest,
        "min_loss_lr": rates[best],
        "min_loss_lr_div10": rates[best] / 10,
    }


def lr_range_test(
    spec: JobSpec, sink: MetricSink, *, data_root: Path, device: torch.device | None = None
) -> Outcome:
    started = time.perf_counter()
    run = build_run(spec, data_root=data_root, device=device)
    options = spec.lr_range_test
    assert options is not None  # JobSpec fills in the defaults for this task
    rates = sweep(options.lr_min, options.lr_max, options.steps)
    per_epoch = run.data.steps_per_epoch
    sink.set_totals(options.steps, options.steps / per_epoch)
    run.net.train()
    pending: list[torch.Tensor] = []
    losses: list[float] = []
    smoothed: list[float] = []
    step, stopped_at, canceled = 0, None, False
    while step < options.steps and stopped_at is None and not canceled:
        for x, y in run.data.epoch_batches():
            set_learning_rate(run.optimizer, rates[step])
            loss, _ = run.step(run, x, y)
            step += 1
            sink.log("train_loss", step, loss, step / per_epoch)
            sink.log("lr", step, rates[step - 1], step / per_epoch)
            pending.append(loss)
            if step % CHUNK == 0 or step == options.steps:
                stopped_at = _read_chunk(pending, losses, smoothed, options, sink, per_epoch)
                pending.clear()
            if sink.due() or step == options.steps or stopped_at is not None:
                canceled = sink.flush(step, step / per_epoch)
            if step == options.steps or stopped_at is not None or canceled:
                break
    if pending:
        _read_chunk(pending, losses, smoothed, options, sink, per_epoch)
    sink.flush(step, step / per_epoch)
    summary = summarize(run, sink, step, time.perf_counter() - started)
    summary["lr_range_test"] = {
        **suggest(rates[: len(smoothed)], smoothed),
        "lr_min": options.lr_min,
        "lr_max": options.lr_max,
        "steps_run": step,
        "stopped_early_at": stopped_at,
    }
    return Outcome(JobStatus.canceled if canceled else JobStatus.succeeded, summary)


def _read_chunk(
    pending: list[torch.Tensor],
    losses: list[float],
    smoothed: list[float],
    options: Any,
    sink: MetricSink,
    per_epoch: int,
) -> int | None:
    """Bring a chunk of losses to the host, log their smoothed values, apply the stop rule."""
    first = len(losses)
    losses.extend(torch.stack(pending).float().tolist())
    smoothed[:] = smooth(losses, options.smoothing)
    best = min(smoothed[:first], default=math.inf)
    for i in range(first, len(losses)):
        step = i + 1
        if math.isfinite(smoothed[i]):
            sink.log("smoothed_loss", step, smoothed[i], step / per_epoch)
        best = min(best, smoothed[i])
        too_high = options.stop_factor is not None and smoothed[i] > options.stop_factor * best
        if step > 1 and (too_high or not math.isfinite(smoothed[i])):
            del losses[step:], smoothed[step:]
            return step
    return None
