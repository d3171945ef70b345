"""client.api.Descent against the real API app in-process, and against mock transports."""

import httpx
import pytest

from client.api import Descent, DescentError, Job
from models.tables import JobStatus

MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


def test_submit_returns_a_queued_job_that_reads_back(descent: Descent) -> None:
    job = descent.submit({**MINIMAL, "name": "first", "tags": {"study": "a"}})

    assert job.status == "queued" and not job.finished
    assert job.name == "first" and job.tags == {"study": "a"}
    assert job.location == f"{descent.url}/v1/jobs/{job.id}"
    read = descent.job(job.id)
    assert read.id == job.id and read.spec_hash == job.spec_hash
    assert read.spec["schedule"]["name"] == "constant"  # the server filled in the defaults
    assert read.progress.step == 0 and read.progress.fraction is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**MINIMAL, "optimizer": {"name": "adam", "lr": -1}}, "optimizer.lr"),
        ({**MINIMAL, "model": {"name": "no_such_net"}}, "model.name"),
        ({**MINIMAL, "surprise": 1}, "surprise"),
    ],
)
def test_rejected_spec_raises_with_the_field_path(descent: Descent, spec: dict, field: str) -> None:
    with pytest.raises(DescentError) as caught:
        descent.submit(spec)

    error = caught.value
    assert (error.status, error.code) == (422, "validation_error")
    assert field in [detail.field for detail in error.details]
    assert f"  {field}: " in str(error)  # one readable line per bad field
    assert descent.jobs().count == 0


def test_unknown_job_raises_not_found(descent: Descent) -> None:
    with pytest.raises(DescentError) as caught:
        descent.job("no-such-job")
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert str(caught.value).startswith("404 not_found: ")


def test_list_filters_by_status_and_follows_cursors(descent: Descent) -> None:
    queued = [descent.submit({**MINIMAL, "name": f"job{i}"}).id for i in range(3)]
    canceled = descent.cancel(descent.submit(MINIMAL).id).id
    newest_first = [job.id for job in descent.jobs(status="queued").data]
    assert sorted(newest_first) == sorted(queued)

    first = descent.jobs(status="queued", limit=2)
    second = descent.jobs(status="queued", limit=2, cursor=first.next_cursor)

    assert first.count == 2 and first.next_cursor is not None
    assert second.count == 1 and second.next_cursor is None
    assert [job.id for job in first.data + second.data] == newest_first
    assert [job.id for job in descent.iter_jobs(status="queued", page_size=2)] == newest_first
    assert [job.id for job in descent.jobs(status="canceled").data] == [canceled]


def test_list_filters_by_tag(descent: Descent) -> None:
    tagged = descent.submit({**MINIMAL, "tags": {"study": "sweep"}}).id
    descent.submit({**MINIMAL, "tags": {"study": "other"}})
    descent.submit(MINIMAL)

    assert [job.id for job in descent.jobs(tag="study:sweep").data] == [tagged]
    assert descent.jobs(tag="study").count == 2


def test_bad_cursor_is_rejected(descent: Descent) -> None:
    with pytest.raises(DescentError) as caught:
        descent.jobs(cursor="not-a-cursor")
    assert (caught.value.status, caught.value.code) == (422, "bad_cursor")


def test_cancel_of_a_queued_job_cancels_it_at_once(descent: Descent) -> None:
    job = descent.cancel(descent.submit(MINIMAL).id)

    assert job.status == "canceled" and job.finished and job.finished_at is not None
    assert descent.job(job.id).status == "canceled"
    assert descent.cancel(job.id).status == "canceled"  # a finished job is left as it is


def test_cancel_of_a_running_job_flags_it(descent: Descent, ledger) -> None:
    job_id = descent.submit(MINIMAL).id
    ledger.start(job_id)

    job = descent.cancel(job_id)

    assert job.status == "running" and job.cancel_requested


def test_metrics_come_back_by_name_and_since_step(descent: Descent, ledger) -> None:
    job_id = descent.submit(MINIMAL).id
    attempt = ledger.start(job_id)
    rows = ledger.points("train_loss", range(1, 6)) + ledger.points("lr", range(1, 6))
    ledger.log(job_id, attempt, rows, step=5)

    everything = descent.metrics(job_id)
    loss = descent.metrics(job_id, names=["train_loss"])
    newer = descent.metrics(job_id, names=["train_loss"], since_step=3)
    thinned = descent.metrics(job_id, names=["train_loss"], max_points=2)

    assert set(everything.series) == {"train_loss", "lr"} and everything.status == "running"
    assert set(loss.series) == {"train_loss"} and loss.last_step == 5
    series = loss.series["train_loss"]
    assert series.steps == [1, 2, 3, 4, 5] and series.last == pytest.approx(0.2)
    assert series.points()[1].model_dump() == {
        "step": 2,
        "value": 0.5,
        "epoch": 0.2,
        "wall_time": pytest.approx(0.2),
    }
    assert newer.series["train_loss"].steps == [4, 5]
    assert len(thinned.series["train_loss"].steps) <= 2
    assert descent.job(job_id).progress.fraction == pytest.approx(0.5)


def test_wait_polls_until_final_and_reports_each_read(descent: Descent, ledger) -> None:
    job_id = descent.submit(MINIMAL).id
    seen: list[str] = []

    def on_update(job: Job) -> None:
        seen.append(job.status)
        if len(seen) == 2:  # the job ends between the second and the third read
            ledger.run(job_id, JobStatus.diverged)

    job = descent.wait(job_id, poll=0.01, timeout=10, on_update=on_update)

    assert seen == ["queued", "queued", "diverged"]
    assert (
        job.status == "diverged"
        and job.finished
        and job.summary
        == {
            "final_val_acc": 0.9,
            "steps": 10,
        }
    )


def test_wait_gives_up_after_timeout(descent: Descent) -> None:
    job_id = descent.submit(MINIMAL).id
    with pytest.raises(TimeoutError, match="still queued"):
        descent.wait(job_id, poll=0.01, timeout=0.05)


def test_healthy_when_the_api_answers(descent: Descent) -> None:
    assert descent.healthy()


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_unreachable_server_is_not_healthy_and_raises_descent_error() -> None:
    with Descent("http://descent.invalid", transport=httpx.MockTransport(refuse)) as descent:
        assert not descent.healthy()
        with pytest.raises(DescentError) as caught:
            descent.job("x")
    assert caught.value.status is None and caught.value.code == "unreachable"
    assert "http://descent.invalid" in str(caught.value)


def test_non_json_error_body_still_raises_descent_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="<html>Bad gateway</html>"))
    with (
        Descent("http://proxy", transport=transport) as descent,
        pytest.raises(DescentError) as caught,
    ):
        descent.jobs()
    assert (caught.value.status, caught.value.code) == (502, "http_error")
    assert "Bad gateway" in caught.value.message


def recorder(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    return httpx.MockTransport(handle)


def test_api_key_is_sent_as_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    monkeypatch.setenv("DESCENT_API_KEY", "from-env")
    monkeypatch.setenv("DESCENT_URL", "http://from-env:9000/prefix")

    Descent(transport=recorder(seen)).healthy()
    Descent(key="explicit", transport=recorder(seen)).healthy()
    Descent(key="", transport=recorder(seen)).healthy()

    assert str(seen[0].url) == "http://from-env:9000/prefix/healthz"
    assert [r.headers.get("authorization") for r in seen] == [
        "Bearer from-env",
        "Bearer explicit",
        None,
    ]


def test_no_key_sends_no_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    monkeypatch.delenv("DESCENT_API_KEY", raising=False)
    monkeypatch.delenv("DESCENT_URL", raising=False)

    Descent(transport=recorder(seen)).healthy()

    assert "authorization" not in seen[0].headers
    assert str(seen[0].url) == "http://127.0.0.1:8000/healthz"


def test_context_manager_closes_only_its_own_connection(server) -> None:
    with Descent("http://x", transport=recorder([])) as own:
        pass
    with Descent(http=server) as borrowed:
        borrowed.healthy()

    assert own._http.is_closed
    assert not server.is_closed and server.get("/healthz").status_code == 200
