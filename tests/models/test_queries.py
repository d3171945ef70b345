"""The ledger's rules on SQLite and on the real PostgreSQL: one claim per job, fenced writes,
idempotent metric rows."""

import pytest

from models.db import session_scope
from models.queries import (
    JobLost,
    claim_job,
    create_job,
    finish_job,
    read_metrics,
    record_progress,
    request_cancel,
)
from models.spec import JobSpec
from models.tables import Job, JobStatus

SPEC = JobSpec.model_validate(
    {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}
)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("embedded_db" if request.param == "sqlite" else "services_env")
    return request.param


def new_job() -> str:
    with session_scope() as session:
        return create_job(session=session, spec=SPEC, submitted={}, owner="me").id


def claim(job_id: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return claim_job(session=session, job_id=job_id, worker="w", lease_seconds=30)


def progress(job_id: str, attempt: int, points: list[dict]) -> bool:
    with session_scope() as session:
        return record_progress(
            session=session,
            job_id=job_id,
            attempt=attempt,
            points=points,
            step=1,
            epoch=0.1,
            lease_seconds=30,
        )


def point(step: int, value: float) -> dict:
    return {"name": "train_loss", "step": step, "value": value, "epoch": 0.0, "wall_time": 0.0}


def test_a_job_is_claimed_once(ledger: str) -> None:
    job_id = new_job()
    first = claim(job_id)
    assert first is not None and first.attempt == 1
    assert first.resolved_spec == SPEC.model_dump(mode="json")
    assert claim(job_id) is None  # a duplicate delivery finds nothing to do


def test_writes_of_a_stale_attempt_are_refused(ledger: str) -> None:
    job_id = new_job()
    attempt = claim(job_id).attempt
    with pytest.raises(JobLost):
        progress(job_id, attempt + 1, [point(1, 1.0)])
    with session_scope() as session:
        assert not finish_job(
            session=session, job_id=job_id, attempt=attempt + 1, status=JobStatus.succeeded
        )
        assert finish_job(
            session=session, job_id=job_id, attempt=attempt, status=JobStatus.succeeded
        )
    with pytest.raises(JobLost):  # finished: no more writes from anyone
        progress(job_id, attempt, [point(2, 1.0)])


def test_repeated_metric_points_are_written_once(ledger: str) -> None:
    job_id = new_job()
    attempt = claim(job_id).attempt
    progress(job_id, attempt, [point(1, 1.0), point(2, 0.5)])
    progress(job_id, attempt, [point(2, 0.5), point(3, 0.25)])
    with session_scope() as session:
        series = read_metrics(session=session, job_id=job_id)
    assert [(p.step, p.value) for p in series["train_loss"]] == [(1, 1.0), (2, 0.5), (3, 0.25)]


def test_cancel_reaches_a_running_job_at_its_next_flush(ledger: str) -> None:
    job_id = new_job()
    attempt = claim(job_id).attempt
    assert progress(job_id, attempt, []) is False
    with session_scope() as session:
        request_cancel(session=session, job_id=job_id)
    assert progress(job_id, attempt, []) is True


def test_cancel_leaves_a_finished_job_alone(ledger: str) -> None:
    job_id = new_job()
    attempt = claim(job_id).attempt
    with session_scope() as session:
        finish_job(
            session=session, job_id=job_id, attempt=attempt, status=JobStatus.failed, error="x"
        )
        request_cancel(session=session, job_id=job_id)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed" and not job.cancel_requested
