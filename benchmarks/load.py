"""Load: many small jobs submitted by concurrent clients while a few workers run them.

`--clients` threads, each with its own HTTP connection, submit `--jobs` jobs between them as fast
as the API answers, on PostgreSQL + Redis with `--workers` worker processes. Reported: the POST
/v1/jobs round trip (p50, p99, max), the time from the first submit to the last job finished,
and the checks: every job `succeeded` (none lost), every job claimed once (`attempt` = 1, none
run twice), every job's `train_loss` series complete with each step once.

    python benchmarks/load.py [--jobs 500] [--clients 16] [--workers 2]

Results: benchmarks/results/load.json.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._services import (  # noqa: E402
    REDIS_URL,
    ROOT,
    free_port,
    percentile,
    scratch_postgres,
    start,
    stop,
    wait_until,
)

STEPS = 5
SPEC = {
    "model": {"name": "linear"},
    "data": {"name": "synthetic_regression", "args": {"n_samples": 128}},
    "optimizer": {"name": "sgd", "lr": 0.01},
    "max_steps": STEPS,
    "device": "cpu",
}


def submit_all(base_url: str, jobs: int, clients: int) -> tuple[list[str], list[float], list]:
    per_client = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]

    def client(index: int) -> list[tuple[str | None, float, int]]:
        results = []
        with httpx.Client(base_url=base_url, timeout=30) as http:
            for n in range(per_client[index]):
                t0 = time.perf_counter()
                response = http.post("/v1/jobs", json={**SPEC, "seed": index * 10_000 + n})
                elapsed = time.perf_counter() - t0
                job_id = response.json().get("id") if response.status_code == 201 else None
                results.append((job_id, elapsed, response.status_code))
        return results

    with ThreadPoolExecutor(clients) as pool:
        outcomes = [r for batch in pool.map(client, range(clients)) for r in batch]
    ids = [job_id for job_id, _, _ in outcomes if job_id]
    latencies = [elapsed for _, elapsed, _ in outcomes]
    errors = [code for _, _, code in outcomes if code != 201]
    return ids, latencies, errors


def ledger_counts(database: str, ids: list[str]) -> dict:
    from sqlalchemy import func, select

    from models.db import make_engine
    from models.tables import Job, Metric

    engine = make_engine(database)
    with engine.connect() as connection:
        jobs = connection.execute(
            select(
                Job.id, Job.status, Job.attempt, Job.restarts, Job.created_at, Job.finished_at
            ).where(Job.id.in_(ids))
        ).all()
        rows = dict(
            connection.execute(
                select(Metric.job_id, func.count())
                .where(Metric.job_id.in_(ids), Metric.name == "train_loss")
                .group_by(Metric.job_id)
            ).all()
        )
    engine.dispose()
    return {"jobs": jobs, "train_loss_rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    with scratch_postgres() as database, tempfile.TemporaryDirectory() as tmp:
        from models.migrate import upgrade

        upgrade(database)
        port = free_port()
        env = {
            "DATABASE_URL": database,
            "REDIS_URL": REDIS_URL,
            "DESCENT_QUEUE": f"descent-load-{uuid.uuid4().hex[:6]}",
            "DESCENT_DATA_DIR": tmp,
            "DESCENT_AUTH": "off",
            "DESCENT_REQUESTS_PER_MINUTE": "1000000",
            "DESCENT_MAX_ACTIVE_JOBS": "100000",
        }
        api = start(["serve", "--no-migrate", "--port", str(port)], env, Path(tmp) / "api.log")
        workers = [
            start(["worker", "--loglevel", "info"], env, Path(tmp) / f"worker-{i}.log")
            for i in range(args.workers)
        ]
        base_url = f"http://127.0.0.1:{port}"
        try:
            http = httpx.Client(base_url=base_url, timeout=10)
            wait_until(lambda: http.get("/readyz").status_code == 200, what="API ready")
            for i in range(args.workers):
                log = Path(tmp) / f"worker-{i}.log"
                wait_until(lambda log=log: " ready." in log.read_text(), what="worker ready")
            warm = http.post("/v1/jobs", json=SPEC).json()["id"]
            wait_until(
                lambda: http.get(f"/v1/jobs/{warm}").json()["status"] == "succeeded",
                what="warm-up job",
            )

            started = time.perf_counter()
            ids, latencies, errors = submit_all(base_url, args.jobs, args.clients)
            submitted_in = time.perf_counter() - started

            def all_finished() -> bool:
                jobs = ledger_counts(database, ids)["jobs"]
                return all(j.status not in ("queued", "running", "requeued") for j in jobs)

            wait_until(all_finished, timeout=args.timeout, what="every job finished")
            completed_in = time.perf_counter() - started
            ledger = ledger_counts(database, ids)
            duplicate_deliveries = sum(
                (Path(tmp) / f"worker-{i}.log").read_text().count("is not claimable")
                for i in range(args.workers)
            )
        finally:
            for worker in workers:
                stop(worker)
            stop(api)

    jobs = ledger["jobs"]
    statuses: dict[str, int] = {}
    for job in jobs:
        statuses[job.status] = statuses.get(job.status, 0) + 1
    ms = [x * 1000 for x in latencies]
    run_once = sum(1 for j in jobs if j.attempt == 1)
    complete = sum(1 for j in jobs if ledger["train_loss_rows"].get(j.id) == STEPS)
    report = {
        "benchmark": "load",
        "machine": f"{os.cpu_count()} CPUs",
        "jobs": args.jobs,
        "clients": args.clients,
        "workers": args.workers,
        "steps_per_job": STEPS,
        "submit_ms": {
            "p50": round(statistics.median(ms), 1),
            "p99": round(percentile(ms, 99), 1),
            "max": round(max(ms), 1),
        },
        "submit_errors": len(errors),
        "all_submitted_s": round(submitted_in, 2),
        "first_submit_to_last_finished_s": round(completed_in, 2),
        "jobs_per_s": round(len(ids) / completed_in, 2),
        "statuses": statuses,
        "lost": args.jobs - statuses.get("succeeded", 0),
        "claimed_once": run_once,
        "run_twice": len(jobs) - run_once,
        "complete_series": complete,
        "duplicate_deliveries_ignored": duplicate_deliveries,
    }
    print(json.dumps(report, indent=2))
    (ROOT / "benchmarks" / "results" / "load.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
