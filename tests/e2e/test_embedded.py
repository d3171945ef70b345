"""The embedded default as `make run` starts it: `descent up` with SQLite and the SQLite broker,
API and worker in separate processes, nothing else running."""

import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServiceProcess, free_port, wait_for_http, wait_for_status

pytestmark = pytest.mark.e2e


def test_descent_up_trains_a_job_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "DESCENT_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "DESCENT_FLUSH_SECONDS": "0.2",
    }
    up = ServiceProcess(["up"], env, tmp_path / "up.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz")
        assert f"http://127.0.0.1:{port}" in up.output()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            spec = {
                "model": {"name": "linear"},
                "data": {"name": "digits"},
                "optimizer": {"name": "sgd", "lr": 0.1},
                "epochs": 2,
            }
            created = http.post("/v1/jobs", json=spec)
            assert created.status_code == 201
            job = wait_for_status(http, created.json()["id"], {"succeeded", "failed"}, 120)
            assert job["status"] == "succeeded", job["error"]
            series = http.get(f"/v1/jobs/{job['id']}/metrics").json()["series"]
            assert len(series["train_loss"]["steps"]) == job["summary"]["steps"]
        assert (tmp_path / "data" / "descent.db").exists()
        assert (tmp_path / "data" / "broker.db").exists()
    finally:
        up.process.send_signal(signal.SIGTERM)
        up.process.wait(timeout=30)
    assert up.process.returncode == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
