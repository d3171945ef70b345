"""End to end on the real services: API process → Redis → Celery worker process → PostgreSQL."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery import Celery

from tests.conftest import (
    REDIS_URL,
    ROOT,
    SETTINGS_ENV,
    ServiceProcess,
    free_port,
    wait_for_http,
    wait_for_status,
)

pytestmark = [pytest.mark.e2e, pytest.mark.services]

QUICK = {
    "model": {"name": "mlp", "args": {"hidden": [16]}},
    "data": {"name": "digits"},
    "optimizer": {"name": "adam", "lr": 0.01},
    "max_steps": 30,
}
ENDLESS = {
    "model": {"name": "mlp"},
    "data": {"name": "synthetic_classification"},
    "optimizer": {"name": "sgd"},
    "max_steps": 10_000_000,
}


def create_test_key(database_url: str) -> str:
    from sqlalchemy.orm import Session

    from models.db import make_engine
    from models.keys import create_key

    engine = make_engine(database_url)
    with Session(engine) as session, session.begin():
        _, secret = create_key(session=session, owner="e2e")
    engine.dispose()
    return secret


@pytest.fixture(scope="module")
def stack(
    postgres_url: str, redis_queue: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    from models.migrate import upgrade

    logs = tmp_path_factory.mktemp("services")
    port = free_port()
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": REDIS_URL,
        "DESCENT_QUEUE": redis_queue,
        "DESCENT_DATA_DIR": str(logs / "data"),
        "DESCENT_FLUSH_SECONDS": "0.2",
    }
    upgrade(postgres_url)
    api_key = create_test_key(postgres_url)  # services mode: auth is on
    api = ServiceProcess(["serve", "--no-migrate", "--port", str(port)], env, logs / "api.log")
    worker = ServiceProcess(["worker"], env, logs / "worker.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        worker.wait_for_log(" ready.")
        auth = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=10) as http:
            yield {
                "http": http,
                "worker": worker,
                "queue": redis_queue,
                "url": f"http://127.0.0.1:{port}",
                "key": api_key,
            }
    finally:
        worker.stop()
        api.stop()


def test_submitted_job_trains_and_its_metrics_come_back(stack: dict) -> None:
    http = stack["http"]
    response = http.post("/v1/jobs", json={**QUICK, "name": "e2e"})
    assert response.status_code == 201
    job = wait_for_status(http, response.json()["id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["step"] == job["progress"]["total_steps"] == 30
    assert job["summary"]["steps"] == 30 and job["summary"]["device"] == "cpu"
    metrics = http.get(f"/v1/jobs/{job['id']}/metrics", params={"names": "train_loss,val_acc"})
    series = metrics.json()["series"]
    assert series["train_loss"]["steps"] == list(range(1, 31))
    assert series["val_acc"]["values"][-1] == job["summary"]["final"]["val_acc"]
    assert http.get("/readyz").json()["ready"] is True


def test_cancel_stops_a_running_job_and_keeps_its_metrics(stack: dict) -> None:
    http = stack["http"]
    job_id = http.post("/v1/jobs", json=ENDLESS).json()["id"]
    deadline = time.monotonic() + 60
    while http.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] == 0:
        assert time.monotonic() < deadline, "the job never reported progress"
        time.sleep(0.1)
    assert http.post(f"/v1/jobs/{job_id}/cancel").json()["cancel_requested"] is True
    job = wait_for_status(http, job_id, {"canceled"}, timeout=30)
    assert 0 < job["summary"]["steps"] < 10_000_000
    losses = http.get(f"/v1/jobs/{job_id}/metrics", params={"names": "train_loss"}).json()
    assert len(losses["series"]["train_loss"]["steps"]) == job["summary"]["steps"]


def test_failing_job_ends_failed_and_the_worker_keeps_serving(stack: dict) -> None:
    http = stack["http"]
    # Valid as a spec, impossible to train: the CNN needs images, these rows are vectors.
    broken = {**QUICK, "model": {"name": "seed_cnn"}, "data": {"name": "synthetic_regression"}}
    failed = wait_for_status(
        http, http.post("/v1/jobs", json=broken).json()["id"], {"failed", "succeeded"}
    )
    assert failed["status"] == "failed"
    assert failed["error"].startswith("ValueError: seed_cnn needs image input")
    after = wait_for_status(
        http, http.post("/v1/jobs", json=QUICK).json()["id"], {"succeeded", "failed"}
    )
    assert after["status"] == "succeeded"


def test_a_message_delivered_twice_runs_the_job_once(stack: dict) -> None:
    http = stack["http"]
    job_id = http.post("/v1/jobs", json=QUICK).json()["id"]
    duplicate = Celery(broker=REDIS_URL)
    duplicate.send_task("run_job", args=[job_id], task_id=job_id, queue=f"{stack['queue']}.any")
    job = wait_for_status(http, job_id, {"succeeded", "failed"})
    deadline = time.monotonic() + 30
    while f"job {job_id} is not claimable" not in stack["worker"].output():
        assert time.monotonic() < deadline, "the second delivery was never consumed"
        time.sleep(0.2)
    job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempt"] == 1
    steps = http.get(f"/v1/jobs/{job_id}/metrics", params={"names": "train_loss"}).json()
    assert steps["series"]["train_loss"]["steps"] == list(range(1, 31))


@pytest.mark.parametrize(
    ("spec", "exit_code", "status"),
    [
        (QUICK, 0, "succeeded"),
        (
            {**QUICK, "model": {"name": "seed_cnn"}, "data": {"name": "synthetic_regression"}},
            1,
            "failed",
        ),
    ],
    ids=["succeeds", "fails"],
)
def test_cli_submit_watch_follows_a_real_job_and_exits_by_its_status(
    stack: dict, tmp_path: Path, spec: dict, exit_code: int, status: str
) -> None:
    """`descent submit spec --watch` as a user types it: a separate process, the URL and key
    from the environment, the job trained by the real worker."""
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    env.update(DESCENT_URL=stack["url"], DESCENT_API_KEY=stack["key"])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "client.cli",
            "submit",
            str(spec_file),
            "--watch",
            "--timeout",
            "120",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == exit_code, done.stdout + done.stderr
    job_id = done.stdout.splitlines()[0].strip()
    job = stack["http"].get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == status
    assert f"job {job_id} {status}" in done.stderr
