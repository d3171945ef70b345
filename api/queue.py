"""Sending work to the workers. The API holds only a Celery producer: no task code, no torch."""

from functools import lru_cache

from celery import Celery

from models.settings import get_settings


@lru_cache
def producer() -> Celery:
    settings = get_settings()
    if settings.embedded:
        settings.ensure_data_dir()
    celery = Celery("descent-api", broker=settings.broker_url)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry=False,
        broker_connection_max_retries=0,
    )
    if not settings.embedded:
        # Fail fast when Redis is down: the API answers 503 instead of hanging.
        celery.conf.broker_transport_options = {"max_retries": 1, "socket_connect_timeout": 2}
    return celery


def enqueue(job_id: str, queue: str) -> None:
    """One message per job; its task id is the job id, so Flower and the ledger agree."""
    producer().send_task(
        "run_job",
        args=[job_id],
        task_id=job_id,
        queue=f"{get_settings().queue_prefix}.{queue}",
        retry=False,
    )


def broker_reachable() -> str | None:
    """None when the broker answers, else the reason."""
    try:
        with producer().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
        return f"{type(exc).__name__}: {exc}"
    return None
