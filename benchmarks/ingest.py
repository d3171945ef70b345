"""Metric ingestion into PostgreSQL through the engine's flusher (worker/engine/sink.py's
DatabaseSink → models.queries.record_progress → models.series.write_points).

A job is claimed in a scratch database; each step logs what the training loop logs (train_loss
and grad_norm as 0-d tensors, lr as a float: 3 points per step) and the sink flushes every K
steps. The rate counts the flush only (reading the tensors back, tracking the summary, the
transaction with the COPY, the summaries and the rollups), not the logging calls. At the end the
stored rows are counted and the summaries checked.

    python benchmarks/ingest.py [--points 600000] [--flush-points 3000,30000,90000]

Bar (issue 5): at least 100,000 points/s.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._services import scratch_postgres  # noqa: E402


def run(url: str, total_points: int, flush_points: int) -> dict:
    import torch
    from sqlalchemy import func, select

    from models.db import session_scope
    from models.queries import claim_job, create_job
    from models.spec import JobSpec
    from models.tables import Metric, MetricSummary
    from worker.engine.sink import DatabaseSink

    spec = JobSpec.model_validate(
        {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}
    )
    with session_scope() as session:
        job_id = create_job(session=session, spec=spec, submitted={}, owner="bench").id
        claim = claim_job(session=session, job_id=job_id, worker="bench", lease_seconds=600)
    assert claim is not None
    sink = DatabaseSink(flush_seconds=1e9, job_id=job_id, attempt=claim.attempt, lease_seconds=600)
    steps, per_flush = total_points // 3, flush_points // 3
    flush_times = []
    for step in range(1, steps + 1):
        sink.log("train_loss", step, torch.rand(()), step / 100)
        sink.log("lr", step, 0.001, step / 100)
        sink.log("grad_norm", step, torch.rand(()), step / 100)
        if step % per_flush == 0 or step == steps:
            started = time.perf_counter()
            sink.flush(step, step / 100)
            flush_times.append(time.perf_counter() - started)
    with session_scope() as session:
        stored = session.scalar(select(func.count()).where(Metric.job_id == job_id))
        counts = dict(
            session.execute(
                select(MetricSummary.name, MetricSummary.count).where(
                    MetricSummary.job_id == job_id
                )
            ).all()
        )
    assert stored == 3 * steps, (stored, 3 * steps)
    assert counts == {"train_loss": steps, "lr": steps, "grad_norm": steps}, counts
    seconds = sum(flush_times)
    rates = [3 * per_flush / t for t in flush_times[:-1]] or [3 * steps / seconds]
    return {
        "points": 3 * steps,
        "points_per_flush": 3 * per_flush,
        "flushes": len(flush_times),
        "flush_seconds_total": round(seconds, 3),
        "points_per_second": round(3 * steps / seconds),
        "median_flush_points_per_second": round(statistics.median(rates)),
        "median_flush_ms": round(1000 * statistics.median(flush_times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=600_000)
    parser.add_argument("--flush-points", default="3000,30000,90000")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/ingest.json"))
    args = parser.parse_args()
    results = []
    with scratch_postgres() as url:
        os.environ["DATABASE_URL"] = url
        from models.migrate import upgrade

        upgrade(url)
        for flush_points in (int(x) for x in args.flush_points.split(",")):
            result = run(url, args.points, flush_points)
            results.append(result)
            print(
                f"{result['points_per_flush']:>7,} points/flush: "
                f"{result['points_per_second']:>9,} points/s "
                f"(median flush {result['median_flush_ms']} ms)",
                flush=True,
            )
    report = {
        "benchmark": "ingest",
        "bar": ">= 100,000 points/s into PostgreSQL via the engine's flusher",
        "database": "postgresql (local, default configuration)",
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
