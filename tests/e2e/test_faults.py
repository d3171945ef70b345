"""Workers dying and stalling on the real services (API + Redis + PostgreSQL + two worker
processes), with a lease of 2 s so that recovery takes seconds:

- SIGKILL the worker running a job: the job is requeued by the other worker's reaper, resumes
  there from its last checkpoint (not from step 0), and ends succeeded with every step written
  once and the same values as an uninterrupted run.
- SIGSTOP the worker running a job until its lease runs out, then SIGCONT it: the job has moved
  to the other worker (attempt 2); the woken worker is fenced off, stops, writes nothing more,
  and goes on serving.
"""

import os
import re
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import torch

from models.spec import JobSpec
from tests.conftest import REDIS_URL, ServiceProcess, free_port, wait_for_http, wait_for_status
from worker.engine import train
from worker.engine.sink import MemorySink

pytestmark = [pytest.mark.e2e, pytest.mark.services]

LEASE_SECONDS = 2.0
JOB = {
    "model": {"name": "mlp", "args": {"hidden": [32], "dropout": 0.1}},
    "data": {"name": "synthetic_classification", "args": {"n_samples": 512}, "batch_size": 16},
    "optimizer": {"name": "adam", "lr": 0.003},
    "schedule": {"name": "cosine", "warmup_steps": 20},
    "eval": {"every_steps": 50},
    "max_steps": 300,
    "checkpoint_every": 30,
    "device": "cpu",
}
SERIES = ("train_loss", "lr", "val_loss", "val_acc")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[float]]:
    sink = MemorySink(flush_seconds=3600)
    root = tmp_path_factory.mktemp("reference")
    train(JobSpec.model_validate(JOB), sink, data_root=root, device=torch.device("cpu"))
    return {name: sink.series(name) for name in SERIES}


@pytest.fixture(scope="module")
def stack(
    postgres_url: str, redis_queue: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    from models.migrate import upgrade

    logs = tmp_path_factory.mktemp("faults")
    port = free_port()
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": REDIS_URL,
        "DESCENT_QUEUE": f"{redis_queue}-faults",
        "DESCENT_DATA_DIR": str(logs / "data"),
        "DESCENT_AUTH": "off",
        "DESCENT_FLUSH_SECONDS": "0.2",
        "DESCENT_LEASE_SECONDS": str(LEASE_SECONDS),
        "DESCENT_REAP_SECONDS": "0.25",
        "DESCENT_LOST_AFTER_SECONDS": "30",
    }
    upgrade(postgres_url)
    api = ServiceProcess(["serve", "--no-migrate", "--port", str(port)], env, logs / "api.log")
    # Three workers, started together: the first test kills one, the second needs two.
    workers = {name: ServiceProcess(["worker"], env, logs / f"worker-{name}.log") for name in "abc"}
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        for worker in workers.values():
            worker.wait_for_log(" ready.")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield {"http": http, "workers": workers, "env": env, "logs": logs}
    finally:
        for worker in workers.values():
            if worker.process.poll() is None:
                os.kill(worker.process.pid, signal.SIGCONT)
            worker.stop()
        api.stop()


def running_past(http: httpx.Client, job_id: str, step: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["progress"]["step"] >= step:
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not pass step {step}")


def worker_logs(stack: dict) -> str:
    """The workers' recent lines, for a failure message."""
    return "\n".join(
        f"--- worker {name}:\n" + worker.output()[-2500:]
        for name, worker in stack["workers"].items()
    )


def runner(stack: dict, job: dict) -> tuple[str, ServiceProcess]:
    """The worker process named in the job's row (`descent-<pid>@host`)."""
    pid = int(job["worker"].split("@")[0].removeprefix("descent-"))
    for name, worker in stack["workers"].items():
        if worker.process.pid == pid:
            return name, worker
    raise AssertionError(f"{job['worker']} is none of this test's workers")


def assert_complete_and_equal(http: httpx.Client, job_id: str, reference: dict) -> None:
    names = ",".join(SERIES)
    series = http.get(f"/v1/jobs/{job_id}/metrics", params={"names": names}).json()["series"]
    steps = series["train_loss"]["steps"]
    assert steps == list(range(1, JOB["max_steps"] + 1))  # complete, each step once
    for name in SERIES:
        assert series[name]["values"] == reference[name], f"{name} differs from the reference"


def test_a_killed_worker_s_job_resumes_elsewhere_from_its_checkpoint(
    stack: dict, reference: dict
) -> None:
    http = stack["http"]
    job_id = http.post("/v1/jobs", json=JOB).json()["id"]
    job = running_past(http, job_id, step=100)
    name, victim = runner(stack, job)
    victim.process.send_signal(signal.SIGKILL)
    killed_at, killed_step = time.monotonic(), job["progress"]["step"]
    victim.process.wait()

    resumed = None
    while resumed is None:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["attempt"] == 2 and job["status"] == "running":
            resumed = time.monotonic() - killed_at
        assert time.monotonic() - killed_at < 60, f"not resumed: {job}\n{worker_logs(stack)}"
        time.sleep(0.05)
    done = wait_for_status(http, job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 2 and done["restarts"] == 1
    resumed_from = done["summary"]["resumed_from_step"]
    assert resumed_from >= 90 and resumed_from % 30 == 0  # the last checkpoint, not step 0
    assert_complete_and_equal(http, job_id, reference)
    print(
        f"\nworker killed at step >= {killed_step}; job running again after {resumed:.2f} s "
        f"(lease {LEASE_SECONDS} s), resumed from step {resumed_from}"
    )
    del stack["workers"][name]


def test_a_stalled_worker_is_fenced_off_and_writes_nothing_more(
    stack: dict, reference: dict
) -> None:
    http = stack["http"]
    job_id = http.post("/v1/jobs", json=JOB).json()["id"]
    job = running_past(http, job_id, step=100)
    name, stalled = runner(stack, job)
    os.kill(stalled.process.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while (job := http.get(f"/v1/jobs/{job_id}").json())["attempt"] < 2:
            assert time.monotonic() < deadline, f"never taken over: {job}\n{worker_logs(stack)}"
            time.sleep(0.05)
        assert runner(stack, job)[0] != name
    finally:
        os.kill(stalled.process.pid, signal.SIGCONT)
    stalled.wait_for_log(f"job {job_id} attempt 1 lost its claim; stopping", timeout=30)
    done = wait_for_status(http, job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    assert runner(stack, done)[0] != name  # the woken worker did not finish it
    assert_complete_and_equal(http, job_id, reference)
    # The woken worker still serves: with the other one paused (idle, so it holds no job),
    # the next job runs on it.
    others = [w for n, w in stack["workers"].items() if n != name]
    for other in others:
        os.kill(other.process.pid, signal.SIGSTOP)
    try:
        quick = {**JOB, "max_steps": 20}
        after = wait_for_status(
            http, http.post("/v1/jobs", json=quick).json()["id"], {"succeeded", "failed"}
        )
    finally:
        for other in others:
            os.kill(other.process.pid, signal.SIGCONT)
    assert after["status"] == "succeeded" and runner(stack, after)[0] == name


def test_sigterm_checkpoints_hands_the_job_back_and_it_resumes_elsewhere(
    stack: dict, reference: dict
) -> None:
    http = stack["http"]
    job_id = http.post("/v1/jobs", json=JOB).json()["id"]
    job = running_past(http, job_id, step=100)
    name, leaving = runner(stack, job)
    leaving.process.send_signal(signal.SIGTERM)  # a deploy: Celery's warm shutdown
    assert leaving.process.wait(timeout=30) == 0, leaving.output()[-3000:]
    handed_back = re.search(
        rf"job {job_id} attempt 1 handed back: worker shutting down \(checkpoint at step (\d+)\)",
        leaving.output(),
    )
    assert handed_back, leaving.output()[-3000:]
    del stack["workers"][name]
    done = wait_for_status(http, job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    assert done["restarts"] == 0  # a hand-back is not a lost worker
    assert done["summary"]["resumed_from_step"] == int(handed_back.group(1)) >= 100
    assert_complete_and_equal(http, job_id, reference)
