"""Pairs of jobs that differ in one strategy, on a net where that strategy should matter.

- orthogonal recurrence: a plain tanh RNN on the adding problem (length 100), its recurrent
  matrix unconstrained vs kept orthogonal (Cayley map); the mean guess scores MSE 0.167.
- clipping: an LSTM on the adding problem at a high rate, without vs with global-norm clipping.
- warmup: a tiny transformer on associative recall at a high rate, without vs with warmup.
- decay mode (000): Adam with coupled L2 vs AdamW's decoupled decay at the same λ.
- SAM: SGD vs SAM(SGD) on the seed CNN with MNIST's bundled subset.

Each job runs through the engine (the same `train` a worker calls) for each seed; the table
gives the final and best validation metric per arm.

    python benchmarks/where_it_matters.py [--device cuda] [--seeds 0 1] [--scale 1.0]
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.spec import JobSpec  # noqa: E402
from worker.engine import train  # noqa: E402
from worker.engine.sink import MemorySink  # noqa: E402

ADDING = {"name": "adding_problem", "args": {"n_samples": 20000, "length": 100}, "batch_size": 128}
RECALL = {
    "name": "associative_recall",
    "args": {"n_samples": 20000, "pairs": 8},
    "batch_size": 128,
}


def pairs(steps: int) -> dict[str, tuple[str, dict, dict]]:
    """name → (metric, arm A, arm B); arms are partial specs."""
    every = {"eval": {"every_steps": max(steps // 10, 1)}, "max_steps": steps}
    rnn = {"model": {"name": "rnn", "args": {"cell": "rnn", "hidden": 128}}, "data": ADDING}
    lstm = {"model": {"name": "rnn", "args": {"cell": "lstm", "hidden": 128}}, "data": ADDING}
    transformer = {
        "model": {"name": "transformer", "args": {"d_model": 64, "heads": 4, "layers": 2}},
        "data": RECALL,
        "optimizer": {"name": "adamw", "lr": 0.003},
    }
    mlp = {"model": {"name": "mlp", "args": {"hidden": [128]}}, "data": {"name": "digits"}}
    cnn = {
        "model": {"name": "seed_cnn"},
        "data": {"name": "mnist", "args": {"source": "bundled"}, "batch_size": 64},
    }
    return {
        "orthogonal recurrence (RNN, adding T=100)": (
            "val_loss",
            {**rnn, "optimizer": {"name": "rmsprop", "lr": 0.0005}, **every},
            {
                **rnn,
                "model": {
                    "name": "rnn",
                    "args": {"cell": "rnn", "hidden": 128, "orthogonal": "cayley"},
                },
                "optimizer": {"name": "rmsprop", "lr": 0.0005},
                **every,
            },
        ),
        "clipping (LSTM, adding T=100, lr 0.02)": (
            "val_loss",
            {**lstm, "optimizer": {"name": "adam", "lr": 0.02}, **every},
            {
                **lstm,
                "optimizer": {"name": "adam", "lr": 0.02},
                "clipping": {"mode": "norm", "max_norm": 1.0},
                **every,
            },
        ),
        "warmup (transformer, recall, lr 3e-3)": (
            "val_acc",
            {**transformer, "schedule": {"name": "cosine"}, **every},
            {**transformer, "schedule": {"name": "cosine", "warmup_steps": steps // 10}, **every},
        ),
        "decay mode (MLP, digits, λ 0.1)": (
            "val_acc",
            {
                **mlp,
                "optimizer": {"name": "adam", "lr": 0.003},
                "regularization": {"weight_decay": 0.1, "decay": "coupled"},
                **every,
            },
            {
                **mlp,
                "optimizer": {"name": "adamw", "lr": 0.003},
                "regularization": {"weight_decay": 0.1},
                **every,
            },
        ),
        "SAM (seed CNN, MNIST subset)": (
            "val_acc",
            {**cnn, "optimizer": {"name": "sgd", "lr": 0.05, "args": {"momentum": 0.9}}, **every},
            {
                **cnn,
                "optimizer": {
                    "name": "sgd",
                    "lr": 0.05,
                    "args": {"momentum": 0.9},
                    "sam": {"rho": 0.05},
                },
                **every,
            },
        ),
    }


def scaled(spec: dict, factor: float) -> dict:
    optimizer = spec["optimizer"]
    return {**spec, "optimizer": {**optimizer, "lr": optimizer["lr"] * factor}}


def run(spec: dict, seed: int, device: torch.device, data_root: Path) -> dict:
    sink = MemorySink(flush_seconds=3600)
    started = time.perf_counter()
    outcome = train(
        JobSpec.model_validate({**spec, "seed": seed}), sink, data_root=data_root, device=device
    )
    return {
        "status": str(outcome.status),
        "final": outcome.summary.get("final", {}),
        "best": outcome.summary.get("best", {}),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--only", nargs="*", default=[], help="run pairs whose name has this")
    parser.add_argument("--lr-scale", type=float, default=1.0, help="multiply every arm's lr")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/where_it_matters.json"
    )
    options = parser.parse_args()
    device = torch.device(options.device)
    data_root = Path(tempfile.mkdtemp())
    table = {}
    for name, (metric, arm_a, arm_b) in pairs(options.steps).items():
        if options.only and not any(word in name for word in options.only):
            continue
        arm_a, arm_b = (scaled(arm, options.lr_scale) for arm in (arm_a, arm_b))
        arms = {"A": [], "B": []}
        for seed in options.seeds:
            for label, arm in (("A", arm_a), ("B", arm_b)):
                arms[label].append(run(arm, seed, device, data_root))
        row = {"metric": metric, "arms": {"A": arm_a, "B": arm_b}, "runs": arms}
        for label in ("A", "B"):
            finals = [r["final"].get(metric, float("nan")) for r in arms[label]]
            row[f"{label}_final_median"] = statistics.median(finals)
            row[f"{label}_finals"] = finals
        table[name] = row
        print(
            f"{name:45s} {metric}: A {row['A_finals']}  B {row['B_finals']}  "
            f"({sum(r['seconds'] for r in arms['A'] + arms['B'])} s)"
        )
    record = {
        "command": "python benchmarks/where_it_matters.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
        "torch": torch.__version__,
        "steps": options.steps,
        "seeds": options.seeds,
        "pairs": table,
    }
    # runs accumulate: each invocation is kept under its command line
    existing = json.loads(options.out.read_text()) if options.out.exists() else {}
    runs = existing.get("runs", [existing] if existing else [])
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps({"runs": [*runs, record]}, indent=2) + "\n")
    print(f"written to {options.out}")


if __name__ == "__main__":
    main()
