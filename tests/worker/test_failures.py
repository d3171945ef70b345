"""A job under faults, through the worker's own entry point (execute_job) on the ledger: the
database going away mid-job, SIGTERM, CUDA out of memory, fp16 steps skipped without end."""

import threading
from pathlib import Path

import pytest
import torch
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

import worker.engine.loop as loop
import worker.engine.sink as sink_module
import worker.tasks as tasks
from models.db import session_scope
from models.queries import create_job, get_job, read_metrics
from models.spec import JobSpec
from models.tables import JobStatus
from tests.conftest import reset_caches
from tests.tcp_proxy import TcpProxy
from worker.engine import train
from worker.engine.checkpoint import list_checkpoints
from worker.engine.sink import DatabaseSink, MemorySink, SinkUnavailable

SPEC = {
    "model": {"name": "mlp", "args": {"hidden": [16]}},
    "data": {"name": "synthetic_classification", "args": {"n_samples": 256}, "batch_size": 32},
    "optimizer": {"name": "sgd", "lr": 0.05, "args": {"momentum": 0.9}},
    "eval": {"every_steps": 10},
    "max_steps": 30,
    "checkpoint_every": 10,
    "device": "cpu",
}


def submit(spec: dict = SPEC) -> str:
    with session_scope() as session:
        job = create_job(
            session=session, spec=JobSpec.model_validate(spec), submitted=spec, owner="me"
        )
        return job.id


def ledger_row(job_id: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return get_job(session=session, job_id=job_id)


def steps(job_id: str, name: str = "train_loss") -> list[int]:
    with session_scope() as session:
        return [p.step for p in read_metrics(session=session, job_id=job_id)[name]]


class Outage:
    """The database refuses `failures` writes in a row, starting at the `start`-th one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: int, failures: int) -> None:
        self.calls, self.start, self.failures = 0, start, failures
        real = sink_module.session_scope

        def flaky():  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.start <= self.calls < self.start + self.failures:
                raise OperationalError("INSERT", {}, ConnectionRefusedError("server closed"))
            return real()

        monkeypatch.setattr(sink_module, "session_scope", flaky)


def test_metrics_survive_a_database_outage_and_the_job_goes_on(
    embedded_db: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module.time, "sleep", lambda _: None)
    job_id = submit()
    outage = Outage(monkeypatch, start=2, failures=4)
    assert tasks.execute_job(job_id, worker="w") == "succeeded"
    assert outage.calls > 4  # the outage happened and later writes went through
    assert steps(job_id) == list(range(1, 31))
    assert steps(job_id, "val_loss") == [10, 20, 30]


def test_a_postgresql_blip_mid_job_loses_no_metric(
    services_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection to PostgreSQL is reset and refused for 1.5 s from step 10 on (a TCP proxy
    in between is cut): the job trains on, keeps its points, and writes them when it is back."""
    job_id = submit()
    url = make_url(services_env["DATABASE_URL"])
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", proxied)
    monkeypatch.setenv("DESCENT_FLUSH_SECONDS", "0")
    reset_caches()
    real_write, cut = DatabaseSink.write, threading.Event()

    def write(self, points, **kwargs):  # type: ignore[no-untyped-def]
        if not cut.is_set() and kwargs["step"] >= 10:
            cut.set()
            proxy.cut()
            threading.Timer(1.5, proxy.restore).start()
        return real_write(self, points, **kwargs)

    monkeypatch.setattr(DatabaseSink, "write", write)
    try:
        assert tasks.execute_job(job_id, worker="w") == "succeeded"
    finally:
        proxy.cut()
    monkeypatch.setenv("DATABASE_URL", services_env["DATABASE_URL"])
    reset_caches()
    assert cut.is_set()
    assert steps(job_id) == list(range(1, 31))
    assert ledger_row(job_id).attempt == 1


def test_a_flush_during_an_outage_keeps_its_points_then_sends_them(
    embedded_db: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit()
    with session_scope() as session:
        from models.queries import claim_job

        attempt = claim_job(session=session, job_id=job_id, worker="w", lease_seconds=30).attempt
    sink = DatabaseSink(job_id=job_id, attempt=attempt, retry_seconds=60)
    Outage(monkeypatch, start=1, failures=1)
    sink.log("train_loss", 1, 0.5, 0.1)
    assert sink.flush(1, 0.1) is False and not sink.all_written  # kept, not lost
    sink.log("train_loss", 2, 0.4, 0.2)
    sink._retry_at = 0.0  # the backoff has passed
    sink.flush(2, 0.2)
    assert sink.all_written and steps(job_id) == [1, 2]


def test_the_sink_gives_up_after_its_retry_window(monkeypatch: pytest.MonkeyPatch) -> None:
    class Down(MemorySink):
        def write(self, points, *, step, epoch, totals):  # type: ignore[no-untyped-def]
            raise SinkUnavailable("connection refused")

    clock = [100.0]
    monkeypatch.setattr(sink_module.time, "monotonic", lambda: clock[0])
    sink = Down(retry_seconds=30)
    sink.log("train_loss", 1, 1.0, 0.0)
    assert sink.flush(1, 0.0) is False
    clock[0] += 10
    assert sink.flush(2, 0.0) is False and len(sink._unsent) == 1
    clock[0] += 25
    with pytest.raises(SinkUnavailable):
        sink.flush(3, 0.0)


def test_sigterm_checkpoints_hands_the_job_back_and_it_resumes(
    embedded_db: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(tasks, "send_job", lambda job_id, queue: sent.append((job_id, queue)))
    job_id = submit()
    real_log = DatabaseSink.log

    def sigterm_during_step_17(self, name, step, value, epoch):  # type: ignore[no-untyped-def]
        if step == 17:
            tasks.SHUTDOWN.set()  # what the worker_shutting_down signal handler does
        real_log(self, name, step, value, epoch)

    monkeypatch.setattr(DatabaseSink, "log", sigterm_during_step_17)
    try:
        assert tasks.execute_job(job_id, worker="w1") == "requeued"
    finally:
        tasks.SHUTDOWN.clear()
        monkeypatch.setattr(DatabaseSink, "log", real_log)
    row = ledger_row(job_id)
    assert row.status == JobStatus.requeued and row.restarts == 0
    assert sent == [(job_id, "cpu")]
    directory = tasks.get_settings().checkpoint_dir / job_id
    assert [step for step, _, _ in list_checkpoints(directory)] == [17, 10]
    assert steps(job_id) == list(range(1, 18))

    assert tasks.execute_job(job_id, worker="w2") == "succeeded"
    row = ledger_row(job_id)
    assert row.attempt == 2 and row.summary["resumed_from_step"] == 17
    assert steps(job_id) == list(range(1, 31))
    reference = MemorySink(flush_seconds=3600)
    train(JobSpec.model_validate(SPEC), reference, data_root=Path("."), device=torch.device("cpu"))
    with session_scope() as session:
        stored = read_metrics(session=session, job_id=job_id)
    for name in ("train_loss", "val_loss", "val_acc"):
        assert [p.value for p in stored[name]] == reference.series(name), name
    assert not directory.exists()  # a finished job's checkpoints are removed


def test_cuda_out_of_memory_fails_the_job_readably_and_the_worker_goes_on(
    embedded_db: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = tasks.train

    def out_of_memory(spec, sink, **kwargs):  # type: ignore[no-untyped-def]
        sink.log("train_loss", 7, 1.0, 0.1)
        sink.flush(7, 0.1)
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
            "79.19 GiB of which 1.25 GiB is free. Including non-PyTorch memory, this process "
            "has 77.94 GiB memory in use. See documentation for Memory Management"
        )

    monkeypatch.setattr(tasks, "train", out_of_memory)
    job_id = submit()
    assert tasks.execute_job(job_id, worker="w") == "failed"
    assert ledger_row(job_id).error == (
        "CUDA out of memory after step 7 (Tried to allocate 20.00 GiB; total capacity of 79.19 GiB "
        "of which 1.25 GiB is free). Lower data.batch_size or the model's size, or use "
        "precision bf16/fp16."
    )
    monkeypatch.setattr(tasks, "train", real_train)
    next_job = submit()
    assert tasks.execute_job(next_job, worker="w") == "succeeded"


def test_endless_fp16_skipped_steps_end_the_job_diverged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From step 10 on every gradient is infinite while the loss stays finite: GradScaler skips
    every step, and the job ends `diverged` once `max_skipped_steps` have been skipped in a row."""
    real_build = loop.build_run

    def overflowing_from_step_10(*args, **kwargs):  # type: ignore[no-untyped-def]
        run = real_build(*args, **kwargs)
        calls = {"n": 0}

        def poison(grad: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            return grad * float("inf") if calls["n"] >= 10 else grad

        next(run.net.parameters()).register_hook(poison)
        return run

    monkeypatch.setattr(loop, "build_run", overflowing_from_step_10)
    spec = {**SPEC, "precision": "fp16", "max_steps": 200, "stop": {"max_skipped_steps": 8}}
    spec.pop("checkpoint_every")
    outcome = train(
        JobSpec.model_validate(spec),
        MemorySink(flush_seconds=0),
        data_root=tmp_path,
        device=torch.device("cpu"),
    )
    assert outcome.status == JobStatus.diverged
    assert outcome.summary["steps"] == 17  # steps 10..17 skipped: 8 in a row
    assert outcome.error.startswith(
        "fp16: 8 consecutive steps skipped for non-finite gradients by step 17; "
        "last finite train_loss "
    )
    assert outcome.error.endswith("at step 17")


def test_a_few_skipped_steps_do_not_end_the_job(tmp_path: Path) -> None:
    sink = MemorySink(flush_seconds=0)
    for step, skipped in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (6, 4), (8, 6), (12, 7)]:
        sink.log("skipped_steps", step, float(skipped), None)
        sink.flush(step, 0.0)
    assert sink.skip_streak == 0  # never more than 2 in a row
    for step in range(13, 20):
        sink.log("skipped_steps", step, float(7 + step - 12), None)
        sink.flush(step, 0.0)
    assert sink.skip_streak == 7
