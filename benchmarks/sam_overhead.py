"""SAM's cost per step relative to its base optimizer, on 001's seed CNN with MNIST batches.

SAM takes two forward/backward passes per step (worker/engine/steps.py: `sam_step`), so the
expectation is about 2× the base optimizer's time per step. For each base optimizer (SGD with
momentum, Adam) this builds the run through the engine (build_run, the same step functions a
job uses), warms up, then times `run.step` over the same batches for the base and the SAM
(and ASAM) variant, alternating the variants in rounds so drift on a shared machine hits all of
them alike. On CUDA the timings bracket the steps with torch.cuda.synchronize().

    python benchmarks/sam_overhead.py [--device cpu|cuda] [--steps 100] [--rounds 5]

Results are merged into benchmarks/results/sam_overhead.json under the device's name.
"""

import argparse
import json
import os
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
from worker.engine.setup import build_run  # noqa: E402

BASES = {
    "sgd_momentum": {"name": "sgd", "lr": 0.01, "args": {"momentum": 0.9}},
    "adam": {"name": "adam", "lr": 0.001},
}
VARIANTS = {"base": None, "sam": {"rho": 0.05}, "asam": {"rho": 0.5, "adaptive": True}}


def spec_for(optimizer: dict, sam: dict | None, device: str, precision: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model": {"name": "seed_cnn"},
            "data": {"name": "mnist", "args": {"source": "bundled"}, "batch_size": 64},
            "optimizer": {**optimizer, **({"sam": sam} if sam else {})},
            "precision": precision,
            "device": device,
        }
    )


def time_steps(run, batches, steps: int, cuda: bool) -> float:  # type: ignore[no-untyped-def]
    """Seconds per step over `steps` steps."""
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        run.step(run, x, y)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def measure(device: str, steps: int, rounds: int, warmup: int, precision: str) -> dict:
    cuda = device == "cuda"
    data_root = Path(tempfile.mkdtemp())
    results = {}
    for base_name, optimizer in BASES.items():
        runs = {}
        for variant, sam in VARIANTS.items():
            torch.manual_seed(0)
            runs[variant] = build_run(
                spec_for(optimizer, sam, device, precision), data_root=data_root
            )
        batches = list(runs["base"].data.epoch_batches())[:50]
        for run in runs.values():
            time_steps(run, batches, warmup, cuda)
        per_round: dict[str, list[float]] = {v: [] for v in runs}
        for _ in range(rounds):
            for variant, run in runs.items():
                per_round[variant].append(time_steps(run, batches, steps, cuda))
        base_ms = [1000 * t for t in per_round["base"]]
        entry = {"base_ms_per_step": {"median": statistics.median(base_ms), "min": min(base_ms)}}
        for variant in ("sam", "asam"):
            ms = [1000 * t for t in per_round[variant]]
            ratios = [s / b for s, b in zip(per_round[variant], per_round["base"], strict=True)]
            entry[f"{variant}_ms_per_step"] = {"median": statistics.median(ms), "min": min(ms)}
            entry[f"{variant}_over_base"] = {
                "median": round(statistics.median(ratios), 3),
                "min": round(min(ratios), 3),
                "max": round(max(ratios), 3),
            }
        results[base_name] = entry
        sam, asam = entry["sam_over_base"]["median"], entry["asam_over_base"]["median"]
        print(
            f"{base_name:13s} base {entry['base_ms_per_step']['median']:8.3f} ms  "
            f"SAM {entry['sam_ms_per_step']['median']:8.3f} ms ({sam}×)  "
            f"ASAM {entry['asam_ms_per_step']['median']:8.3f} ms ({asam}×)"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=100, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sam_overhead.json")
    options = parser.parse_args()
    results = measure(
        options.device, options.steps, options.rounds, options.warmup, options.precision
    )
    key = f"{options.device}_{options.precision}"
    record = {
        "command": "python benchmarks/sam_overhead.py " + " ".join(sys.argv[1:]),
        "net": "seed_cnn (Conv2D 32×3×3 → MaxPool → Dropout → Dense), MNIST bundled, batch 64",
        "timed": f"{options.rounds} rounds × {options.steps} steps per variant, "
        f"after {options.warmup} warm-up steps",
        "device": torch.cuda.get_device_name()
        if options.device == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "results": results,
    }
    existing = json.loads(options.out.read_text()) if options.out.exists() else {}
    existing[key] = record
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"written to {options.out} under {key!r}")


if __name__ == "__main__":
    main()
