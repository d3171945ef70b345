"""A real study end to end: API process → Redis → one Celery worker process (which both drives
the study and runs its trial jobs) → PostgreSQL. Then the worker is killed mid-study and a new
one carries the sampler on."""

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
from scipy import stats as scipy_stats

from tests.conftest import REDIS_URL, ServiceProcess, free_port, wait_for_http
from tests.e2e.test_services import create_test_key

pytestmark = [pytest.mark.e2e, pytest.mark.services]

TINY = {
    "model": {"name": "mlp", "args": {"hidden": [8]}},
    "data": {"name": "digits"},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "max_steps": 20,
}


@pytest.fixture(scope="module")
def stack(
    postgres_url: str, redis_queue: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    from models.migrate import upgrade

    logs = tmp_path_factory.mktemp("study")
    port = free_port()
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": REDIS_URL,
        "DESCENT_QUEUE": redis_queue,
        "DESCENT_DATA_DIR": str(logs / "data"),
        "DESCENT_FLUSH_SECONDS": "0.2",
        "DESCENT_STUDY_POLL_SECONDS": "0.3",
        # A killed worker's job is requeued by the next worker's reaper within seconds.
        "DESCENT_LEASE_SECONDS": "3",
        "DESCENT_REAP_SECONDS": "1",
    }
    upgrade(postgres_url)
    api_key = create_test_key(postgres_url)
    api = ServiceProcess(["serve", "--no-migrate", "--port", str(port)], env, logs / "api.log")
    workers = [ServiceProcess(["worker"], env, logs / "worker-0.log")]
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        workers[0].wait_for_log(" ready.")
        auth = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=10) as http:
            yield {"http": http, "workers": workers, "env": env, "logs": logs}
    finally:
        for worker in workers:
            worker.stop()
        api.stop()


def wait_for_study(http: httpx.Client, study_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    study: dict = {}
    while time.monotonic() < deadline:
        study = http.get(f"/v1/studies/{study_id}").json()
        if study["status"] != "running":
            return study
        time.sleep(0.3)
    raise AssertionError(f"study {study_id} still running: {study.get('summary')}")


def test_grid_over_three_seeds_summarizes_what_the_jobs_measured(stack: dict) -> None:
    http = stack["http"]
    body = {
        "name": "e2e grid",
        "base": TINY,
        "space": {"optimizer.lr": [0.02, 0.2]},
        "seeds": 3,
        "objective": {"metric": "val_acc", "target": 0.3},
    }
    created = http.post("/v1/studies", json=body)
    assert created.status_code == 201, created.text
    study = wait_for_study(http, created.json()["id"])
    assert study["status"] == "succeeded", study["error"]
    summary = study["summary"]
    assert summary["configurations"] == 2 and summary["jobs"] == 6
    assert summary["jobs_by_status"] == {"succeeded": 6}
    for row in summary["rows"]:
        finals = [
            http.get(f"/v1/jobs/{job_id}").json()["summary"]["final"]["val_acc"]
            for job_id in row["job_ids"]
        ]
        assert row["n"] == 3 and row["values"] == finals
        assert row["mean"] == pytest.approx(sum(finals) / 3)
        if len(set(finals)) > 1:
            low, high = scipy_stats.t.interval(
                0.95, 2, loc=sum(finals) / 3, scale=scipy_stats.sem(finals)
            )
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
        specs = [http.get(f"/v1/jobs/{j}").json()["spec"] for j in row["job_ids"]]
        assert sorted(s["seed"] for s in specs) == [0, 1, 2]
        assert {s["optimizer"]["lr"] for s in specs} == {row["config"]["optimizer.lr"]}
    means = [row["mean"] for row in summary["rows"]]
    assert means == sorted(means, reverse=True) and summary["rows"][0]["rank"] == 1
    table = http.get(f"/v1/studies/{study['id']}", params={"format": "markdown"}).text
    assert "| 1 | lr=" in table
    board = http.get("/v1/leaderboard", params={"study": study["id"], "at": "final"}).json()
    assert board["count"] == 6 and board["data"][0]["value"] == max(
        v for row in summary["rows"] for v in row["values"]
    )


def test_the_sampler_carries_on_after_its_worker_is_killed(stack: dict) -> None:
    http, workers = stack["http"], stack["workers"]
    body = {
        "name": "e2e restart",
        "base": {**TINY, "max_steps": 40},
        "space": {"optimizer.lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True}},
        "sampler": {"name": "tpe", "seed": 3, "args": {"n_startup_trials": 2}},
        "budget": 3,
        "max_concurrent": 1,
        "objective": {"metric": "val_acc"},
    }
    study_id = http.post("/v1/studies", json=body).json()["id"]
    deadline = time.monotonic() + 60
    while True:
        summary = http.get(f"/v1/studies/{study_id}").json()["summary"]
        if summary["configurations"] >= 2:  # the first finished, the second asked
            break
        assert time.monotonic() < deadline, summary
        time.sleep(0.2)
    before = {row["number"]: (row["job_ids"], row["config"]) for row in summary["rows"]}
    os.killpg(workers[0].process.pid, signal.SIGKILL)  # the driver dies without a word
    workers[0].process.wait()
    replacement = ServiceProcess(["worker"], stack["env"], stack["logs"] / "worker-1.log")
    workers.append(replacement)
    replacement.wait_for_log("resumed the drivers of 1 running studies")
    study = wait_for_study(http, study_id)
    assert study["status"] == "succeeded", study["error"]
    rows = {row["number"]: row for row in study["summary"]["rows"]}
    assert sorted(rows) == [0, 1, 2]
    for number, (job_ids, config) in before.items():  # what was asked before stays as it was
        assert rows[number]["job_ids"] == job_ids and rows[number]["config"] == config
    rates = [row["config"]["optimizer.lr"] for row in rows.values()]
    assert len(set(rates)) == 3 and all(0.01 <= lr <= 0.5 for lr in rates)
    assert study["summary"]["jobs"] == 3
    assert study["summary"]["jobs_by_status"] == {"succeeded": 3}
