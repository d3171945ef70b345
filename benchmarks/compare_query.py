"""GET /v1/compare for 10 jobs × 100,000 points each, downsampled to 500 points per series, on
PostgreSQL.

The points are written through the flush path (models.queries.record_progress, 10,000 points a
flush), which keeps the per-series summaries and rollups the query reads. Timed:
- `server`: the request through the ASGI app in this process (routing, auth off, the queries,
  downsampling, serialization; no network), the median of `--repeat` requests;
- `http`: the same request to a uvicorn process over localhost, as a client sees it;
- `raw`: for reference, the same downsampling from every metric row (what the rollups avoid).

    python benchmarks/compare_query.py [--jobs 10] [--points 100000] [--max-points 500]

Bar (issue 5): under 100 ms median server time.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._services import free_port, scratch_postgres, wait_until  # noqa: E402


def fill(jobs: int, points: int) -> list[str]:
    from models.db import session_scope
    from models.queries import claim_job, create_job, finish_job, record_progress
    from models.spec import JobSpec
    from models.tables import JobStatus

    spec = JobSpec.model_validate(
        {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}
    )
    rng = np.random.default_rng(0)
    ids = []
    for j in range(jobs):
        with session_scope() as session:
            job_id = create_job(session=session, spec=spec, submitted={}, owner="local").id
            claim = claim_job(session=session, job_id=job_id, worker="bench", lease_seconds=600)
        assert claim is not None
        steps = np.arange(1, points + 1)
        loss = np.exp(-steps / (points / 5)) * (1 + 0.1 * rng.normal(size=points)) + 0.01 * j
        for start in range(0, points, 10_000):
            chunk = [
                {"name": "train_loss", "step": int(s), "value": float(v), "epoch": s / 1000,
                 "wall_time": s / 50}
                for s, v in zip(steps[start : start + 10_000], loss[start : start + 10_000],
                                strict=True)
            ]  # fmt: skip
            with session_scope() as session:
                record_progress(
                    session=session,
                    job_id=job_id,
                    attempt=claim.attempt,
                    points=chunk,
                    step=int(chunk[-1]["step"]),
                    epoch=chunk[-1]["epoch"],
                    lease_seconds=600,
                )
        with session_scope() as session:
            finish_job(
                session=session, job_id=job_id, attempt=claim.attempt, status=JobStatus.succeeded
            )
        ids.append(job_id)
        print(f"  job {j + 1}/{jobs} written", flush=True)
    return ids


def time_server(path: str, repeat: int) -> list[float]:
    import httpx

    from api.main import create_app

    app = create_app()

    async def go() -> list[float]:
        times = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for i in range(repeat + 3):
                started = time.perf_counter()
                response = await client.get(path)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text
                if i >= 3:  # warm-up: connection pool, statement cache
                    times.append(elapsed)
        return times

    return asyncio.run(go())


def time_raw(ids: list[str], max_points: int, repeat: int) -> list[float]:
    from models.db import session_scope
    from models.series import read_series

    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        with session_scope() as session:
            read_series(
                session=session,
                job_ids=ids,
                names=["train_loss"],
                max_points=max_points,
                raw_limit=10**12,
            )
        times.append(time.perf_counter() - started)
    return times


def time_http(url: str, path: str, repeat: int) -> list[float]:
    import httpx

    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "DESCENT_AUTH": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port),
         "--http", "httptools", "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, what="API up")
        times = []
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(repeat + 3):
                started = time.perf_counter()
                response = client.get(path)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200
                if i >= 3:
                    times.append(elapsed)
        return times
    finally:
        server.terminate()
        server.wait(timeout=20)


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "median_ms": round(1000 * statistics.median(ordered), 1),
        "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 1),
        "min_ms": round(1000 * ordered[0], 1),
        "n": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--max-points", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/compare_query.json"))
    args = parser.parse_args()
    with scratch_postgres() as url:
        os.environ["DATABASE_URL"] = url
        os.environ["DESCENT_AUTH"] = "0"
        from models.migrate import upgrade

        upgrade(url)
        print(f"writing {args.jobs} jobs × {args.points:,} points", flush=True)
        started = time.perf_counter()
        ids = fill(args.jobs, args.points)
        written_s = time.perf_counter() - started
        path = f"/v1/compare?jobs={','.join(ids)}&metrics=train_loss&max_points={args.max_points}"
        server = summary(time_server(path, args.repeat))
        http = summary(time_http(url, path, args.repeat))
        raw = summary(time_raw(ids, args.max_points, max(3, args.repeat // 10)))
    print(f"server (in process): median {server['median_ms']} ms, p90 {server['p90_ms']} ms")
    print(f"http (uvicorn, localhost): median {http['median_ms']} ms, p90 {http['p90_ms']} ms")
    print(f"raw rows instead of rollups: median {raw['median_ms']} ms")
    report = {
        "benchmark": "compare_query",
        "bar": "GET /v1/compare, 10 jobs × 100,000 points → 500 points: median < 100 ms",
        "jobs": args.jobs,
        "points_per_job": args.points,
        "max_points": args.max_points,
        "database": "postgresql (local, default configuration)",
        "write_seconds": round(written_s, 1),
        "server": server,
        "http": http,
        "raw_rows_for_reference": raw,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
        },
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
