"""The training loop (STYLE.md): forward under autocast, backward, unscale → clip → step →
update → zero_grad. Evaluation, metric flushing and stop conditions live in helpers."""

import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from models.spec import JobSpec
from models.tables import JobStatus
from worker.engine.checkpoint import Checkpointer
from worker.engine.compress import compression_report
from worker.engine.setup import TrainingRun, build_run
from worker.engine.sink import MetricSink
from worker.engine.steps import log_step_stats, set_learning_rate, use_averaged_weights
from worker.engine.uncertainty import Calibration, mc_dropout_metrics

VERSION = "0.1.0"


@dataclass
class Outcome:
    status: JobStatus
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    net: torch.nn.Module | None = None  # the trained net, for its saved weights (ensembles)


def train(
    spec: JobSpec,
    sink: MetricSink,
    *,
    data_root: Path,
    device: torch.device | None = None,
    checkpoints: Checkpointer | None = None,
) -> Outcome:
    if spec.task == "lr_range_test":  # imported here: it builds on this module's helpers
        from worker.engine.lr_range_test import lr_range_test

        return lr_range_test(spec, sink, data_root=data_root, device=device)
    started = time.perf_counter()
    run = build_run(spec, data_root=data_root, device=device)
    sink.set_totals(run.total_steps, run.total_steps / run.data.steps_per_epoch)
    if spec.stop.target:
        sink.target = (spec.stop.target.metric, spec.stop.target.value, spec.stop.target.mode)
    run.net.train()
    keeper = checkpoints or Checkpointer()  # checkpoint/resume (worker/engine/checkpoint.py)
    step, stop = keeper.resume(run, sink), None
    try:
        while step < run.total_steps and stop is None:
            for x, y in keeper.epoch_batches(run.data):
                lr = run.schedule(step)
                set_learning_rate(run.optimizer, lr)
                loss, grad_norm = run.step(run, x, y)
                step += 1
                epoch = step / run.data.steps_per_epoch
                sink.log("train_loss", step, loss, epoch)
                sink.log("lr", step, lr, epoch)
                if grad_norm is not None:
                    sink.log("grad_norm", step, grad_norm, epoch)
                last = step == run.total_steps
                if last or eval_due(spec, step, run.data.steps_per_epoch):
                    log_evaluation(run, sink, step, epoch)
                if last or sink.due() or keeper.due(step):
                    stop = flush(run, sink, step, epoch)
                    stop = stop or keeper.after_flush(run, sink, step, last)
                if last or stop is not None:
                    break
    except BaseException:
        sink.flush(step, step / run.data.steps_per_epoch)  # keep what was measured
        raise
    status, error = stop or (JobStatus.succeeded, None)
    after = post_training(run, sink, step) if status == JobStatus.succeeded else {}
    summary = summarize(run, sink, step, time.perf_counter() - started)
    use_averaged_weights(run, True)  # the net as it was evaluated, for its saved weights
    return Outcome(status, {**summary, **after}, error, net=run.net)


def eval_due(spec: JobSpec, step: int, steps_per_epoch: int) -> bool:
    every = spec.eval.every_steps or spec.eval.every_epochs * steps_per_epoch
    return step % every == 0


@torch.no_grad()
def evaluate(run: TrainingRun, batch_size: int = 1024) -> dict[str, torch.Tensor]:
    x, y = run.data.x_val, run.data.y_val
    if len(x) == 0:
        return {}
    run.net.eval()
    use_averaged_weights(run, True)  # schedule-free optimizers evaluate their average
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device)
    calibration = Calibration(run.device)  # ECE, NLL, entropy (worker/engine/uncertainty.py)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with run.precision.autocast():
            out = run.net(xb)
        loss_sum += run.loss_fn(out.float(), yb) * len(xb)
        if run.classification:
            correct += (out.argmax(dim=1) == yb).sum()
            calibration.update(out, yb)
    use_averaged_weights(run, False)
    run.net.train()
    metrics = {"val_loss": loss_sum / len(x)}
    if run.classification:
        metrics["val_acc"] = correct / len(x)
        metrics.update(calibration.compute())
        if passes := run.spec.eval.mc_dropout:
            autocast = run.precision.autocast
            metrics.update(mc_dropout_metrics(run.net, x, y, passes, autocast=autocast))
    return metrics


def log_evaluation(run: TrainingRun, sink: MetricSink, step: int, epoch: float) -> None:
    metrics = evaluate(run)
    for name, value in metrics.items():
        sink.log(name, step, value, epoch)
    observe = getattr(run.schedule, "observe", None)  # ReduceLROnPlateau reads the results
    if observe is not None:
        observe(metrics)


def flush(
    run: TrainingRun, sink: MetricSink, step: int, epoch: float
) -> tuple[JobStatus, str | None] | None:
    """Write the buffer and decide whether to stop: canceled, diverged, or target reached."""
    if run.precision.scaled:
        sink.log("loss_scale", step, run.precision.scaler.get_scale(), epoch)
    log_step_stats(run, sink, step, epoch)  # clip_fraction, skipped_steps
    if sink.flush(step, epoch):
        return JobStatus.canceled, None
    if run.spec.stop.divergence and sink.first_nonfinite is not None:
        bad_step, name = sink.first_nonfinite
        last = sink.stats.get(name)
        last_finite = f"{last.final:.6g} at step {last.final_step}" if last else "none"
        return (
            JobStatus.diverged,
            f"{name} is not finite at step {bad_step}; last finite {last_finite}",
        )
    if run.spec.stop.divergence and sink.skip_streak >= run.spec.stop.max_skipped_steps:
        loss = sink.stats.get("train_loss")
        last_finite = f"{loss.final:.6g} at step {loss.final_step}" if loss else "none"
        return (
            JobStatus.diverged,
            f"fp16: {sink.skip_streak} consecutive steps skipped for non-finite gradients by "
            f"step {step}; last finite train_loss {last_finite}",
        )
    target = run.spec.stop.target
    if target and target.stop_training and sink.target_reached is not None:
        return JobStatus.succeeded, None
    return None


def post_training(run: TrainingRun, sink: MetricSink, step: int) -> dict[str, Any]:
    """Steps after the last update; returns their summary sections. Low-rank compression
    (worker/engine/compress.py) logs `compress_*` metrics at step = rank."""
    if run.spec.compress is None:
        return {}
    epoch = step / run.data.steps_per_epoch
    report = compression_report(
        run.net,
        run.spec.compress.ranks,
        lambda net: evaluate(replace(run, net=net)),
        lambda name, rank, value: sink.log(name, rank, value, epoch),
    )
    sink.flush(step, epoch)
    return report


def summarize(run: TrainingRun, sink: MetricSink, step: int, wall_time: float) -> dict[str, Any]:
    summary = sink.summary()
    summary.update(
        steps=step,
        epochs=step / run.data.steps_per_epoch,
        wall_time_s=round(wall_time, 3),
        device=str(run.device),
        precision=run.spec.precision,
        parameters=sum(p.numel() for p in run.net.parameters()),
        data_source=run.data.bundle.source,
        spec_hash=run.spec.spec_hash(),
        seed=run.spec.seed,
        versions={
            "descent": VERSION,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )
    if sink.target:
        reached = sink.target_reached
        summary["target"] = {
            "metric": sink.target[0],
            "value": sink.target[1],
            "reached": reached is not None,
            "step": reached[0] if reached else None,
            "wall_time_s": round(reached[1], 3) if reached else None,
        }
    return summary
