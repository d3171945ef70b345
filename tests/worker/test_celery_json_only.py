"""Celery speaks JSON only: a pickled message, which could run code when loaded, is refused
before anything is unpickled, on the worker's consumer path and on its execution path."""

import os
import pickle
import uuid
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import ContentDisallowed

PICKLE = "application/x-python-serialize"


class Payload:
    """Unpickling this creates a directory: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


@pytest.fixture
def worker_app(embedded_db: dict):  # type: ignore[no-untyped-def]
    import worker.tasks  # noqa: F401 - registers run_job
    from worker.celery_app import make_celery

    return make_celery()


def test_worker_and_api_accept_json_only(embedded_db: dict) -> None:
    from api.queue import producer
    from worker.celery_app import app, make_celery

    for celery in (app, make_celery(), producer()):
        conf = celery.conf
        assert conf.task_serializer == "json"
        assert list(conf.accept_content) == ["json"]
        assert conf.result_serializer == "json"
        assert conf.result_accept_content in (None, ["json"])  # None: follows accept_content
        assert conf.event_serializer == "json"


def test_a_pickled_task_message_is_refused_by_the_consumer(worker_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "unpickled"
    queue = Queue("descent.any", Exchange("descent.any"), "descent.any")
    with Connection("memory://") as connection:
        producer = Producer(connection.channel(), exchange=queue.exchange, routing_key=queue.name)
        producer.publish(
            pickle.dumps(((Payload(marker),), {}, {})),
            serializer=None,
            content_type=PICKLE,
            content_encoding="binary",
            headers={"task": "run_job", "id": str(uuid.uuid4()), "lang": "py"},
            declare=[queue],
        )
        received: list = []
        errors: list = []
        # The consumer the worker builds (celery/worker/consumer/tasks.py): the app's accept list
        consumer = worker_app.amqp.TaskConsumer(
            connection.channel(), queues=[queue], on_decode_error=lambda m, e: errors.append(e)
        )
        consumer.register_callback(lambda body, message: received.append(body))
        with consumer:
            connection.drain_events(timeout=2)
    assert received == []
    assert len(errors) == 1 and isinstance(errors[0], ContentDisallowed)
    assert not marker.exists()


def test_a_pickled_body_is_refused_where_the_worker_runs_tasks(worker_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from celery.app.trace import trace_task_ret

    marker = tmp_path / "unpickled"
    body = pickle.dumps(((Payload(marker),), {}, {}))
    with pytest.raises(ContentDisallowed):
        trace_task_ret("run_job", "t1", {}, body, PICKLE, "binary", app=worker_app)
    assert not marker.exists()
    # the same path with JSON runs the task (an unknown job: the claim finds nothing to run)
    json_body = f'[["{uuid.uuid4()}"], {{}}, {{}}]'
    outcome = trace_task_ret(
        "run_job", "t2", {}, json_body, "application/json", "utf-8", app=worker_app
    )
    assert outcome[0] == 0 and "skipped" in str(outcome[1])
