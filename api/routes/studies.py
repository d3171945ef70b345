"""Studies: create (from a definition or a preset), read with the summary table, list, cancel,
resume. The sampling happens on a worker (worker/studies.py); the API stores the study and sends
its driver's first message."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import CurrentKey, SessionDep, VisibleOwnerDep
from api.errors import ApiError, error_response
from api.queue import producer
from models import studies
from models.catalog.sizes import estimate_job
from models.keys import limits_of
from models.presets import PRESETS
from models.queries import request_cancel
from models.settings import get_settings
from models.spec import JobSpec
from models.tables import FINISHED, Job, Study, StudyStatus, StudyTrial

router = APIRouter()

StudyId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class StudyBrief(BaseModel):
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


class StudyPublic(StudyBrief):
    base_spec: dict[str, Any]
    space: dict[str, Any]
    pruner: dict[str, Any] | None
    max_concurrent: int
    reference: dict[str, Any] | None
    driver_beat_at: datetime | None
    summary: dict[str, Any] = Field(
        description="per configuration: mean, std and 95% t interval of the objective over "
        "seeds, best, time and steps to target (median over seeds), rank, and a test of the "
        "best against each other configuration with Holm-adjusted p-values"
    )


class StudiesPublic(BaseModel):
    data: list[StudyBrief]
    count: int


class PresetPublic(BaseModel):
    name: str
    description: str
    source: str
    definition: dict[str, Any]


def brief(study: Study) -> dict[str, Any]:
    return {
        "id": study.id,
        "name": study.name,
        "preset": study.preset,
        "owner": study.owner,
        "status": study.status,
        "error": study.error,
        "sampler": study.sampler,
        "objective": study.objective,
        "budget": study.budget,
        "seeds": study.seeds,
        "created_at": study.created_at,
        "finished_at": study.finished_at,
    }


def owned_study(session: SessionDep, owner: str | None, study_id: str) -> Study:
    study = studies.get_study(session=session, study_id=study_id, owner=owner)
    if study is None:
        raise ApiError(404, "not_found", f"no study {study_id}")
    return study


def send_driver(study_id: str, token: str) -> None:
    producer().send_task(
        "drive_study",
        args=[study_id, token],
        queue=f"{get_settings().queue_prefix}.any",
        retry=False,
    )


def check_sizes(definition: studies.Definition, key: Any) -> None:
    """Every job of the study must fit the key's per-job limits (as POST /v1/jobs checks); the
    study's jobs in flight (max_concurrent × seeds) must fit its active-job limit."""
    limits = limits_of(key, get_settings())
    configs = (
        list(studies.grid_configs(definition.space))
        if definition.sampler.name == "grid"
        else [cfg for _, cfg in studies.representative_configs(definition.space)]
    )
    for config in configs[: studies.MAX_VALIDATED_COMBINATIONS]:
        spec = JobSpec.model_validate(studies.apply_config(definition.base_spec, config))
        if spec.task == "solve":
            continue
        size = estimate_job(spec)
        if size.parameters > limits.max_parameters or size.work > limits.max_job_size:
            raise ApiError(
                403,
                "job_too_large",
                f"configuration {studies.config_label(definition.space, config)!r}: "
                f"{size.parameters:,} parameters, {size.work:.3g} steps × parameters; this key "
                f"allows {limits.max_parameters:,} and {limits.max_job_size:.3g} per job",
            )
    in_flight = definition.max_concurrent * len(definition.seeds)
    if in_flight > limits.max_active_jobs:
        if definition.max_concurrent > 1 and len(definition.seeds) <= limits.max_active_jobs:
            definition.max_concurrent = max(1, limits.max_active_jobs // len(definition.seeds))
        else:
            raise ApiError(
                403,
                "study_too_large",
                f"{len(definition.seeds)} seeds per configuration are more jobs at once than "
                f"this key's {limits.max_active_jobs} active jobs",
            )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StudyPublic)
def create_study(
    body: studies.StudyCreate, session: SessionDep, key: CurrentKey, response: Response
) -> Any:
    try:
        definition = studies.resolve(body)
    except studies.StudyInvalid as exc:
        return error_response(422, "validation_error", f"invalid study: {exc}", exc.details)
    check_sizes(definition, key)
    study = studies.create_study(session=session, definition=definition, owner=key.owner)
    session.commit()
    assert study.driver_token is not None
    try:
        send_driver(study.id, study.driver_token)
    except Exception as exc:  # noqa: BLE001 - the broker's own errors vary by transport
        studies.finish_study(
            session=session, study=study, status=StudyStatus.failed, error=f"not queued: {exc}"
        )
        session.commit()
        raise ApiError(503, "broker_unavailable", f"the study could not start: {exc}") from exc
    response.headers["Location"] = f"/v1/studies/{study.id}"
    return public(session, study)


def public(session: SessionDep, study: Study, test: str = "welch") -> dict[str, Any]:
    return {
        **brief(study),
        "base_spec": study.base_spec,
        "space": study.space,
        "pruner": study.pruner,
        "max_concurrent": study.max_concurrent,
        "reference": study.reference,
        "driver_beat_at": study.driver_beat_at,
        "summary": studies.summarize(session=session, study=study, test=test),  # type: ignore[arg-type]
    }


@router.get("", response_model=StudiesPublic)
def list_studies(
    session: SessionDep,
    owner: VisibleOwnerDep,
    status: StudyStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> StudiesPublic:
    found = studies.list_studies(session=session, owner=owner, status=status, limit=limit)
    return StudiesPublic(data=[StudyBrief(**brief(s)) for s in found], count=len(found))


@router.get("/presets", response_model=list[PresetPublic])
def list_presets(_: CurrentKey) -> list[PresetPublic]:
    return [
        PresetPublic(name=name, description=p.description, source=p.source, definition=p.build())
        for name, p in PRESETS.items()
    ]


@router.get(
    "/{study_id}",
    response_model=StudyPublic,
    responses={200: {"content": {"text/csv": {}, "text/markdown": {}}}},
)
def read_study(
    study_id: StudyId,
    session: SessionDep,
    owner: VisibleOwnerDep,
    format: Literal["json", "csv", "markdown"] = "json",
    test: Annotated[
        Literal["welch", "bootstrap"], Query(description="pairwise test, best vs each other")
    ] = "welch",
) -> Any:
    study = owned_study(session, owner, study_id)
    if format == "json":
        return public(session, study, test)
    summary = studies.summarize(session=session, study=study, test=test)
    if format == "csv":
        return PlainTextResponse(studies.render_csv(summary), media_type="text/csv")
    title = f"Study {study.name or study.id} ({study.status})"
    return PlainTextResponse(
        studies.render_markdown(summary, title=title), media_type="text/markdown"
    )


@router.post("/{study_id}/cancel", response_model=StudyBrief)
def cancel_study(study_id: StudyId, session: SessionDep, owner: VisibleOwnerDep) -> StudyBrief:
    """Stop sampling and cancel every job of the study that has not finished."""
    study = owned_study(session, owner, study_id)
    if study.status == StudyStatus.running:
        studies.finish_study(session=session, study=study, status=StudyStatus.canceled, error=None)
        unfinished = session.scalars(
            select(StudyTrial.job_id)
            .join(Job, Job.id == StudyTrial.job_id)
            .where(StudyTrial.study_id == study.id, Job.status.not_in(list(FINISHED)))
        ).all()
        for job_id in unfinished:
            request_cancel(session=session, job_id=job_id)
        session.commit()
    return StudyBrief(**brief(study))


@router.post("/{study_id}/resume", response_model=StudyBrief)
def resume_study(study_id: StudyId, session: SessionDep, owner: VisibleOwnerDep) -> StudyBrief:
    """Start a new driver for a running study (the old one, if any is alive, stops at its next
    round). Workers do this for every running study when they start."""
    owned_study(session, owner, study_id)
    token = studies.take_over_driver(session=session, study_id=study_id)
    session.commit()
    study = owned_study(session, owner, study_id)
    if token is None:
        raise ApiError(409, "not_running", f"study {study_id} is {study.status}")
    try:
        send_driver(study_id, token)
    except Exception as exc:  # noqa: BLE001
        raise ApiError(503, "broker_unavailable", f"the driver could not start: {exc}") from exc
    return StudyBrief(**brief(study))
