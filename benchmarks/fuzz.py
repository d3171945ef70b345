"""Fuzz the live API with schemathesis: every operation, every check, every phase.

The API runs as in services mode (PostgreSQL + Redis, auth on), with no worker: submitted jobs
stay queued. Two user keys, `alice` and `bob`, are handed to schemathesis as a Web Fuzzing
Commons auth document with both as peers, so beside the response checks (no 5xx, status codes,
content types, response schemas and headers, positive/negative data, unsupported methods,
ignored auth) it also runs `object_level_authorization`: one user reading what another created.
The stateful phase follows the links between operations (a submitted job's id into its reads).

tests/api/schemathesis.toml holds the two documented exceptions (422 for schema-valid input
on POST /v1/jobs and GET /v1/jobs). The result, with the number of cases and failures, lands in
benchmarks/results/fuzz.json.

    python benchmarks/fuzz.py [--max-examples 100] [--phases examples,coverage,fuzzing,stateful]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._services import REDIS_URL, free_port, scratch_postgres, start, stop, wait_until  # noqa: E402

CONFIG = ROOT / "tests" / "api" / "schemathesis.toml"
RESULT = ROOT / "benchmarks" / "results" / "fuzz.json"


def make_keys(database_url: str) -> dict[str, str]:
    from sqlalchemy.orm import Session

    from models.db import make_engine
    from models.keys import create_key

    engine = make_engine(database_url)
    secrets = {}
    with Session(engine) as session, session.begin():
        for owner in ("alice", "bob"):
            # limits out of the fuzzer's way: tests/api/test_auth.py checks the limits
            _, secrets[owner] = create_key(
                session=session, owner=owner, requests_per_minute=10**6, max_active_jobs=10**6
            )
    engine.dispose()
    return secrets


def seed_objects(base: str, secret: str, database_url: str) -> dict[str, list[str]]:
    """Things for the fuzzer to find, owned by alice: a queued job, a finished job with metrics,
    and a study. Their ids are offered for half of the generated path ids, so the reads, the
    cancels and bob's attempts on alice's objects reach real rows, not only 404s."""
    from sqlalchemy.orm import Session

    from models.db import make_engine
    from models.queries import claim_job, finish_job, record_progress
    from models.tables import JobStatus

    headers = {"Authorization": f"Bearer {secret}"}
    spec = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        jobs = [http.post("/v1/jobs", json=spec).json()["id"] for _ in range(2)]
        study = http.post(
            "/v1/studies",
            json={
                "base": spec,
                "space": {"optimizer.lr": [0.1]},
                "objective": {"metric": "val_acc"},
            },
        ).json()["id"]
    engine = make_engine(database_url)
    with Session(engine) as session, session.begin():
        claim = claim_job(session=session, job_id=jobs[1], worker="fuzz", lease_seconds=600)
        assert claim is not None
        points = [
            {"name": name, "step": step, "value": 1 / step, "epoch": step / 10, "wall_time": step}
            for name in ("train_loss", "val_acc")
            for step in range(1, 21)
        ]
        record_progress(
            session=session,
            job_id=jobs[1],
            attempt=claim.attempt,
            points=points,
            step=20,
            epoch=2.0,
            lease_seconds=600,
        )
        finish_job(
            session=session, job_id=jobs[1], attempt=claim.attempt, status=JobStatus.succeeded
        )
    engine.dispose()
    return {"jobs": jobs, "studies": [study]}


def write_auth(folder: Path, secrets: dict[str, str], seeded: dict[str, list[str]]) -> Path:
    wfc = {
        "schemaVersion": "0.1.0",
        "auth": [
            {
                "name": owner,
                "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {secret}"}],
            }
            for owner, secret in secrets.items()
        ],
    }
    auth_file = folder / "auth.json"
    auth_file.write_text(json.dumps(wfc))
    config = folder / "schemathesis.toml"
    config.write_text(
        CONFIG.read_text()
        + f'\n[auth.wfc]\npath = "{auth_file}"\npeers = {json.dumps(list(secrets))}\n'
        + f"\n[dictionaries.jobs]\nvalues = {json.dumps(seeded['jobs'])}\n"
        + f"\n[dictionaries.studies]\nvalues = {json.dumps(seeded['studies'])}\n"
        + '\n[parameters]\n"path.job_id" = { dictionary = "jobs", probability = 0.5 }\n'
        + '"path.study_id" = { dictionary = "studies", probability = 0.5 }\n'
        + '"query.jobs" = { dictionary = "jobs", probability = 0.5 }\n'
    )
    return config


def summarize(report: dict) -> dict:
    """The figures of schemathesis's JSON run report."""
    return {key: report[key] for key in report if key not in ("operations", "failures")} | {
        "failures": report.get("failures", []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()

    from models.migrate import upgrade

    with tempfile.TemporaryDirectory() as tmp, scratch_postgres() as database_url:
        folder = Path(tmp)
        prefix = f"descent-fuzz-{uuid.uuid4().hex[:8]}"
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "DESCENT_QUEUE": prefix,
            "DESCENT_DATA_DIR": str(folder / "data"),
        }
        upgrade(database_url)
        secrets = make_keys(database_url)
        port = free_port()
        api = start(["serve", "--no-migrate", "--port", str(port)], env, folder / "api.log")
        base = f"http://127.0.0.1:{port}"
        report_path = folder / "report.json"
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            "(written once the API is up)",
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--phases",
            args.phases,
            "--max-examples",
            str(args.max_examples),
            "--workers",
            args.workers,
            "--seed",
            str(args.seed),
            "--report",
            "json",
            "--report-json-path",
            str(report_path),
            "--no-color",
        ]
        try:
            wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, what="the API")
            seeded = seed_objects(base, secrets["alice"], database_url)
            config = write_auth(folder, secrets, seeded)
            command[2] = str(config)
            started = time.monotonic()
            run = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds = time.monotonic() - started
        finally:
            stop(api)
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"*{prefix}*"):
                client.delete(key)
        server_errors = (folder / "api.log").read_text().count("Traceback")
        tail = run.stdout[-6000:]
        report = json.loads(report_path.read_text()) if report_path.exists() else {}

    result = {
        "benchmark": "fuzz",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "schemathesis": subprocess.run(
            [command[0], "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "stack": "API process on PostgreSQL + Redis, auth on, no worker",
        "settings": {
            "max_examples": args.max_examples,
            "phases": args.phases,
            "workers": args.workers,
            "seed": args.seed,
            "checks": "all",
            "identities": ["alice", "bob"],
            "seeded": "alice: a queued job, a succeeded job with metrics, a study; their ids "
            "offered for half of the generated path ids",
        },
        "exit_code": run.returncode,
        "seconds": round(seconds, 1),
        "server_tracebacks": server_errors,
        "report": summarize(report) if report else None,
        "output_tail": tail,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(tail)
    print(f"exit code {run.returncode}, {seconds:.0f} s, server tracebacks: {server_errors}")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
