"""GET /v1/jobs/{id} under 16 concurrent keep-alive clients, on PostgreSQL + Redis (services
mode: every request is authenticated with an API key and passes the Redis rate limiter; an API
process reads a key's row at most every models.keys.KEY_CACHE_SECONDS).

The API is what ships: `descent serve --processes K` (`--processes` here, default 2), K uvicorn
processes on one socket under uvicorn's supervisor, with the access log off as docker-compose
runs it (DESCENT_ACCESS_LOG=false; `--access-log` turns it on: 908 instead of 1,109 req/s here).
uvicorn#3149 (no TCP_NODELAY on the sockets of `--workers`, so a response written in two sends
waits for the client's delayed ACK) did not show here: one keep-alive client reads a job in
1.6 ms and a 136 KB response in 7 ms with K = 2, the same as through a socket with TCP_NODELAY.

The load generator runs in this process, the server in another: 16 asyncio connections, each
sending the next request as soon as the last answer arrived, for `--seconds` after a warm-up.

    python benchmarks/job_read_load.py [--processes 2] [--seconds 10] [--clients 16] [--repeat 5]

Bar (issue 5): at least 500 requests/s with p99 under 50 ms.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._services import REDIS_URL, free_port, percentile, scratch_postgres  # noqa: E402


async def _client(
    host: str, port: int, path: str, headers: str, deadline: float, out: list, errors: list
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode()
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        out.append(time.perf_counter() - started)
        if not head.startswith(b"HTTP/1.1 200"):
            errors.append(head.split(b"\r\n", 1)[0].decode())
    writer.close()


def load(port: int, path: str, key: str, clients: int, seconds: float, warmup: float) -> dict:
    headers = f"Authorization: Bearer {key}\r\n"

    async def phase(duration: float) -> tuple[list, list, float]:
        out: list[float] = []
        errors: list[str] = []
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(
            *(
                _client("127.0.0.1", port, path, headers, deadline, out, errors)
                for _ in range(clients)
            )
        )
        return out, errors, time.perf_counter() - started

    asyncio.run(phase(warmup))
    latencies, errors, elapsed = asyncio.run(phase(seconds))
    return {
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * percentile(latencies, 50), 2),
        "p99_ms": round(1000 * percentile(latencies, 99), 2),
        "max_ms": round(1000 * max(latencies), 2),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def wait_ready(port: int, path: str, key: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(
                    f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"}
                ).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the API did not answer")


def setup(url: str) -> tuple[str, str]:
    """A finished job with a realistic summary, and a key with no practical rate limit."""
    os.environ["DATABASE_URL"] = url
    from models.db import session_scope
    from models.keys import create_key
    from models.migrate import upgrade
    from models.queries import claim_job, create_job, finish_job
    from models.spec import JobSpec
    from models.tables import JobStatus

    upgrade(url)
    spec = JobSpec.model_validate(
        {
            "name": "read-load",
            "tags": {"bench": "read"},
            "model": {"name": "seed_cnn"},
            "data": {"name": "mnist", "batch_size": 64},
            "optimizer": {"name": "adam", "lr": 0.001},
            "epochs": 10,
        }
    )
    summary = {
        "final": {"train_loss": 0.031, "val_loss": 0.042, "val_acc": 0.9891, "lr": 0.001},
        "best": {"train_loss": 0.02, "val_loss": 0.04, "val_acc": 0.99},
        "best_step": {"train_loss": 6200, "val_loss": 5000, "val_acc": 5600},
        "steps": 6250,
        "epochs": 10.0,
        "wall_time_s": 212.4,
        "device": "cpu",
    }
    with session_scope() as session:
        job_id = create_job(session=session, spec=spec, submitted={}, owner="bench").id
        claim = claim_job(session=session, job_id=job_id, worker="bench", lease_seconds=60)
        assert claim is not None
        finish_job(
            session=session,
            job_id=job_id,
            attempt=claim.attempt,
            status=JobStatus.succeeded,
            summary=summary,
        )
        _, key = create_key(session=session, owner="bench", requests_per_minute=100_000_000)
    return job_id, key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--access-log", action="store_true", help="a log line per request")
    parser.add_argument("--repeat", type=int, default=5, help="measurements on one server")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/job_read_load.json"))
    args = parser.parse_args()
    with scratch_postgres() as url:
        job_id, key = setup(url)
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "DESCENT_QUEUE": f"bench-{port}",
            "DESCENT_ACCESS_LOG": "true" if args.access_log else "false",
        }
        command = [
            sys.executable, "-m", "client.cli", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--processes", str(args.processes),
        ]  # fmt: skip
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True
        )
        path = f"/v1/jobs/{job_id}"
        try:
            wait_ready(port, path, key)
            runs = []
            for _ in range(args.repeat):
                runs.append(load(port, path, key, args.clients, args.seconds, args.warmup))
                print(
                    f"  {runs[-1]['requests_per_second']:,} req/s, p99 {runs[-1]['p99_ms']} ms",
                    file=sys.stderr,
                )
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=20)
    mode = "descent serve"
    # The median run by throughput, and the range over the runs: the machine is shared with
    # the load generator, PostgreSQL and Redis, and single runs vary by a third.
    result = sorted(runs, key=lambda r: r["requests_per_second"])[len(runs) // 2]
    spread = {
        "requests_per_second": [min(r["requests_per_second"] for r in runs),
                                max(r["requests_per_second"] for r in runs)],
        "p99_ms": [min(r["p99_ms"] for r in runs), max(r["p99_ms"] for r in runs)],
        "p99_ms_median": statistics.median(r["p99_ms"] for r in runs),
    }  # fmt: skip
    print(
        f"{args.processes} API processes ({mode}), {args.clients} clients, median of "
        f"{len(runs)} runs: {result['requests_per_second']:,} req/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms (runs: {spread['requests_per_second'][0]:,}–"
        f"{spread['requests_per_second'][1]:,} req/s, p99 {spread['p99_ms'][0]}–"
        f"{spread['p99_ms'][1]} ms), errors {sum(r['errors'] for r in runs)}"
    )
    report = {
        "benchmark": "job_read_load",
        "bar": ">= 500 requests/s and p99 < 50 ms, 16 concurrent clients",
        "request": "GET /v1/jobs/{id} with an API key (checked on every request; its row read "
        "at most every KEY_CACHE_SECONDS) and the Redis rate limiter, PostgreSQL",
        "server": {
            "processes": args.processes,
            "mode": mode,
            "http": "httptools",
            "access_log": args.access_log,
        },
        "command": " ".join(["python", *command[1:]]),
        "clients": args.clients,
        "seconds": args.seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "result": result,
        "runs": {"n": len(runs), **spread, "all": runs},
    }
    out = Path(args.out)
    runs = json.loads(out.read_text())["runs"] if out.exists() else []
    runs = [r for r in runs if r.get("server") != report["server"]] + [report]
    out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
