"""The Celery app. JSON only, late acks, one message at a time per worker process.

Redis only delivers work; the database decides who runs what (tasks.run_job claims the job with a
conditional UPDATE), so a redelivered or duplicated message is harmless.
"""

from celery import Celery

from models.settings import get_settings


def queue_names(*, gpu: bool) -> list[str]:
    prefix = get_settings().queue_prefix
    return [f"{prefix}.any", f"{prefix}.cpu"] + ([f"{prefix}.gpu"] if gpu else [])


def make_celery() -> Celery:
    settings = get_settings()
    if settings.embedded:
        settings.ensure_data_dir()
    celery = Celery("descent", broker=settings.broker_url, include=["worker.tasks"])
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=f"{settings.queue_prefix}.any",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return celery


app = make_celery()
