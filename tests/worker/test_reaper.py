"""Leases, the reaper and the fence, on SQLite and on the real PostgreSQL: a job whose worker is
gone is requeued once and sent once (however many reapers run), fails after max_restarts, and
the attempt it was taken from can no longer write anything."""

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from models.db import session_scope
from models.queries import (
    JobLost,
    claim_job,
    create_job,
    finish_job,
    get_job,
    owns_job,
    record_progress,
    release_job,
    renew_lease,
    request_cancel,
)
from models.settings import get_settings
from models.spec import JobSpec
from models.tables import Job, JobStatus, utcnow
from worker.engine.sink import is_transient
from worker.heartbeat import Heartbeat, end_stalled_transactions
from worker.reaper import Reaper

SPEC = JobSpec.model_validate(
    {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}
)


@pytest.fixture
def clean_postgres(services_env: dict) -> dict:
    """The test session's PostgreSQL database with no jobs in it: a reaper sees every job, and
    earlier tests leave theirs behind."""
    with session_scope() as session:
        session.execute(text("TRUNCATE TABLE jobs CASCADE"))
    return services_env


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("embedded_db" if request.param == "sqlite" else "clean_postgres")
    return request.param


class Broker:
    """Records what a reaper sends; `waiting` is what queue_size reports."""

    def __init__(self, waiting: int | None = 0) -> None:
        self.sent: list[tuple[str, str]] = []
        self.waiting = waiting
        self._lock = threading.Lock()

    def send(self, job_id: str, queue: str) -> None:
        with self._lock:
            self.sent.append((job_id, queue))

    def queue_size(self, queue: str) -> int | None:
        return self.waiting


def reaper(broker: Broker, **settings: object) -> Reaper:
    configured = get_settings().model_copy(update={"max_restarts": 2, **settings})
    return Reaper(send=broker.send, queue_size=broker.queue_size, settings=configured)


def new_job() -> str:
    with session_scope() as session:
        return create_job(session=session, spec=SPEC, submitted={}, owner="me").id


def claim(job_id: str, worker: str = "w1") -> int:
    with session_scope() as session:
        claimed = claim_job(session=session, job_id=job_id, worker=worker, lease_seconds=30)
    assert claimed is not None
    return claimed.attempt


def expire(job_id: str, seconds_ago: float = 1.0) -> None:
    """The worker stopped renewing: its lease is in the past."""
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_until=utcnow() - timedelta(seconds=seconds_ago))
        )


def job(job_id: str) -> Job:
    with session_scope() as session:
        found = get_job(session=session, job_id=job_id)
        assert found is not None
        return found


def flush(job_id: str, attempt: int, step: int) -> bool:
    point = {"name": "train_loss", "step": step, "value": 1.0, "epoch": 0.0, "wall_time": 0.0}
    with session_scope() as session:
        return record_progress(
            session=session,
            job_id=job_id,
            attempt=attempt,
            points=[point],
            step=step,
            epoch=0.0,
            lease_seconds=30,
        )


def test_an_expired_lease_is_requeued_sent_once_and_the_old_attempt_is_fenced(
    ledger: str,
) -> None:
    job_id, broker = new_job(), Broker()
    old = claim(job_id, "dead-worker")
    flush(job_id, old, step=5)
    expire(job_id)
    report = reaper(broker).reap_once()
    assert report.requeued == [job_id]
    assert broker.sent == [(job_id, "any")]
    requeued = job(job_id)
    assert requeued.status == JobStatus.requeued and requeued.restarts == 1
    assert requeued.worker is None
    # The dead worker comes back to life: none of its writes lands.
    with pytest.raises(JobLost):
        flush(job_id, old, step=6)
    with session_scope() as session:
        assert not renew_lease(session=session, job_id=job_id, attempt=old, lease_seconds=30)
        assert not owns_job(session=session, job_id=job_id, attempt=old)
    new = claim(job_id, "live-worker")
    assert new == old + 1
    with pytest.raises(JobLost):
        flush(job_id, old, step=6)
    with session_scope() as session:
        assert not finish_job(
            session=session, job_id=job_id, attempt=old, status=JobStatus.succeeded
        )
        assert owns_job(session=session, job_id=job_id, attempt=new)
    assert reaper(broker).reap_once().requeued == []  # the new lease is live


def test_a_live_lease_is_left_alone(ledger: str) -> None:
    job_id, broker = new_job(), Broker()
    claim(job_id)
    assert reaper(broker).reap_once().requeued == []
    assert job(job_id).status == JobStatus.running and broker.sent == []


def test_many_reapers_at_once_requeue_each_job_once(ledger: str) -> None:
    jobs = [new_job() for _ in range(6)]
    for job_id in jobs:
        claim(job_id)
        expire(job_id)
    broker = Broker()
    reapers = [reaper(broker) for _ in range(4)]
    threads = [threading.Thread(target=r.reap_once) for r in reapers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(job_id for job_id, _ in broker.sent) == sorted(jobs)
    assert all(job(job_id).restarts == 1 for job_id in jobs)


def test_after_max_restarts_the_job_fails_with_the_reason(ledger: str) -> None:
    job_id, broker = new_job(), Broker()
    checkpoints = get_settings().checkpoint_dir / job_id
    checkpoints.mkdir(parents=True)
    (checkpoints / "step-0000000010.attempt-1.pt").write_bytes(b"x")
    for restart in (1, 2):
        claim(job_id, f"worker-{restart}")
        flush(job_id, restart, step=10 * restart)
        expire(job_id)
        assert reaper(broker).reap_once().requeued == [job_id]
    claim(job_id, "worker-3")
    flush(job_id, 3, step=30)
    expire(job_id)
    report = reaper(broker).reap_once()
    assert report.failed == [job_id] and len(broker.sent) == 2
    failed = job(job_id)
    assert failed.status == JobStatus.failed and failed.finished_at is not None
    assert failed.error == (
        "worker lost 3 times (lease expired; last on worker-3 at step 30); max_restarts is 2"
    )
    assert not checkpoints.exists()


def test_a_pending_cancel_of_a_lost_job_ends_it_canceled(ledger: str) -> None:
    job_id, broker = new_job(), Broker()
    claim(job_id)
    with session_scope() as session:
        request_cancel(session=session, job_id=job_id)
    expire(job_id)
    assert reaper(broker).reap_once().canceled == [job_id]
    assert job(job_id).status == JobStatus.canceled and broker.sent == []


def test_a_graceful_hand_back_does_not_count_as_a_restart(ledger: str) -> None:
    job_id = new_job()
    attempt = claim(job_id)
    with session_scope() as session:
        status = release_job(session=session, job_id=job_id, attempt=attempt, claim_within=60)
    assert status == JobStatus.requeued
    handed_back = job(job_id)
    assert handed_back.restarts == 0 and handed_back.status == JobStatus.requeued
    assert claim(job_id) == attempt + 1
    with session_scope() as session:  # the old attempt cannot hand it back twice
        assert release_job(session=session, job_id=job_id, attempt=attempt, claim_within=60) is None
        request_cancel(session=session, job_id=job_id)
    with session_scope() as session:
        status = release_job(session=session, job_id=job_id, attempt=attempt + 1, claim_within=60)
    assert status == JobStatus.canceled


def test_a_lost_message_is_sent_again_only_when_its_queue_is_empty(ledger: str) -> None:
    job_id = new_job()
    with session_scope() as session:  # submitted long ago, never claimed
        session.execute(
            update(Job).where(Job.id == job_id).values(created_at=utcnow() - timedelta(seconds=120))
        )
    busy, unknown, empty = Broker(waiting=3), Broker(waiting=None), Broker(waiting=0)
    assert reaper(busy, lost_after_seconds=60).reap_once().resent == []
    assert reaper(unknown, lost_after_seconds=60).reap_once().resent == []
    assert reaper(empty, lost_after_seconds=60).reap_once().resent == [job_id]
    assert empty.sent == [(job_id, "any")]
    # Its claim deadline moved on: not sent again before another lost_after_seconds.
    assert reaper(empty, lost_after_seconds=60).reap_once().resent == []
    fresh = new_job()
    assert reaper(empty, lost_after_seconds=60).reap_once().resent == []
    assert job(fresh).status == JobStatus.queued


def test_a_requeued_job_whose_send_failed_is_sent_later(ledger: str) -> None:
    job_id = new_job()
    claim(job_id)
    expire(job_id)

    class Down(Broker):
        def send(self, job_id: str, queue: str) -> None:
            raise ConnectionError("redis is down")

    assert reaper(Down(), lost_after_seconds=60).reap_once().requeued == [job_id]
    assert job(job_id).status == JobStatus.requeued
    expire(job_id)  # its claim deadline passes with no claim
    broker = Broker()
    assert reaper(broker, lost_after_seconds=60).reap_once().resent == [job_id]


def test_the_heartbeat_renews_the_lease_and_notices_the_fence(ledger: str) -> None:
    job_id = new_job()
    attempt = claim(job_id)
    expire(job_id, seconds_ago=60)
    expired = job(job_id).lease_until
    with Heartbeat(job_id=job_id, attempt=attempt, lease_seconds=3) as heartbeat:
        deadline = time.monotonic() + 10
        while job(job_id).lease_until == expired:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
        assert reaper(Broker()).reap_once().requeued == []  # renewed: not reaped
        assert not heartbeat.lost.is_set()
        expire(job_id, seconds_ago=5)
        assert reaper(Broker()).reap_once().requeued == [job_id]
        assert heartbeat.lost.wait(10), "the fenced heartbeat did not notice"
    assert job(job_id).status == JobStatus.requeued  # the heartbeat did not take it back


def test_the_reaper_thread_runs_passes_until_stopped(ledger: str) -> None:
    job_id, broker = new_job(), Broker()
    claim(job_id)
    expire(job_id)
    thread = reaper(broker, reap_seconds=0.05)
    thread.start()
    deadline = time.monotonic() + 10
    while not broker.sent:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    thread.stop()
    assert broker.sent == [(job_id, "any")]


def test_a_worker_frozen_inside_a_transaction_does_not_block_the_reaper(
    clean_postgres: dict,
) -> None:
    """SIGSTOP a worker mid-flush and it holds its job's row lock; PostgreSQL ends the frozen
    session (idle in transaction) so the reaper's UPDATE goes through."""
    from sqlalchemy.exc import DBAPIError

    from models.db import make_engine

    job_id, broker = new_job(), Broker()
    claim(job_id)
    expire(job_id)
    remove = end_stalled_transactions(1.0)
    frozen_engine = make_engine(clean_postgres["DATABASE_URL"])
    try:
        frozen = frozen_engine.connect()
        frozen.begin()
        frozen.execute(update(Job).where(Job.id == job_id).values(step=5))  # row locked
        done = threading.Event()
        thread = threading.Thread(target=lambda: done.set() if reaper(broker).reap_once() else 0)
        thread.start()
        assert done.wait(20), "the reaper stayed blocked on the frozen worker's lock"
        assert broker.sent == [(job_id, "any")] and job(job_id).step == 0
        with pytest.raises(DBAPIError) as woken:  # the frozen worker wakes up without a session
            frozen.execute(update(Job).where(Job.id == job_id).values(step=6))
        assert is_transient(woken.value)  # its sink retries, then finds itself fenced
    finally:
        remove()
        frozen_engine.dispose()
