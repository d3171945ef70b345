"""A small typed Python client for the Descent HTTP API.

    from client.api import Descent

    with Descent("http://127.0.0.1:8000") as descent:
        job = descent.submit({"model": {"name": "mlp"}, "data": {"name": "digits"},
                              "optimizer": {"name": "adam"}})
        job = descent.wait(job.id, on_update=lambda j: print(j.status, j.progress.step))
        print(job.summary, descent.metrics(job.id, names=["val_acc"]).series["val_acc"].values)

It speaks HTTP only: the response models below mirror the API's JSON and are defined here, so
the client needs neither the server's packages nor torch. Unknown response fields are ignored,
so a newer server does not break an older client. Every failure raises `DescentError`.
"""

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "diverged"})
STUDY_FINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Progress(_Response):
    step: int
    total_steps: int | None
    epoch: float
    total_epochs: float | None
    fraction: float | None


class Job(_Response):
    """One job as the API reports it. `spec` has every default filled in."""

    id: str
    name: str | None
    owner: str
    tags: dict[str, Any]
    status: str
    spec: dict[str, Any]
    spec_hash: str
    attempt: int
    worker: str | None
    cancel_requested: bool
    progress: Progress
    error: str | None
    summary: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    location: str | None = Field(
        None, exclude=True, description="absolute URL from the Location header (submit only)"
    )

    @property
    def finished(self) -> bool:
        """True once the status is final: succeeded, failed, canceled or diverged."""
        return self.status in FINAL_STATUSES


class JobPage(_Response):
    """One page of `GET /v1/jobs`, newest first. Pass `next_cursor` back for the next page."""

    data: list[Job]
    count: int
    next_cursor: str | None


class Point(_Response):
    step: int
    value: float | None
    epoch: float | None
    wall_time: float


class Series(_Response):
    """One metric's points, in step order, as parallel lists."""

    steps: list[int]
    values: list[float | None]
    epochs: list[float | None]
    wall_times: list[float]

    def points(self) -> list[Point]:
        rows = zip(self.steps, self.values, self.epochs, self.wall_times, strict=True)
        return [Point(step=s, value=v, epoch=e, wall_time=w) for s, v, e, w in rows]

    @property
    def last(self) -> float | None:
        """The newest value, None when the series is empty."""
        return self.values[-1] if self.values else None


class Metrics(_Response):
    job_id: str
    status: str
    series: dict[str, Series]
    last_step: int | None = Field(description="pass as since_step to read only newer points")


class CompareCurve(_Response):
    """One series of one job on the comparison's x axis (step, epoch or wall time)."""

    x: list[float | None]
    y: list[float]
    steps: list[int]


class SeriesStats(_Response):
    count: int
    final: float
    final_step: int
    min: float
    min_step: int
    max: float
    max_step: int


class TargetHit(_Response):
    reached: bool
    step: int | None
    time_s: float | None
    epoch: float | None


class CompareJob(_Response):
    """One job's row of the comparison table: final, lowest and highest value per series."""

    id: str
    name: str | None
    status: str
    tags: dict[str, Any]
    metrics: dict[str, SeriesStats]
    target: TargetHit | None = None


class Comparison(_Response):
    x: str
    max_points: int
    target: dict[str, Any] | None
    jobs: list[CompareJob]
    series: dict[str, dict[str, CompareCurve]] = Field(description="job id → series → curve")


class StudyRow(_Response):
    """One configuration of a study: its objective over seeds and how it ranks."""

    number: int
    label: str
    state: str
    seeds: int
    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    best: float | None
    values: list[float | None]
    job_ids: list[str]
    rank: int | None
    published: float | None = None
    reached: str | None = None
    steps_to_target: float | None = None
    time_to_target_s: float | None = None
    vs_best: dict[str, Any] | None = None


class StudySummary(_Response):
    objective: dict[str, Any]
    confidence: float
    configurations: int
    budget: int
    jobs: int
    jobs_by_status: dict[str, int]
    reference: dict[str, Any] | None
    rows: list[StudyRow]


class Study(_Response):
    """A study as `GET /v1/studies` lists it; `summary` is there when read one by one."""

    id: str
    name: str | None
    preset: str | None
    owner: str
    status: str
    error: str | None
    sampler: dict[str, Any]
    objective: dict[str, Any]
    budget: int
    seeds: list[int]
    created_at: datetime
    finished_at: datetime | None
    summary: StudySummary | None = None

    @property
    def finished(self) -> bool:
        """True once the study has ended: succeeded, failed or canceled."""
        return self.status in STUDY_FINAL_STATUSES

    def trials(self) -> tuple[int, int]:
        """(finished, planned) trial jobs. Planned is budget × seeds, or the jobs made so far
        when there are more; without a summary (a listed study) nothing is known finished."""
        planned = self.budget * len(self.seeds)
        if self.summary is None:
            return 0, planned
        by_status = self.summary.jobs_by_status
        done = sum(count for status, count in by_status.items() if status in FINAL_STATUSES)
        return done, max(planned, self.summary.jobs)


class ErrorDetail(_Response):
    field: str
    message: str
    type: str


class DescentError(Exception):
    """The API refused a request, or could not be reached (then `status` is None).

    `code` is the API's machine-readable code (`validation_error`, `not_found`, …) or, without a
    response, `unreachable` / `timeout`. For a rejected spec, `details` names each bad field.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: list[ErrorDetail] | tuple[ErrorDetail, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = tuple(details)

    def __str__(self) -> str:
        head = f"{self.status} {self.code}" if self.status is not None else self.code
        lines = [f"{head}: {self.message}"]
        lines += [f"  {d.field or '(body)'}: {d.message}" for d in self.details]
        return "\n".join(lines)

    @classmethod
    def from_response(cls, response: httpx.Response) -> "DescentError":
        """Read the API's error body; anything else (a proxy's HTML page) becomes `http_error`."""
        try:
            error = response.json()["error"]
            details = [ErrorDetail.model_validate(d) for d in error.get("details") or []]
            return cls(response.status_code, str(error["code"]), str(error["message"]), details)
        except (ValueError, KeyError, TypeError):
            text = response.text.strip()[:200] or response.reason_phrase
            return cls(response.status_code, "http_error", text)


class Descent:
    """A client for one Descent server.

    `url` defaults to $DESCENT_URL, else http://127.0.0.1:8000. `key` defaults to
    $DESCENT_API_KEY and is sent as `Authorization: Bearer <key>`; pass "" to send none.
    `transport` is handed to httpx (e.g. `httpx.MockTransport`); `http` is an existing
    `httpx.Client` (e.g. FastAPI's TestClient) used as is, with its own base URL, and not closed.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        key = os.environ.get("DESCENT_API_KEY") if key is None else key
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._owns_http = http is None
        if http is None:
            base = url or os.environ.get("DESCENT_URL") or DEFAULT_URL
            http = httpx.Client(base_url=base, timeout=timeout, transport=transport)
        self._http = http
        self.url = str(http.base_url).rstrip("/")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (not one passed in as `http`)."""
        if self._owns_http:
            self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method, path, params=params, json=json, headers=self._headers
            )
        except httpx.TimeoutException as exc:
            raise DescentError(None, "timeout", f"{self.url} did not answer: {exc}") from exc
        except httpx.TransportError as exc:
            raise DescentError(None, "unreachable", f"cannot reach {self.url}: {exc}") from exc
        if response.is_error:
            raise DescentError.from_response(response)
        return response

    @staticmethod
    def _job_path(job_id: str) -> str:
        return f"/v1/jobs/{quote(job_id, safe='')}"

    def submit(self, spec: dict[str, Any]) -> Job:
        """Queue a job. A spec the API rejects raises DescentError(422, "validation_error")."""
        response = self._request("POST", "/v1/jobs", json=spec)
        location = response.headers.get("Location")
        job = Job.model_validate(response.json())
        if location:
            job = job.model_copy(update={"location": str(response.url.join(location))})
        return job

    def job(self, job_id: str) -> Job:
        """Read one job (404 → DescentError with code `not_found`)."""
        return Job.model_validate(self._request("GET", self._job_path(job_id)).json())

    def jobs(
        self,
        status: str | None = None,
        tag: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first. `tag` is `key` or `key:value`."""
        params = {"status": status, "tag": tag, "limit": limit, "cursor": cursor}
        return JobPage.model_validate(self._request("GET", "/v1/jobs", params=params).json())

    def iter_jobs(
        self, status: str | None = None, tag: str | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """Every matching job, newest first, following the cursors page by page."""
        cursor = None
        while True:
            page = self.jobs(status=status, tag=tag, limit=page_size, cursor=cursor)
            yield from page.data
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one at once, a running one at its next flush (it then shows
        `cancel_requested`). A finished job is returned unchanged."""
        return Job.model_validate(self._request("POST", f"{self._job_path(job_id)}/cancel").json())

    def metrics(
        self,
        job_id: str,
        names: list[str] | None = None,
        since_step: int | None = None,
        max_points: int | None = None,
    ) -> Metrics:
        """Metric series of a job. Pass the previous answer's `last_step` as `since_step` to
        read only newer points; `max_points` downsamples each series (spikes kept)."""
        params = {
            "names": ",".join(names) if names else None,
            "since_step": since_step,
            "max_points": max_points,
        }
        path = f"{self._job_path(job_id)}/metrics"
        return Metrics.model_validate(self._request("GET", path, params=params).json())

    def compare(
        self,
        job_ids: list[str],
        metrics: list[str] | None = None,
        x: str = "step",
        max_points: int = 500,
        target: str | None = None,
    ) -> Comparison:
        """Several jobs' series on one x axis (`step`, `epoch` or `time`), each downsampled to
        `max_points` on the server, with final/lowest/highest per series. `target` such as
        `val_acc>=0.97` adds when each job first reached it."""
        params = {
            "jobs": ",".join(job_ids),
            "metrics": ",".join(metrics) if metrics else None,
            "x": x,
            "max_points": max_points,
            "target": target,
        }
        return Comparison.model_validate(self._request("GET", "/v1/compare", params=params).json())

    def create_study(self, definition: dict[str, Any]) -> Study:
        """Start a study: a definition (base spec, space, sampler, seeds, objective) or
        `{"preset": NAME, ...}` with any field of the preset replaced."""
        return Study.model_validate(self._request("POST", "/v1/studies", json=definition).json())

    def study(self, study_id: str) -> Study:
        """One study with its summary table."""
        path = f"/v1/studies/{quote(study_id, safe='')}"
        return Study.model_validate(self._request("GET", path).json())

    def study_report(self, study_id: str, format: str = "markdown") -> str:
        """The summary table rendered by the server: `markdown` or `csv`."""
        path = f"/v1/studies/{quote(study_id, safe='')}"
        return self._request("GET", path, params={"format": format}).text

    def studies(self, status: str | None = None, limit: int = 50) -> list[Study]:
        """Studies, newest first (without their summaries)."""
        params = {"status": status, "limit": limit}
        data = self._request("GET", "/v1/studies", params=params).json()["data"]
        return [Study.model_validate(s) for s in data]

    def wait(
        self,
        job_id: str,
        poll: float = 0.5,
        timeout: float | None = None,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job's status is final and return it. `on_update` is called with every
        job read, the final one included. Raises TimeoutError after `timeout` seconds."""
        return _poll(lambda: self.job(job_id), f"job {job_id}", poll, timeout, on_update)

    def wait_study(
        self,
        study_id: str,
        poll: float = 1.0,
        timeout: float | None = None,
        on_update: Callable[[Study], None] | None = None,
    ) -> Study:
        """Poll until the study has ended and return it, with its summary. `on_update` is
        called with every read (`Study.trials()` says how far it is). Raises TimeoutError after
        `timeout` seconds."""
        return _poll(lambda: self.study(study_id), f"study {study_id}", poll, timeout, on_update)

    def healthy(self) -> bool:
        """True when the API process answers `GET /healthz`; never raises."""
        try:
            self._request("GET", "/healthz")
        except DescentError:
            return False
        return True


Polled = TypeVar("Polled", Job, Study)


def _poll(
    read: Callable[[], Polled],
    what: str,
    poll: float,
    timeout: float | None,
    on_update: Callable[[Polled], None] | None,
) -> Polled:
    """`read()` every `poll` seconds until what it returns is `finished`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = read()
        if on_update is not None:
            on_update(current)
        if current.finished:
            return current
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{what} is still {current.status} after {timeout}s")
        time.sleep(poll)
