"""Submit → running latency on Redis + PostgreSQL with an idle worker.

The latency of one job is `started_at − created_at`, both stamped by the service itself: the API
when it inserts the row, the worker when its conditional UPDATE claims it. In between: the commit,
the Celery publish to Redis, the worker's receive, and the claim. Jobs are submitted one at a
time, each after the previous finished, so the worker is idle at every submit. Also reported:
the POST /v1/jobs round trip as a client sees it.

    python benchmarks/submit_latency.py [--jobs 100]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
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

SPEC = {
    "model": {"name": "linear"},
    "data": {"name": "synthetic_regression", "args": {"n_samples": 64}},
    "optimizer": {"name": "sgd"},
    "max_steps": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    with scratch_postgres() as database, tempfile.TemporaryDirectory() as tmp:
        from models.migrate import upgrade

        upgrade(database)
        port = free_port()
        env = {
            "DATABASE_URL": database,
            "REDIS_URL": REDIS_URL,
            "DESCENT_QUEUE": f"descent-bench-{uuid.uuid4().hex[:6]}",
            "DESCENT_DATA_DIR": tmp,
            "DESCENT_AUTH": "off",
        }
        api = start(["serve", "--no-migrate", "--port", str(port)], env, Path(tmp) / "api.log")
        worker = start(["worker", "--loglevel", "warning"], env, Path(tmp) / "worker.log")
        try:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            wait_until(lambda: http.get("/readyz").status_code == 200, what="API ready")
            # Warm the worker (first data load, first claim) and wait until it is idle again.
            warm = http.post("/v1/jobs", json=SPEC).json()
            wait_until(
                lambda: http.get(f"/v1/jobs/{warm['id']}").json()["status"] == "succeeded",
                what="warm-up job finished",
            )
            time.sleep(1)
            latencies, posts = [], []
            for _ in range(args.jobs):
                t0 = time.perf_counter()
                job = http.post("/v1/jobs", json=SPEC).json()
                posts.append(time.perf_counter() - t0)
                wait_until(
                    lambda job=job: (
                        http.get(f"/v1/jobs/{job['id']}").json()["status"]
                        in ("succeeded", "failed")
                    ),
                    timeout=30,
                    what="job finished",
                )
                done = http.get(f"/v1/jobs/{job['id']}").json()
                created = datetime.fromisoformat(done["created_at"])
                started = datetime.fromisoformat(done["started_at"])
                latencies.append((started - created).total_seconds())
        finally:
            stop(worker)
            stop(api)
    ms = [x * 1000 for x in latencies]
    report = {
        "benchmark": "submit_latency",
        "jobs": args.jobs,
        "broker": "redis",
        "database": "postgresql",
        "submit_to_running_ms": {
            "median": round(statistics.median(ms), 2),
            "p99": round(percentile(ms, 99), 2),
            "max": round(max(ms), 2),
        },
        "slowest_jobs": sorted(((round(v, 1), i) for i, v in enumerate(ms)), reverse=True)[:3],
        "post_round_trip_ms": {
            "median": round(statistics.median(posts) * 1000, 2),
            "p99": round(percentile([p * 1000 for p in posts], 99), 2),
        },
    }
    print(json.dumps(report, indent=2))
    (ROOT / "benchmarks" / "results" / "submit_latency.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
