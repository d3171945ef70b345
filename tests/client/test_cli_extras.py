"""`descent compare`, `descent export` and `descent study …` against the real API in-process.

Jobs are moved through the ledger with the worker's own query functions (the `ledger` fixture);
a study's driver rounds run in this process with the broker replaced by a recorder, as in
tests/api/test_studies.py.
"""

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from client import remote
from client.api import Descent
from client.cli import app
from models.db import session_scope
from models.queries import finish_job
from models.tables import JobStatus

MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


@pytest.fixture
def cli(server: TestClient, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(remote, "connect", lambda url, key: Descent(http=server, key=key))
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env={"COLUMNS": "240"})

    return invoke


def finished_job(descent: Descent, ledger, name: str, losses: list[float], lr: float) -> str:
    """A succeeded job whose train_loss at steps 1, 2, … is `losses`, and val_acc 0.9 at the
    end."""
    job_id = descent.submit({**MINIMAL, "name": name, "optimizer": {"name": "sgd", "lr": lr}}).id
    attempt = ledger.start(job_id)
    rows = [
        {"name": "train_loss", "step": s, "value": v, "epoch": s / 10, "wall_time": s * 0.5}
        for s, v in enumerate(losses, start=1)
    ]
    rows.append(
        {"name": "val_acc", "step": len(losses), "value": 0.9, "epoch": 1.0, "wall_time": 9.0}
    )
    ledger.log(job_id, attempt, rows, len(losses))
    with session_scope() as session:
        assert finish_job(
            session=session, job_id=job_id, attempt=attempt, status=JobStatus.succeeded
        )
    return job_id


def test_compare_shows_final_and_best_of_each_job(cli, descent: Descent, ledger) -> None:
    falling = finished_job(descent, ledger, "falling", [1.0, 0.5, 0.25, 0.125], lr=0.1)
    bouncing = finished_job(descent, ledger, "bouncing", [1.0, 0.2, 0.6, 0.8], lr=0.5)

    result = cli("compare", falling, bouncing, "--target", "train_loss<=0.3")

    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    # final (best): the lowest loss, the highest accuracy
    assert "0.125 (0.125)" in lines[falling] and "0.9 (0.9)" in lines[falling]
    assert "0.8 (0.2)" in lines[bouncing]
    assert "sgd 0.1" in lines[falling] and "sgd 0.5" in lines[bouncing]
    # first step at or below 0.3: step 3 (1.5 s) and step 2 (1 s)
    assert "step 3, 1.5 s" in lines[falling] and "step 2, 1.0 s" in lines[bouncing]
    assert "train_loss<=0.3" in result.stdout


def test_compare_metrics_option_and_json(cli, descent: Descent, ledger) -> None:
    first = finished_job(descent, ledger, "a", [0.4, 0.3], lr=0.1)
    second = finished_job(descent, ledger, "b", [0.5, 0.6], lr=0.2)

    table = cli("compare", first, second, "--metrics", "val_acc")
    as_json = cli("compare", first, second, "--json")

    assert table.exit_code == 0, table.output
    assert "val_acc" in table.stdout and "train_loss" not in table.stdout
    body = json.loads(as_json.stdout)
    assert [j["id"] for j in body["jobs"]] == [first, second]
    assert body["jobs"][1]["metrics"]["train_loss"]["min"] == 0.5


def test_compare_of_an_unknown_job_fails_with_a_message(cli, descent: Descent, ledger) -> None:
    known = finished_job(descent, ledger, "a", [0.4], lr=0.1)

    result = cli("compare", known, "no-such-job")

    assert result.exit_code == 3
    assert "no job no-such-job" in result.stderr


def test_export_writes_every_point_as_csv(cli, descent: Descent, ledger, tmp_path: Path) -> None:
    job_id = finished_job(descent, ledger, "a", [1.0, 0.5, 0.25], lr=0.1)

    to_stdout = cli("export", job_id)
    to_file = cli("export", job_id, "--format", "csv", "--output", str(tmp_path / "out.csv"))

    assert to_stdout.exit_code == 0 and to_file.exit_code == 0, to_file.output
    rows = list(csv.DictReader(io.StringIO(to_stdout.stdout)))
    assert len(rows) == 4
    assert rows[0] == {
        "name": "train_loss",
        "step": "1",
        "value": "1.0",
        "epoch": "0.1",
        "wall_time": "0.5",
    }
    assert (tmp_path / "out.csv").read_text() == to_stdout.stdout
    assert "4 points of 2 series" in to_file.stderr


def test_export_parquet_without_pyarrow_says_how_to_get_it(
    cli, descent: Descent, ledger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    job_id = finished_job(descent, ledger, "a", [1.0], lr=0.1)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        remote.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a),
    )

    result = cli("export", job_id, "--format", "parquet", "-o", str(tmp_path / "m.parquet"))

    assert result.exit_code == 2
    assert "parquet export needs pyarrow" in result.stderr and "--format csv" in result.stderr
    assert not (tmp_path / "m.parquet").exists()


def test_export_parquet_round_trips(cli, descent: Descent, ledger, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is optional")
    job_id = finished_job(descent, ledger, "a", [1.0, 0.5], lr=0.1)

    result = cli("export", job_id, "--format", "parquet", "-o", str(tmp_path / "m.parquet"))

    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert [(r["name"], r["step"], r["value"]) for r in table] == [
        ("train_loss", 1, 1.0),
        ("train_loss", 2, 0.5),
        ("val_acc", 2, 0.9),
    ]


def test_export_rejects_an_unknown_format(cli, descent: Descent, ledger) -> None:
    job_id = finished_job(descent, ledger, "a", [1.0], lr=0.1)
    result = cli("export", job_id, "--format", "xlsx")
    assert result.exit_code == 2 and "csv or parquet" in result.output


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch, server: TestClient) -> list[tuple]:
    """The study driver's messages recorded instead of sent (no worker runs here)."""
    sent: list[tuple] = []
    monkeypatch.setattr(
        "api.routes.studies.send_driver",
        lambda study_id, token: sent.append(("drive", study_id, token)),
    )
    monkeypatch.setattr("api.routes.jobs.enqueue", lambda job_id, queue: None)
    monkeypatch.setattr(
        "worker.studies.app.send_task",
        lambda name, args=None, **kw: sent.append(
            ("drive" if name == "drive_study" else "job", *args)
        ),
    )
    return sent


def drive_round(sent: list[tuple], study_id: str) -> None:
    from worker.studies import drive

    token = [m for m in sent if m[0] == "drive" and m[1] == study_id][-1][2]
    drive(study_id, token)


def test_study_create_from_a_preset_and_its_summary(
    cli, descent: Descent, ledger, driver: list[tuple]
) -> None:
    created = cli(
        "study", "create", "--preset", "mnist_showdown", "--seeds", "1", "--override", "epochs=1"
    )
    assert created.exit_code == 0, created.output
    study_id = created.stdout.strip()
    study = descent.study(study_id)
    assert study.preset == "mnist_showdown" and study.seeds == [0] and study.budget == 6

    drive_round(driver, study_id)
    jobs = {j.tags["config"]: j for j in descent.iter_jobs(tag=f"study:{study_id}")}
    assert set(jobs) == {"Adam", "RMSprop", "SGD+momentum", "SGD", "Adagrad", "Adadelta"}
    accuracy = {"Adam": 0.98, "RMSprop": 0.97, "SGD+momentum": 0.96, "SGD": 0.95}
    accuracy |= {"Adagrad": 0.9, "Adadelta": 0.8}
    for label, job in jobs.items():
        attempt = ledger.start(job.id)
        point = {"name": "val_acc", "step": 10, "value": accuracy[label], "epoch": 1.0}
        ledger.log(job.id, attempt, [{**point, "wall_time": 1.0}], 10)
        with session_scope() as session:
            finish_job(session=session, job_id=job.id, attempt=attempt, status=JobStatus.succeeded)
    drive_round(driver, study_id)

    summary = cli("study", "summary", study_id)
    markdown = cli("study", "summary", study_id, "--format", "markdown")
    listed = cli("study", "list")

    assert summary.exit_code == 0, summary.output
    rows = [line.split() for line in summary.stdout.splitlines() if line.strip("─ ")]
    header, first = rows[0], rows[1]
    assert "published" in header
    assert first[:2] == ["1", "Adam"] and "0.98" in first and "0.9908" in first
    assert any(row[:2] == ["6", "Adadelta"] and "0.8375" in row for row in rows)
    assert "maximize" in summary.stderr or "max val_acc" in summary.stderr
    assert markdown.exit_code == 0 and "| 0.9908 |" in markdown.stdout
    assert study_id in listed.stdout


def test_study_create_needs_a_file_or_a_preset(cli, tmp_path: Path) -> None:
    neither = cli("study", "create")
    both = cli("study", "create", str(tmp_path / "x.yaml"), "--preset", "mnist_showdown")
    assert neither.exit_code == 2 and both.exit_code == 2
    assert "--preset" in neither.output


def test_study_create_from_a_file_reports_a_bad_definition(cli, tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(
        "base: {model: {name: mlp}, data: {name: digits}, optimizer: {name: sgd}}\n"
        "space: {optimizer.lr: [0.1, 0.01]}\n"
        "seeds: 0\n"
    )
    result = cli("study", "create", str(path))
    assert result.exit_code == 2
    assert "seeds" in result.stderr


def test_submit_preset_creates_the_study_with_seeds_and_overrides(
    cli, descent: Descent, server: TestClient, driver: list[tuple]
) -> None:
    result = cli(
        "submit",
        "--preset",
        "mnist_showdown",
        "--seeds",
        "2",
        "--override",
        "epochs=1",
        "--override",
        "data.batch_size=32",
        "--name",
        "quick showdown",
    )

    assert result.exit_code == 0, result.output
    study_id = result.stdout.strip()
    study = descent.study(study_id)
    assert study.preset == "mnist_showdown" and study.name == "quick showdown"
    assert study.seeds == [0, 1] and study.status == "running"
    base = server.get(f"/v1/studies/{study_id}").json()["base_spec"]
    assert base["epochs"] == 1 and base["data"]["batch_size"] == 32
    assert f"descent study summary {study_id}" in result.stderr


def test_submit_an_unknown_preset_lists_the_valid_ones(cli, descent: Descent) -> None:
    result = cli("submit", "--preset", "mnist_shwodown")

    assert result.exit_code == 2, result.output
    assert "unknown preset 'mnist_shwodown'" in result.stderr
    assert "mnist_showdown" in result.stderr and "starting_recipe" in result.stderr
    assert result.stdout == "" and descent.studies() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give a spec file or --preset NAME"),
        (("spec.yaml", "--preset", "mnist_showdown"), "give a spec file or --preset NAME"),
        (("spec.yaml", "--seeds", "2"), "--seeds and --override go with --preset"),
        (("spec.yaml", "--override", "epochs=1"), "--seeds and --override go with --preset"),
        (("--preset", "mnist_showdown", "--tag", "a=b"), "tags go on a job spec"),
        (("--preset", "mnist_showdown", "--override", "epochs"), "want PATH=VALUE"),
    ],
)
def test_submit_wants_a_spec_file_or_a_preset(
    cli, descent: Descent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args, message
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(json.dumps(MINIMAL))

    result = cli("submit", *args)

    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()).replace("│ ", "")
    assert descent.jobs().count == 0 and descent.studies() == []


@pytest.fixture
def study_worker(ledger, driver: list[tuple], monkeypatch: pytest.MonkeyPatch):
    """A stand-in worker thread for studies: it runs each driver message as it is sent and ends
    every queued trial job succeeded. `ending` makes the study end otherwise: "failed" (its
    driver breaks) or "canceled" (after its first round, as `POST …/cancel` does)."""
    import threading

    from sqlalchemy import select

    from models import studies
    from models.tables import Job, Study, StudyStatus
    from worker.studies import drive

    ending: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def broken(study_id: str, token: str):
        raise RuntimeError("the sampler broke")

    def loop() -> None:
        handled = 0
        while not stop.wait(0.02):
            try:
                messages = [m for m in driver if m[0] == "drive"]
                for _, study_id, token in messages[handled:]:
                    if ending == ["failed"]:
                        monkeypatch.setattr("worker.studies.drive_round", broken)
                    drive(study_id, token)
                    if ending == ["canceled"]:
                        with session_scope() as session:
                            study = session.get(Study, study_id)
                            studies.finish_study(
                                session=session,
                                study=study,
                                status=StudyStatus.canceled,
                                error=None,
                            )
                handled = len(messages)
                with session_scope() as session:
                    queued = list(session.scalars(select(Job.id).where(Job.status == "queued")))
                for job_id in queued:
                    ledger.run(job_id, JobStatus.succeeded)
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield ending
    stop.set()
    thread.join(5)
    assert not errors, errors


@pytest.mark.parametrize(
    ("ending", "exit_code"), [("succeeded", 0), ("failed", 1), ("canceled", 1)]
)
def test_submit_preset_watch_follows_the_study_to_its_end(
    cli, study_worker: list[str], ending: str, exit_code: int
) -> None:
    study_worker.append(ending)

    result = cli(
        "submit",
        "--preset",
        "mnist_showdown",
        "--seeds",
        "1",
        "--override",
        "epochs=1",
        "--watch",
        "--poll",
        "0.02",
        "--timeout",
        "20",
    )

    assert result.exit_code == exit_code, result.output
    study_id = result.stdout.splitlines()[0]
    assert f"study mnist_showdown {ending}" in result.stderr
    table = result.stdout.splitlines()[1:]
    assert "configuration" in table[0]  # the summary table, rows or not
    if ending == "succeeded":
        assert "6/6 trials" in result.stderr  # the progress bar, at its end
        labels = {"Adam", "RMSprop", "SGD+momentum", "SGD", "Adagrad", "Adadelta"}
        assert {row.split()[1] for row in table[1:] if row.strip("─ ")} == labels
    elif ending == "failed":
        assert "0/6 trials" in result.stderr
        assert "RuntimeError: the sampler broke" in result.stderr
    assert f"descent study summary {study_id}" in result.stderr


def test_submit_preset_watch_gives_up_after_timeout(cli, driver: list[tuple]) -> None:
    result = cli(
        "submit", "--preset", "mnist_showdown", "--watch", "--poll", "0.02", "--timeout", "0.1"
    )

    assert result.exit_code == 3, result.output
    study_id = result.stdout.strip()
    assert f"study {study_id} is still running" in result.stderr
    assert f"descent study summary {study_id}" in result.stderr
