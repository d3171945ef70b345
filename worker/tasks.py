"""Celery tasks. Thin: claim → engine → finish. Tasks take ids and re-read the ledger.

Faults: while a job runs, a heartbeat thread renews its lease (worker/heartbeat.py) and the loop
checkpoints every N steps (worker/engine/checkpoint.py). SIGTERM (a deploy, `descent up` stopping)
makes the loop checkpoint at the next step and hand the job back (`requeued`, sent again) before
the worker exits. Every worker process runs a reaper thread (worker/reaper.py) that requeues the
jobs of workers that died without saying so.
"""

import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from celery.signals import worker_init, worker_ready, worker_shutting_down

from models.db import session_scope
from models.queries import JobLost, claim_job, finish_job, owns_job, release_job
from models.settings import Settings, get_settings
from models.spec import JobSpec
from models.tables import FINISHED, JobStatus
from worker.celery_app import app
from worker.engine import train
from worker.engine.checkpoint import Checkpointer
from worker.engine.failures import describe_failure, release_device_memory
from worker.engine.sink import DatabaseSink, SinkUnavailable, first_line, is_transient
from worker.ensembles import keep_weights, run_ensemble
from worker.heartbeat import Heartbeat, end_stalled_transactions
from worker.reaper import Reaper
from worker.solvers import run_solve
from worker.studies import drive as drive_study_round

log = logging.getLogger(__name__)
SHUTDOWN = threading.Event()  # set on SIGTERM: checkpoint, hand the job back, exit
T = TypeVar("T")


@app.task(name="run_job", bind=True)
def run_job(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    worker = self.request.hostname or socket.gethostname()
    return execute_job(job_id, worker=worker)


@app.task(name="drive_study")
def drive_study(study_id: str, token: str) -> str:
    """One round of a study's driver; it schedules its next round itself (worker/studies.py)."""
    return drive_study_round(study_id, token)


def execute_job(job_id: str, *, worker: str) -> str:
    """Run one job to a final status. Never raises: a failing job must not take the worker down."""
    settings = get_settings()
    with session_scope() as session:
        claim = claim_job(
            session=session, job_id=job_id, worker=worker, lease_seconds=settings.lease_seconds
        )
    if claim is None:
        log.info("job %s is not claimable (duplicate delivery, canceled or finished)", job_id)
        return "skipped"
    sink = DatabaseSink(
        flush_seconds=settings.flush_seconds,
        retry_seconds=settings.flush_retry_seconds,
        job_id=job_id,
        attempt=claim.attempt,
        lease_seconds=settings.lease_seconds,
    )
    keeper: Checkpointer | None = None
    with Heartbeat(job_id=job_id, attempt=claim.attempt, lease_seconds=settings.lease_seconds):
        try:
            spec = JobSpec.model_validate(claim.resolved_spec)
            if spec.task == "solve":
                outcome = run_solve(spec, sink)
            elif spec.task == "ensemble":
                outcome = run_ensemble(spec, sink, job_id=job_id, data_root=settings.data_dir)
            else:
                keeper = job_checkpointer(spec, job_id, claim.attempt, settings)
                outcome = train(spec, sink, data_root=settings.data_dir, checkpoints=keeper)
                keep_weights(outcome, settings.data_dir, job_id)  # for ensembles
            sink.drain()
            status, summary, error = outcome.status, outcome.summary, outcome.error
        except JobLost:
            log.warning("job %s attempt %d lost its claim; stopping", job_id, claim.attempt)
            return "lost"
        except SinkUnavailable as exc:
            # Not the job's fault: leave it `running`; its lease runs out once the heartbeat
            # stops, and the reaper requeues it from its last checkpoint.
            log.error("job %s: metrics could not be written (%s); left to the reaper", job_id, exc)
            return "abandoned"
        except Exception as exc:  # noqa: BLE001 - any error in a job ends that job, not the worker
            log.exception("job %s failed", job_id)
            status, summary, error = JobStatus.failed, sink.summary(), describe_failure(exc, sink)
        if keeper is not None and keeper.resumed_from is not None:
            summary["resumed_from_step"] = keeper.resumed_from
        try:
            if status == JobStatus.requeued:
                return hand_back(job_id, claim.attempt, spec.queue, error, settings)
            finished = retrying(
                lambda: _finish(job_id, claim.attempt, status, summary, error), settings
            )
        except Exception:  # noqa: BLE001 - the database stayed away: the reaper takes over
            log.exception("job %s: final status not written; left to the reaper", job_id)
            return "abandoned"
    if finished and status in FINISHED:
        shutil.rmtree(settings.checkpoint_dir / job_id, ignore_errors=True)
    release_device_memory()
    return str(status)


def _finish(job_id: str, attempt: int, status: JobStatus, summary: dict, error: str | None) -> bool:
    with session_scope() as session:
        return finish_job(
            session=session,
            job_id=job_id,
            attempt=attempt,
            status=status,
            summary=summary,
            error=error,
        )


def job_checkpointer(spec: JobSpec, job_id: str, attempt: int, settings: Settings) -> Checkpointer:
    def still_owned() -> bool:
        with session_scope() as session:
            return owns_job(session=session, job_id=job_id, attempt=attempt)

    return Checkpointer(
        directory=settings.checkpoint_dir / job_id,
        every_steps=spec.checkpoint_every or settings.checkpoint_every,
        every_seconds=settings.checkpoint_seconds,
        attempt=attempt,
        stop_requested=SHUTDOWN.is_set,
        may_write=still_owned,
    )


def hand_back(job_id: str, attempt: int, queue: str, reason: str | None, settings: Settings) -> str:
    """Graceful shutdown: the checkpoint is written; the job goes back to the queue."""

    def release() -> JobStatus | None:
        with session_scope() as session:
            return release_job(
                session=session,
                job_id=job_id,
                attempt=attempt,
                claim_within=settings.lost_after_seconds,
            )

    status = retrying(release, settings)
    log.warning("job %s attempt %d handed back: %s → %s", job_id, attempt, reason, status)
    if status == JobStatus.requeued:
        try:
            send_job(job_id, queue)
        except Exception as exc:  # noqa: BLE001 - the reaper sends it when it stays unclaimed
            log.warning("job %s requeued but not sent (%s); the reaper will", job_id, exc)
    return str(status or "lost")


def retrying(write: Callable[[], T], settings: Settings) -> T:
    """A ledger write retried with backoff while the database is briefly away."""
    deadline, pause = time.monotonic() + settings.flush_retry_seconds, 0.25
    while True:
        try:
            return write()
        except Exception as exc:
            from sqlalchemy.exc import DBAPIError

            transient = isinstance(exc, DBAPIError) and is_transient(exc)
            if not transient or time.monotonic() + pause > deadline:
                raise
            log.warning("database away (%s); retrying in %.2f s", first_line(exc), pause)
            time.sleep(pause)
            pause = min(2 * pause, 8.0)


# The worker process: the broker, SIGTERM, the reaper ----------------------------------------


def send_job(job_id: str, queue: str) -> None:
    app.send_task(
        "run_job",
        args=[job_id],
        task_id=job_id,
        queue=f"{get_settings().queue_prefix}.{queue}",
        retry=False,
    )


def queue_size(queue: str) -> int | None:
    """Messages waiting in one of our queues; None when the broker cannot say."""
    try:
        with app.connection_for_read() as connection:
            declared = connection.default_channel.queue_declare(
                queue=f"{get_settings().queue_prefix}.{queue}", durable=True, auto_delete=False
            )
            return int(declared.message_count)
    except Exception as exc:  # noqa: BLE001 - unknown: the reaper then resends nothing
        log.warning("queue %s: size unknown (%s)", queue, exc)
        return None


@worker_shutting_down.connect
def _on_shutdown(**_: object) -> None:
    # Runs inside the signal handler: only set a flag. The loop sees it at the next step.
    SHUTDOWN.set()


@worker_init.connect
def _guard_row_locks(**_: object) -> None:
    end_stalled_transactions(max(get_settings().lease_seconds / 2, 5.0))


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    Reaper(send=send_job, queue_size=queue_size).start()
