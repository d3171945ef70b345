"""Engine overhead: the seed_cnn job through the engine (metrics logged to the database) vs a
plain hand-written PyTorch loop doing the same work.

Each measurement is its own subprocess, so peak RSS (ru_maxrss) is per run; engine and plain runs
alternate, and the reported time ratio is the median over pairs. Data loading happens before the
clock starts in both (the engine's loader is cached per process, so the timed `train` call finds
it loaded). Both runs include building the net and optimizer, the training steps, and one final
evaluation on the validation split.

    python benchmarks/engine_overhead.py [--pairs 7] [--steps 300] [--database URL]
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = {
    "name": "engine-overhead",
    "model": {"name": "seed_cnn"},
    "data": {"name": "mnist", "args": {"source": "bundled"}, "batch_size": 64},
    "optimizer": {"name": "adam", "lr": 0.001},
    "device": "cpu",
    "eval": {"every_steps": 10_000_000},
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_plain(steps: int, data_root: Path) -> float:
    import torch
    from torch import nn

    from models.spec import JobSpec
    from worker.datasets import load_data

    spec = JobSpec.model_validate({**SPEC, "max_steps": steps})
    bundle = load_data(spec.data, seed=0, data_root=data_root)
    started = time.perf_counter()
    torch.manual_seed(0)
    x, y = bundle.x_train, bundle.y_train
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(32 * 13 * 13, 10),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=0.001)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    losses = []
    step = 0
    while step < steps:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(order), 64):
            index = order[start : start + 64]
            loss = loss_fn(net(x[index]), y[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            step += 1
            if step == steps:
                break
    net.eval()
    with torch.no_grad():
        val_loss = loss_fn(net(bundle.x_val), bundle.y_val)
    print(
        f"plain: last loss {losses[-1].item():.4f}, val loss {val_loss.item():.4f}", file=sys.stderr
    )
    return time.perf_counter() - started


def run_engine(steps: int, data_root: Path, database_url: str) -> float:
    os.environ["DATABASE_URL"] = database_url
    import torch

    from models.db import session_scope
    from models.migrate import upgrade
    from models.queries import claim_job, create_job
    from models.spec import JobSpec
    from worker.datasets import load_data
    from worker.engine import train
    from worker.engine.sink import DatabaseSink

    upgrade()
    spec = JobSpec.model_validate({**SPEC, "max_steps": steps})
    load_data(spec.data, seed=0, data_root=data_root)  # cached: the timed run finds it loaded
    with session_scope() as session:
        job_id = create_job(session=session, spec=spec, submitted=SPEC, owner="bench").id
    with session_scope() as session:
        claim = claim_job(session=session, job_id=job_id, worker="bench", lease_seconds=600)
    sink = DatabaseSink(flush_seconds=1.0, job_id=job_id, attempt=claim.attempt)
    started = time.perf_counter()
    outcome = train(spec, sink, data_root=data_root, device=torch.device("cpu"))
    elapsed = time.perf_counter() - started
    assert outcome.status == "succeeded", outcome
    print(f"engine: {outcome.summary['final']}", file=sys.stderr)
    return elapsed


def child(mode: str, steps: int, database_url: str) -> None:
    data_root = Path(tempfile.gettempdir()) / "descent-bench-data"
    seconds = (
        run_engine(steps, data_root, database_url)
        if mode == "engine"
        else run_plain(steps, data_root)
    )
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def measure(mode: str, steps: int, database_url: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--steps",
            str(steps),
            "--database",
            database_url,
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--database", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--child", choices=["engine", "plain"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.database)
        return
    with tempfile.TemporaryDirectory() as tmp:
        database = args.database or f"sqlite:///{tmp}/bench.db"
        runs: list[tuple[dict, dict]] = []
        for pair in range(args.pairs):
            order = ("engine", "plain") if pair % 2 == 0 else ("plain", "engine")
            results = {mode: measure(mode, args.steps, database) for mode in order}
            runs.append((results["engine"], results["plain"]))
            print(
                f"pair {pair}: engine {results['engine']['seconds']:.3f}s "
                f"plain {results['plain']['seconds']:.3f}s",
                file=sys.stderr,
            )
    ratios = [e["seconds"] / p["seconds"] for e, p in runs]
    report = {
        "benchmark": "engine_overhead",
        "steps": args.steps,
        "pairs": args.pairs,
        "database": "postgresql" if args.database and "postgres" in args.database else "sqlite",
        "median_time_ratio": round(statistics.median(ratios), 4),
        "time_ratios": [round(r, 4) for r in ratios],
        "engine_seconds_median": round(statistics.median(e["seconds"] for e, _ in runs), 3),
        "plain_seconds_median": round(statistics.median(p["seconds"] for _, p in runs), 3),
        "engine_peak_rss_mb": round(statistics.median(e["peak_rss_mb"] for e, _ in runs), 1),
        "plain_peak_rss_mb": round(statistics.median(p["peak_rss_mb"] for _, p in runs), 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU",
    }
    report["rss_ratio"] = round(report["engine_peak_rss_mb"] / report["plain_peak_rss_mb"], 3)
    print(json.dumps(report, indent=2))
    out = ROOT / "benchmarks" / "results" / f"engine_overhead_{report['database']}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
