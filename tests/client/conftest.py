"""The real API in-process (FastAPI's TestClient) on its own SQLite file and embedded broker.

No worker runs: a submitted job stays `queued` until a test moves it through the ledger's own
query functions, as a worker would (the `ledger` fixture).
"""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from client.api import Descent
from models.db import session_scope
from models.queries import claim_job, finish_job, record_progress
from models.tables import JobStatus


@pytest.fixture
def server(embedded_db: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The API app on a fresh, migrated database (the shared `embedded_db` fixture)."""
    from api.main import create_app

    monkeypatch.delenv("DESCENT_URL", raising=False)
    monkeypatch.delenv("DESCENT_API_KEY", raising=False)
    with TestClient(create_app()) as http:
        yield http


@pytest.fixture
def descent(server: TestClient) -> Descent:
    return Descent(http=server)


class Ledger:
    """Moves jobs through the ledger with the worker's own query functions."""

    steps = 10

    @classmethod
    def points(cls, name: str, steps: range, value: float = 1.0) -> list[dict]:
        """`value / step` at each step: a falling loss, easy to check."""
        return [
            {
                "name": name,
                "step": s,
                "value": value / s,
                "epoch": s / cls.steps,
                "wall_time": 0.1 * s,
            }
            for s in steps
        ]

    def start(self, job_id: str) -> int:
        """Claim a queued job as a worker would; returns the attempt."""
        with session_scope() as session:
            claim = claim_job(
                session=session, job_id=job_id, worker="test-worker", lease_seconds=60
            )
        assert claim is not None, f"job {job_id} was not claimable"
        return claim.attempt

    def log(self, job_id: str, attempt: int, rows: list[dict], step: int) -> None:
        with session_scope() as session:
            record_progress(
                session=session,
                job_id=job_id,
                attempt=attempt,
                points=rows,
                step=step,
                epoch=step / self.steps,
                total_steps=self.steps,
                total_epochs=1.0,
                lease_seconds=60,
            )

    def run(self, job_id: str, status: JobStatus) -> None:
        """Claim, log train_loss at every step and val_acc at the end, finish with `status`."""
        attempt = self.start(job_id)
        rows = self.points("train_loss", range(1, self.steps + 1)) + [
            {"name": "val_acc", "step": self.steps, "value": 0.9, "epoch": 1.0, "wall_time": 1.0}
        ]
        self.log(job_id, attempt, rows, self.steps)
        error = None if status == JobStatus.succeeded else f"the job {status}"
        with session_scope() as session:
            finished = finish_job(
                session=session,
                job_id=job_id,
                attempt=attempt,
                status=status,
                summary={"final_val_acc": 0.9, "steps": self.steps},
                error=error,
            )
        assert finished


@pytest.fixture
def ledger(server: TestClient) -> Ledger:
    """Worker-side moves on the same database as `server`."""
    return Ledger()
