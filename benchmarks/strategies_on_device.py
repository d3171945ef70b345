"""Every optimizer in the catalog, SAM/ASAM, and each precision run as a job on one device.

The unit tests pin the CPU; this runs the same engine on whatever device is named (CUDA where
there is one): one short job per optimizer on a small MLP (gradient-free and Newton on 002's
points), SAM/ASAM under fp32/bf16/fp16 with clipping, a schedule-free job, a transformer with
warmup, an LSTM on the adding problem, and the fp16 check that an injected inf gradient skips
the step and halves the loss scale. Prints a table and writes JSON.

    python benchmarks/strategies_on_device.py [--device cuda] [--out PATH]
"""

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.catalog import OPTIMIZER_ARGS  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from worker.engine import train  # noqa: E402
from worker.engine.setup import build_run  # noqa: E402
from worker.engine.sink import MemorySink  # noqa: E402

LR = {
    "sgd": 0.2, "gd": 0.5, "adagrad": 0.1, "adadelta": 1.0, "rmsprop": 0.01, "adam": 0.01,
    "adamw": 0.01, "nadam": 0.01, "radam": 0.01, "adamax": 0.02, "asgd": 0.2, "rprop": 0.01,
    "adafactor": 0.01, "lbfgs": 1.0, "muon": 0.02, "lion": 0.003, "lamb": 0.01,
    "schedule_free_adamw": 0.01, "schedule_free_sgd": 0.5, "soap": 0.01, "newton": 1.0,
    "simulated_annealing": 0.05, "evolution_strategies": 0.05,
}  # fmt: skip
POINTS = {"name": "points", "args": {"x": [[1.0], [2.0]], "y": [[3.0], [5.0]]}, "val_fraction": 0}
CLASSIFICATION = {
    "name": "synthetic_classification",
    "args": {"n_samples": 512, "n_features": 16, "n_classes": 4, "class_sep": 2.0},
    "batch_size": 64,
}


def job_for(name: str) -> dict:
    kind = OPTIMIZER_ARGS[name].kind
    if kind in ("newton", "search"):
        steps = {"newton": 2, "search": 300}[kind]
        return {"model": {"name": "linear"}, "data": POINTS, "max_steps": steps}
    return {
        "model": {"name": "mlp", "args": {"hidden": [64]}},
        "data": CLASSIFICATION,
        "max_steps": 5 if name == "lbfgs" else 60,
    }


def jobs() -> dict[str, dict]:
    found = {
        f"optimizer {name}": {**job_for(name), "optimizer": {"name": name, "lr": LR[name]}}
        for name in OPTIMIZER_ARGS
    }
    base = {
        "model": {"name": "mlp", "args": {"hidden": [64]}},
        "data": CLASSIFICATION,
        "max_steps": 60,
    }
    for precision in ("fp32", "bf16", "fp16"):
        for label, sam in (("sam", {"rho": 0.05}), ("asam", {"rho": 0.5, "adaptive": True})):
            found[f"{label} + adamw + clip norm, {precision}"] = {
                **base,
                "optimizer": {"name": "adamw", "lr": 0.01, "sam": sam},
                "clipping": {"mode": "norm", "max_norm": 1.0},
                "precision": precision,
            }
    found["transformer, warmup + cosine, bf16"] = {
        "model": {"name": "transformer", "args": {"d_model": 64, "heads": 4, "layers": 2}},
        "data": {"name": "associative_recall", "args": {"n_samples": 4096}, "batch_size": 128},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "schedule": {"name": "cosine", "warmup_steps": 30},
        "precision": "bf16",
        "max_steps": 300,
    }
    found["lstm, adding problem, adaptive clipping, fp16"] = {
        "model": {"name": "rnn", "args": {"cell": "lstm", "hidden": 64}},
        "data": {
            "name": "adding_problem",
            "args": {"n_samples": 4096, "length": 50},
            "batch_size": 128,
        },
        "optimizer": {"name": "adam", "lr": 0.003},
        "clipping": {"mode": "adaptive", "percentile": 10},
        "precision": "fp16",
        "max_steps": 300,
    }
    return found


def run_job(spec: dict, device: torch.device, data_root: Path) -> dict:
    sink = MemorySink(flush_seconds=3600)
    started = time.perf_counter()
    outcome = train(JobSpec.model_validate(spec), sink, data_root=data_root, device=device)
    losses = sink.series("train_loss")
    final = outcome.summary.get("final", {})
    return {
        "status": str(outcome.status),
        "error": outcome.error,
        "steps": outcome.summary.get("steps"),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "val_acc": final.get("val_acc"),
        "val_loss": final.get("val_loss"),
        "skipped_steps": final.get("skipped_steps"),
        "clip_fraction": final.get("clip_fraction"),
        "seconds": round(time.perf_counter() - started, 2),
    }


def fp16_overflow_check(device: torch.device, data_root: Path) -> dict:
    spec = JobSpec.model_validate(
        {
            "model": {"name": "mlp"},
            "data": CLASSIFICATION,
            "optimizer": {"name": "adam"},
            "precision": "fp16",
        }
    )
    run = build_run(spec, data_root=data_root, device=device)
    x, y = next(run.data.epoch_batches())
    run.step(run, x, y)
    scale = run.precision.scaler.get_scale()
    before = [p.detach().clone() for p in run.net.parameters()]
    hook = run.params[0].register_hook(lambda g: torch.full_like(g, float("inf")))
    run.step(run, x, y)
    hook.remove()
    unchanged = all(torch.equal(p, b) for p, b in zip(run.net.parameters(), before, strict=True))
    return {
        "scale_before": scale,
        "scale_after": run.precision.scaler.get_scale(),
        "skipped": run.stats.skipped.item(),
        "weights_unchanged": unchanged,
        "passed": unchanged and run.precision.scaler.get_scale() == scale / 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/strategies_on_device.json"
    )
    options = parser.parse_args()
    device = torch.device(options.device)
    data_root = Path(tempfile.mkdtemp())
    rows = {}
    for label, spec in jobs().items():
        try:
            rows[label] = run_job(spec, device, data_root)
        except Exception as exc:  # noqa: BLE001 - report every failure, keep going
            rows[label] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        row = rows[label]
        fell = (
            row.get("last_loss") is not None
            and math.isfinite(row["last_loss"])
            and row["last_loss"] < row["first_loss"]
        )
        row["loss_fell"] = fell
        print(
            f"{label:48s} {row['status']:10s} loss {row.get('first_loss') or 0:8.4f} → "
            f"{row.get('last_loss') or 0:8.4f}  val_acc {row.get('val_acc')}  "
            f"skipped {row.get('skipped_steps')}  {row.get('seconds')} s  {row.get('error') or ''}"
        )
    overflow = fp16_overflow_check(device, data_root)
    print("fp16 injected inf:", overflow)
    record = {
        "command": "python benchmarks/strategies_on_device.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
        "torch": torch.__version__,
        "jobs": rows,
        "fp16_injected_inf": overflow,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {options.out}")


if __name__ == "__main__":
    main()
