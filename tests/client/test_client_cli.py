"""The HTTP commands of the `descent` CLI, against the real API app in-process."""

import csv
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner, Result

from client import remote
from client.api import Descent
from client.cli import app
from models.db import session_scope
from models.tables import Job, JobStatus

MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


@pytest.fixture
def cli(server: TestClient, monkeypatch: pytest.MonkeyPatch):
    """`descent …` with every HTTP command talking to the in-process server."""
    monkeypatch.setattr(remote, "connect", lambda url, key: Descent(http=server, key=key))
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env={"COLUMNS": "200"})

    return invoke


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text("model: {name: mlp}\ndata: {name: digits}\noptimizer: {name: adam, lr: 0.01}\n")
    return path


@pytest.fixture
def worker(ledger) -> Iterator[list[JobStatus]]:
    """A stand-in worker thread: each queued job it finds ends with the next status in the list."""
    outcomes: list[JobStatus] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.02):
            with session_scope() as session:
                queued = list(session.scalars(select(Job.id).where(Job.status == "queued")))
            for job_id in queued:
                ledger.run(job_id, outcomes.pop(0))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield outcomes
    stop.set()
    thread.join(5)


def test_submit_prints_the_job_id(cli, descent: Descent, spec_file: Path) -> None:
    result = cli("submit", str(spec_file), "--name", "cli-job", "--tag", "study=a", "--tag", "k=v")

    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    job = descent.job(job_id)
    assert job.status == "queued" and job.name == "cli-job"
    assert job.tags == {"study": "a", "k": "v"}
    assert job.spec["optimizer"]["lr"] == 0.01
    assert f"Location: {descent.url}/v1/jobs/{job_id}" in result.stderr


def test_submit_reads_json_specs_too(cli, descent: Descent, tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**MINIMAL, "name": "from-json"}))

    result = cli("submit", str(path))

    assert result.exit_code == 0, result.output
    assert descent.job(result.stdout.strip()).name == "from-json"


@pytest.mark.parametrize(
    ("outcome", "exit_code"),
    [
        (JobStatus.succeeded, 0),
        (JobStatus.failed, 1),
        (JobStatus.diverged, 1),
        (JobStatus.canceled, 1),
    ],
)
def test_submit_watch_exits_by_the_final_status(
    cli, worker: list, spec_file: Path, outcome: JobStatus, exit_code: int
) -> None:
    worker.append(outcome)

    result = cli("submit", str(spec_file), "--watch", "--poll", "0.02", "--timeout", "10")

    assert result.exit_code == exit_code, result.output
    job_id, summary_line = result.stdout.strip().splitlines()
    summary = json.loads(summary_line)
    assert summary["status"] == outcome and summary["final_val_acc"] == 0.9
    assert (summary["error"] is None) == (outcome == JobStatus.succeeded)
    assert f"job {job_id} {outcome}" in result.stderr
    assert "10/10" in result.stderr and "val_acc 0.9" in result.stderr  # the progress bar


def test_watch_reads_only_new_metric_points(
    descent: Descent, ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = descent.submit(MINIMAL).id
    attempt = ledger.start(job_id)
    asked: list[int | None] = []
    read = descent.metrics
    monkeypatch.setattr(
        descent, "metrics", lambda *a, **kw: asked.append(kw["since_step"]) or read(*a, **kw)
    )
    latest = remote.LatestMetrics(descent, job_id)

    ledger.log(job_id, attempt, ledger.points("train_loss", range(1, 4)), step=3)
    first = latest.refresh()
    ledger.log(job_id, attempt, ledger.points("val_acc", range(4, 6), value=4.0), step=5)
    second = latest.refresh()
    third = latest.refresh()

    assert asked == [None, 3, 5]
    assert first == "train_loss 0.3333"
    assert second == third == "train_loss 0.3333  val_acc 0.8"  # old values are kept


def test_submit_watch_gives_up_after_timeout(cli, spec_file: Path) -> None:
    result = cli("submit", str(spec_file), "--watch", "--poll", "0.02", "--timeout", "0.1")

    assert result.exit_code == 3, result.output
    assert "still queued" in result.stderr


def test_rejected_spec_exits_2_and_names_each_field(cli, descent: Descent, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: nope}\ndata: {name: digits}\noptimizer: {name: adam, lr: -1}\n")

    result = cli("submit", str(path))

    assert result.exit_code == 2, result.output
    assert "model.name" in result.stderr and "optimizer.lr" in result.stderr
    assert result.stdout == "" and descent.jobs().count == 0


@pytest.mark.parametrize("text", ["- a list\n", "model: [unclosed\n"])
def test_unreadable_spec_file_exits_2(cli, tmp_path: Path, text: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)

    assert cli("submit", str(path)).exit_code == 2


def test_bad_tag_exits_2(cli, descent: Descent, spec_file: Path) -> None:
    result = cli("submit", str(spec_file), "--tag", "no-equals-sign")

    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    assert descent.jobs().count == 0


def test_status_json_is_the_job(cli, descent: Descent) -> None:
    job = descent.submit({**MINIMAL, "name": "j"})

    result = cli("status", job.id, "--json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["id"] == job.id and shown["status"] == "queued" and shown["name"] == "j"
    assert shown["spec"] == job.spec and shown["progress"]["step"] == 0


def test_status_table_shows_progress_summary_and_error(cli, descent: Descent, ledger) -> None:
    job_id = descent.submit(MINIMAL).id
    ledger.run(job_id, JobStatus.failed)

    result = cli("status", job_id)

    assert result.exit_code == 0, result.output
    assert job_id in result.stdout and "failed" in result.stdout
    assert "10/10 (100%)" in result.stdout
    assert "summary.final_val_acc" in result.stdout and "the job failed" in result.stdout


def test_status_of_an_unknown_job_exits_3(cli) -> None:
    result = cli("status", "no-such-job")

    assert result.exit_code == 3
    assert "not_found" in result.stderr


def test_list_shows_jobs_filtered_and_paged(cli, descent: Descent) -> None:
    ids = [descent.submit({**MINIMAL, "tags": {"study": "s"}}).id for _ in range(3)]
    canceled = descent.cancel(descent.submit(MINIMAL).id).id

    everything = cli("list")
    by_status = cli("list", "--status", "canceled")
    by_tag = cli("list", "--tag", "study=s", "--limit", "2")

    assert everything.exit_code == by_status.exit_code == by_tag.exit_code == 0
    assert all(job_id in everything.stdout for job_id in [*ids, canceled])
    assert canceled in by_status.stdout and not any(i in by_status.stdout for i in ids)
    assert sum(job_id in by_tag.stdout for job_id in ids) == 2
    assert (
        "descent list --cursor " in by_tag.stderr
        and "descent list --cursor" not in everything.stderr
    )


def test_list_with_an_unknown_status_exits_2(cli) -> None:
    result = cli("list", "--status", "sleeping")

    assert result.exit_code == 2 and "status" in result.stderr


def test_cancel_prints_the_new_status(cli, descent: Descent) -> None:
    job_id = descent.submit(MINIMAL).id

    result = cli("cancel", job_id)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{job_id} canceled"
    assert descent.job(job_id).status == "canceled"


def test_metrics_csv_has_every_point(cli, descent: Descent, ledger) -> None:
    job_id = descent.submit(MINIMAL).id
    ledger.run(job_id, JobStatus.succeeded)

    result = cli("metrics", job_id, "--csv")
    only_acc = cli("metrics", job_id, "--csv", "--names", "val_acc")

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["name", "step", "value", "epoch", "wall_time"]
    assert len(rows) == 11  # 10 train_loss + 1 val_acc
    assert rows[-1] == {
        "name": "val_acc",
        "step": "10",
        "value": "0.9",
        "epoch": "1.0",
        "wall_time": "1.0",
    }
    assert [r["name"] for r in csv.DictReader(io.StringIO(only_acc.stdout))] == ["val_acc"]


def test_metrics_table_summarizes_each_series(cli, descent: Descent, ledger) -> None:
    job_id = descent.submit(MINIMAL).id
    ledger.run(job_id, JobStatus.succeeded)

    result = cli("metrics", job_id)

    assert result.exit_code == 0, result.output
    loss_row = next(line for line in result.stdout.splitlines() if "train_loss" in line)
    assert "1-10" in loss_row and "0.1" in loss_row  # steps, and the last (and least) value


def test_unreachable_server_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(
        remote, "connect", lambda url, key: Descent(url, transport=httpx.MockTransport(refuse))
    )

    result = CliRunner().invoke(app, ["list", "--url", "http://descent.invalid:1"])

    assert result.exit_code == 3
    assert "cannot reach http://descent.invalid:1" in result.stderr


def test_http_commands_import_neither_torch_nor_the_server() -> None:
    code = (
        "import sys, client.cli, client.api, client.remote;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'api', 'worker'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
