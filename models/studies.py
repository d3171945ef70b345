"""Studies: a base spec, a space over any of its fields, a sampler, seeds and an objective.

A study's trials are ordinary jobs. Configuration `number` (one sampler trial) runs once per
seed; each run is a job linked by a StudyTrial row. Everything the sampler knows is stored in
those rows and the study row, so the driver (worker/studies.py) keeps nothing in memory between
rounds, and this module alone answers "what state is the study in" for the API and the driver.

The space maps a spec path to values:
- a list, or `{"type": "choice", "values": [...], "labels": [...]}`: one of these values;
  a value may be a whole component (`"optimizer": [{"name": "adam"}, {"name": "sgd", ...}]`);
- `{"type": "float", "low", "high", "log"}` / `{"type": "int", ...}`: a range (sampled only);
- `"variant"`: a choice of patches, each `{path: value, …}` applied together (a ladder of
  recipes that differ in several fields at once).
Paths are applied shallowest first. Setting a component's `name` to a different one drops that
component's `args` (they belong to the old name) unless the configuration sets them too.
"""

import csv
import io
import itertools
import json
import math
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import stats
from models.queries import create_job
from models.series import first_reaching, summaries
from models.spec import JobSpec, describe_errors
from models.tables import Job, JobStatus, Study, StudyStatus, StudyTrial, utcnow

MAX_JOBS_PER_STUDY = 10_000
MAX_VALIDATED_COMBINATIONS = 4096
PATH = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"
VARIANT = "variant"
METRIC = r"^[a-z][a-z0-9_]{0,63}(/[a-z0-9_]{1,63})?$"  # `val_acc`, or a solve job's `label/metric`


class StudyInvalid(ValueError):
    """A study definition that cannot run; `details` are `{field, message, type}` like spec
    validation errors."""

    def __init__(self, details: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{d['field']}: {d['message']}" for d in details))
        self.details = details


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------
# The definition


class FloatRange(Strict):
    type: Literal["float"]
    low: float = Field(ge=-1e12, le=1e12)
    high: float = Field(ge=-1e12, le=1e12)
    log: bool = False
    step: float | None = Field(None, gt=0.0, le=1e12)

    @model_validator(mode="after")
    def _ordered(self) -> "FloatRange":
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self


class IntRange(Strict):
    type: Literal["int"]
    low: int = Field(ge=-(2**31), le=2**31 - 1)
    high: int = Field(ge=-(2**31), le=2**31 - 1)
    log: bool = False
    step: int = Field(1, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("a log range needs low > 0 and step 1")
        return self


class Choice(Strict):
    type: Literal["choice"] = "choice"
    values: list[Any] = Field(min_length=1, max_length=256)
    labels: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, description="names for the values in reports, one per value"
    )

    @model_validator(mode="after")
    def _labels_match(self) -> "Choice":
        if self.labels is not None and len(self.labels) != len(self.values):
            raise ValueError(f"{len(self.labels)} labels for {len(self.values)} values")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct")
        return self

    def label(self, index: int) -> str:
        if self.labels is not None:
            return self.labels[index]
        return _compact(self.values[index])


Dimension = Annotated[Union[FloatRange, IntRange, Choice], Field(discriminator="type")]  # noqa: UP007


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value, separators=(",", ":"), sort_keys=True)[:100]


class NoArgs(Strict):
    pass


class TPEArgs(Strict):
    n_startup_trials: int = Field(5, ge=1, le=1000, description="random trials before TPE")
    multivariate: bool = True
    constant_liar: bool = Field(True, description="treat running trials as pessimistic results")


class CmaEsArgs(Strict):
    popsize: int | None = Field(None, ge=2, le=1000)
    sigma0: float | None = Field(None, gt=0.0, le=1e6)
    n_startup_trials: int = Field(0, ge=0, le=1000)


class NSGA2Args(Strict):
    population_size: int = Field(8, ge=2, le=1000)
    mutation_prob: float | None = Field(None, ge=0.0, le=1.0)
    crossover_prob: float = Field(0.9, ge=0.0, le=1.0)


SAMPLER_ARGS: dict[str, type[Strict]] = {
    "grid": NoArgs,
    "random": NoArgs,
    "tpe": TPEArgs,
    "cmaes": CmaEsArgs,
    "nsga2": NSGA2Args,
}


class SamplerSpec(Strict):
    name: Literal["grid", "random", "tpe", "cmaes", "nsga2"] = "grid"
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the sampler's own random seed")
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _args_of_this_sampler(self) -> "SamplerSpec":
        self.args = SAMPLER_ARGS[self.name].model_validate(self.args).model_dump()
        return self


class MedianPrunerArgs(Strict):
    n_startup_trials: int = Field(3, ge=0, le=1000, description="finished configurations first")
    n_warmup_steps: int = Field(0, ge=0, le=10_000_000, description="never prune before")


class HalvingPrunerArgs(Strict):
    min_resource: int | Literal["auto"] = Field("auto", description="steps of the first rung")
    reduction_factor: int = Field(3, ge=2, le=100)
    min_early_stopping_rate: int = Field(0, ge=0, le=100)


PRUNER_ARGS: dict[str, type[Strict]] = {
    "median": MedianPrunerArgs,
    "successive_halving": HalvingPrunerArgs,
}


class PrunerSpec(Strict):
    """Stops configurations whose objective, as evaluated during training, trails the others.
    The objective must then be an evaluation metric (`val_…`), read at each evaluation."""

    name: Literal["median", "successive_halving"]
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _args_of_this_pruner(self) -> "PrunerSpec":
        self.args = PRUNER_ARGS[self.name].model_validate(self.args).model_dump()
        return self


class ObjectiveSpec(Strict):
    metric: str = Field("val_loss", pattern=METRIC, max_length=64)
    direction: Literal["max", "min"] | None = Field(
        None, description="default: max for accuracies, min for losses and errors"
    )
    at: Literal["final", "best"] = Field("final", description="the last value, or the best")
    target: float | None = Field(
        None, ge=-1e12, le=1e12, description="for time and steps to target (AlgoPerf style)"
    )

    @model_validator(mode="after")
    def _direction(self) -> "ObjectiveSpec":
        if self.direction is None:
            if "acc" in self.metric:
                self.direction = "max"
            elif "loss" in self.metric or "error" in self.metric or "residual" in self.metric:
                self.direction = "min"
            else:
                raise ValueError(f"say whether {self.metric!r} is better high or low: direction")
        return self


class ReferenceSpec(Strict):
    """Published numbers to print beside ours, by configuration label."""

    source: str = Field(max_length=500)
    metric: str = Field(pattern=METRIC, max_length=64)
    values: dict[Annotated[str, Field(max_length=100)], float] = Field(max_length=256)
    note: str | None = Field(None, max_length=2000)


class StudyCreate(Strict):
    """`POST /v1/studies`. With `preset`, the preset fills every field left out, and
    `overrides` (spec path → value) adjust its base spec, e.g. `{"epochs": 1}`."""

    name: str | None = Field(None, max_length=200)
    preset: str | None = Field(None, max_length=64)
    base: dict[str, Any] | None = Field(None, description="a job spec")
    overrides: dict[Annotated[str, Field(pattern=PATH)], Any] = Field(
        default_factory=dict, max_length=64
    )
    space: dict[Annotated[str, Field(pattern=PATH)], Dimension] | None = Field(None, max_length=32)
    sampler: SamplerSpec = Field(default_factory=lambda: SamplerSpec.model_validate({}))
    budget: int | None = Field(
        None, ge=1, le=MAX_JOBS_PER_STUDY, description="configurations; default: the whole grid"
    )
    seeds: int | list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        1, description="replicates per configuration: a count, or the seeds themselves"
    )
    objective: ObjectiveSpec = Field(default_factory=lambda: ObjectiveSpec.model_validate({}))
    pruner: PrunerSpec | None = None
    max_concurrent: int | None = Field(
        None, ge=1, le=MAX_JOBS_PER_STUDY, description="configurations in flight at once"
    )
    reference: ReferenceSpec | None = None

    @field_validator("space", mode="before")
    @classmethod
    def _lists_are_choices(cls, space: Any) -> Any:
        if isinstance(space, dict):
            return {
                path: {"type": "choice", "values": dim} if isinstance(dim, list) else dim
                for path, dim in space.items()
            }
        return space

    @field_validator("seeds")
    @classmethod
    def _seed_count(cls, seeds: int | list[int]) -> int | list[int]:
        if isinstance(seeds, int) and not 1 <= seeds <= 100:
            raise ValueError("between 1 and 100 seeds")
        if isinstance(seeds, list) and not (
            1 <= len(seeds) <= 100 and len(set(seeds)) == len(seeds)
        ):
            raise ValueError("1 to 100 distinct seeds")
        return seeds


@dataclass
class Definition:
    """A complete, checked study: what is stored on the study row."""

    name: str | None
    preset: str | None
    base_spec: dict[str, Any]
    space: dict[str, Choice | FloatRange | IntRange]
    sampler: SamplerSpec
    budget: int
    seeds: list[int]
    objective: ObjectiveSpec
    pruner: PrunerSpec | None
    max_concurrent: int
    reference: ReferenceSpec | None


def _error(field: str, message: str, kind: str = "value_error") -> StudyInvalid:
    return StudyInvalid([{"field": field, "message": message, "type": kind}])


def set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = spec
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    last = parts[-1]
    if last == "name" and node.get("name") != value:
        node.pop("args", None)  # the old component's options
    node[last] = value


def apply_config(base: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The base spec with a configuration's values set, shallowest paths first."""
    spec = json.loads(json.dumps(base))
    patches: list[tuple[str, Any]] = []
    for path, value in config.items():
        if path == VARIANT:
            patches.extend(value.items())
        else:
            patches.append((path, value))
    for path, value in sorted(patches, key=lambda item: item[0].count(".")):
        set_path(spec, path, json.loads(json.dumps(value)))
    return spec


def trial_spec(
    definition_base: dict[str, Any],
    config: dict[str, Any],
    *,
    seed: int,
    study_id: str,
    study_name: str | None,
    number: int,
    label: str,
) -> dict[str, Any]:
    spec = apply_config(definition_base, config)
    spec["seed"] = seed
    spec["tags"] = {
        **spec.get("tags", {}),
        "study": study_id,
        "study_config": str(number),
        "config": label[:256],
    }
    spec["name"] = f"{study_name or 'study'}: {label} (seed {seed})"[:200]
    return spec


def config_label(space: dict[str, Any], config: dict[str, Any]) -> str:
    """`Adam`; or `Adam, lr=0.001` when several dimensions vary (a labelled choice shows its
    label, anything else `last.path.part=value`)."""
    parts = []
    for path, dim in space.items():
        value = config[path]
        if isinstance(dim, Choice) and dim.labels and value in dim.values:
            parts.append(dim.label(dim.values.index(value)))
        else:
            parts.append(f"{path.rsplit('.', 1)[-1]}={_compact(value)}")
    return ", ".join(parts)[:200]


def grid_configs(space: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every combination, first dimension slowest, in the order the values were given."""
    paths = list(space)
    for values in itertools.product(*(space[p].values for p in paths)):
        yield dict(zip(paths, values, strict=True))


def grid_config(space: dict[str, Any], number: int) -> dict[str, Any]:
    """The `number`-th combination of grid_configs, without listing the ones before it."""
    config = {}
    for path in reversed(list(space)):
        values = space[path].values
        number, index = divmod(number, len(values))
        config[path] = values[index]
    return {path: config[path] for path in space}


def config_from_params(space: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Sampler parameters (a choice is its index) → spec values."""
    return {
        path: dim.values[int(params[path])] if isinstance(dim, Choice) else params[path]
        for path, dim in space.items()
    }


def representative_configs(space: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Configurations to validate before anything runs: every combination of the choices and
    the ends of the ranges when there are few, else each value of each dimension alone."""
    options: dict[str, list[Any]] = {
        path: list(dim.values) if isinstance(dim, Choice) else [dim.low, dim.high]
        for path, dim in space.items()
    }
    if math.prod(len(v) for v in options.values()) <= MAX_VALIDATED_COMBINATIONS:
        for combination in itertools.product(*options.values()):
            config = dict(zip(options, combination, strict=True))
            yield ", ".join(f"{p}={_compact(v)}" for p, v in config.items()), config
        return
    first = {path: list(values)[0] for path, values in options.items()}
    for path, values in options.items():
        for i, value in enumerate(values):
            yield f"space.{path}[{i}]", {**first, path: value}


def resolve(request: StudyCreate, *, presets: dict[str, Any] | None = None) -> Definition:
    """Fill in a preset, check every configuration the space can produce, and set defaults.
    Raises StudyInvalid with field paths."""
    data = request.model_dump(exclude_unset=True)
    if request.preset is not None:
        from models.presets import PRESETS

        catalog = presets if presets is not None else PRESETS
        if request.preset not in catalog:
            choices = ", ".join(repr(name) for name in catalog)
            raise _error("preset", f"unknown preset {request.preset!r}; valid choices: {choices}")
        preset = catalog[request.preset].build()
        data = {**preset, **{k: v for k, v in data.items() if k != "preset"}}
        data["preset"] = request.preset
        try:
            request = StudyCreate.model_validate(data)
        except ValidationError as exc:
            raise StudyInvalid(describe_errors(list(exc.errors()))) from exc
    if request.base is None or request.space is None:
        raise _error("base" if request.base is None else "space", "required without a preset")
    base = json.loads(json.dumps(request.base))
    for path, value in request.overrides.items():
        set_path(base, path, value)
    try:
        validated = JobSpec.model_validate(base)
    except ValidationError as exc:
        details = describe_errors(list(exc.errors()))
        raise StudyInvalid(
            [{**d, "field": f"base.{d['field']}" if d["field"] else "base"} for d in details]
        ) from exc
    base_spec = validated.model_dump(mode="json", exclude_unset=True)
    space = dict(request.space)
    if not space:
        raise _error("space", "at least one dimension (use seeds alone? give a one-value list)")
    for path, dim in space.items():
        if path == VARIANT:
            if not isinstance(dim, Choice):
                raise _error("space.variant", "a variant is a choice of patches")
            for i, patch in enumerate(dim.values):
                if not isinstance(patch, dict) or not patch:
                    raise _error(f"space.variant.values[{i}]", "a patch is {path: value, …}")
    seeds = (
        list(request.seeds)
        if isinstance(request.seeds, list)
        else [validated.seed + i for i in range(request.seeds)]
    )
    sampler = request.sampler
    listed = [len(d.values) for d in space.values() if isinstance(d, Choice)]
    grid: int | None = math.prod(listed) if len(listed) == len(space) else None
    if sampler.name == "grid" and grid is None:
        ranged = [p for p, d in space.items() if not isinstance(d, Choice)]
        raise _error(
            f"space.{ranged[0]}",
            "the grid sampler takes lists of values; sample ranges with random, tpe, cmaes "
            "or nsga2",
        )
    budget = request.budget or (grid if sampler.name == "grid" else 20)
    assert budget is not None
    if sampler.name == "grid" and grid is not None and budget > grid:
        raise _error("budget", f"the grid has {grid} configurations; budget {budget} is more")
    if budget * len(seeds) > MAX_JOBS_PER_STUDY:
        raise _error(
            "budget",
            f"{budget} configurations × {len(seeds)} seeds is over {MAX_JOBS_PER_STUDY} jobs",
        )
    objective = request.objective
    if request.pruner is not None and not objective.metric.startswith("val_"):
        raise _error("pruner", "pruning reads the objective at each evaluation: use a val_… metric")
    # Every configuration the space can produce must be a valid spec (or a representative set).
    for where, config in representative_configs(space):
        candidate = trial_spec(
            base_spec,
            config,
            seed=seeds[-1],
            study_id=str(uuid.UUID(int=0)),
            study_name=request.name,
            number=budget,
            label="x" * 200,
        )
        try:
            JobSpec.model_validate(candidate)
        except ValidationError as exc:
            details = describe_errors(list(exc.errors()))
            raise StudyInvalid(
                [{**d, "field": f"space ({where}): {d['field']}"} for d in details]
            ) from exc
    default_concurrent = budget if sampler.name == "grid" else min(4, budget)
    return Definition(
        name=request.name,
        preset=request.preset,
        base_spec=base_spec,
        space=space,
        sampler=sampler,
        budget=budget,
        seeds=seeds,
        objective=objective,
        pruner=request.pruner,
        max_concurrent=request.max_concurrent or default_concurrent,
        reference=request.reference,
    )


def parse_space(stored: dict[str, Any]) -> dict[str, Choice | FloatRange | IntRange]:
    return StudyCreate.model_validate({"space": stored}).space or {}


# ---------------------------------------------------------------------------------------------
# Storing and reading


def create_study(*, session: Session, definition: Definition, owner: str) -> Study:
    study = Study(
        id=str(uuid.uuid4()),
        owner=owner,
        name=definition.name,
        preset=definition.preset,
        base_spec=definition.base_spec,
        space={p: d.model_dump(mode="json") for p, d in definition.space.items()},
        sampler=definition.sampler.model_dump(mode="json"),
        objective=definition.objective.model_dump(mode="json"),
        pruner=definition.pruner.model_dump(mode="json") if definition.pruner else None,
        seeds=definition.seeds,
        budget=definition.budget,
        max_concurrent=definition.max_concurrent,
        reference=definition.reference.model_dump(mode="json") if definition.reference else None,
        status=StudyStatus.running,
        sampler_state={},
        driver_token=str(uuid.uuid4()),
    )
    session.add(study)
    session.flush()
    return study


def get_study(*, session: Session, study_id: str, owner: str | None = None) -> Study | None:
    study = session.get(Study, study_id)
    if study is None or (owner is not None and study.owner != owner):
        return None
    return study


def list_studies(
    *, session: Session, owner: str | None, status: str | None = None, limit: int = 50
) -> list[Study]:
    query = select(Study).order_by(Study.created_at.desc(), Study.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(Study.owner == owner)
    if status is not None:
        query = query.where(Study.status == status)
    return list(session.scalars(query))


def take_over_driver(*, session: Session, study_id: str) -> str | None:
    """A new driver token for a running study (older driver messages then stop at once).
    None when the study is not running."""
    study = session.get(Study, study_id, with_for_update=True)
    if study is None or study.status != StudyStatus.running:
        return None
    study.driver_token = str(uuid.uuid4())
    session.flush()
    return study.driver_token


def add_trial_jobs(
    *,
    session: Session,
    study: Study,
    number: int,
    config: dict[str, Any],
    params: dict[str, Any],
    system_attrs: dict[str, Any],
    label: str,
) -> list[Job]:
    """One job per seed for configuration `number`, queued in the ledger (the caller sends them
    to the broker after commit and then marks the rows enqueued)."""
    jobs = []
    for seed in study.seeds:
        spec = JobSpec.model_validate(
            trial_spec(
                study.base_spec,
                config,
                seed=seed,
                study_id=study.id,
                study_name=study.name,
                number=number,
                label=label,
            )
        )
        job = create_job(
            session=session,
            spec=spec,
            submitted=spec.model_dump(mode="json", exclude_unset=True),
            owner=study.owner,
        )
        session.add(
            StudyTrial(
                job_id=job.id,
                study_id=study.id,
                number=number,
                seed=seed,
                label=label,
                config=config,
                params=params,
                system_attrs=system_attrs,
            )
        )
        jobs.append(job)
    session.flush()
    return jobs


@dataclass
class Run:
    """One job of a configuration."""

    job_id: str
    seed: int
    status: str
    queue: str
    enqueued: bool
    step: int
    value: float | None = None  # the objective, once the job has succeeded
    steps_to_target: int | None = None
    time_to_target: float | None = None


@dataclass
class Config:
    """One configuration (a sampler trial) and its runs over seeds."""

    number: int
    label: str
    config: dict[str, Any]
    params: dict[str, Any]
    system_attrs: dict[str, Any]
    pruned: bool
    runs: list[Run] = field(default_factory=list)

    @property
    def state(self) -> str:
        if any(not JobStatus(r.status).finished for r in self.runs):
            return "pruned" if self.pruned else "running"
        if self.pruned:
            return "pruned"
        return "complete" if any(r.value is not None for r in self.runs) else "failed"

    @property
    def values(self) -> list[float]:
        return [r.value for r in self.runs if r.value is not None]

    @property
    def value(self) -> float | None:
        values = self.values
        return sum(values) / len(values) if values else None


def objective_value(summary: Any, objective: dict[str, Any]) -> float | None:
    if summary is None:
        return None
    if objective["at"] == "final":
        value = summary.last_value
    else:
        value = summary.max_value if objective["direction"] == "max" else summary.min_value
    return None if value is None or not math.isfinite(value) else float(value)


def load_configs(*, session: Session, study: Study, with_targets: bool = False) -> list[Config]:
    """Every configuration of the study with its runs, objective values from the per-series
    summaries (succeeded jobs only: a diverged, failed or canceled run has no result)."""
    rows = session.execute(
        select(StudyTrial, Job.status, Job.queue, Job.step)
        .join(Job, Job.id == StudyTrial.job_id)
        .where(StudyTrial.study_id == study.id)
        .order_by(StudyTrial.number, StudyTrial.seed)
    ).all()
    configs: dict[int, Config] = {}
    for trial, status, queue, step in rows:
        config = configs.get(trial.number)
        if config is None:
            config = configs[trial.number] = Config(
                number=trial.number,
                label=trial.label,
                config=trial.config,
                params=trial.params,
                system_attrs=trial.system_attrs,
                pruned=trial.pruned,
            )
        config.runs.append(
            Run(
                job_id=trial.job_id,
                seed=trial.seed,
                status=status,
                queue=queue,
                enqueued=trial.enqueued,
                step=step,
            )
        )
    objective = study.objective
    done = [r for c in configs.values() for r in c.runs if r.status == JobStatus.succeeded]
    if done:
        known = summaries(
            session=session, job_ids=[r.job_id for r in done], names=[objective["metric"]]
        )
        for run in done:
            run.value = objective_value(known.get((run.job_id, objective["metric"])), objective)
        if with_targets and objective.get("target") is not None:
            keys = [(r.job_id, objective["metric"]) for r in done]
            reached = first_reaching(
                session=session,
                keys=keys,
                threshold=objective["target"],
                mode=objective["direction"],
                known=known,
            )
            for run in done:
                hit = reached.get((run.job_id, objective["metric"]))
                if hit is not None:
                    run.steps_to_target, run.time_to_target = hit[0], hit[1]
    return [configs[n] for n in sorted(configs)]


# ---------------------------------------------------------------------------------------------
# The summary table


def summarize(
    *, session: Session, study: Study, test: Literal["welch", "bootstrap"] = "welch"
) -> dict[str, Any]:
    """Per configuration: the objective over seeds (mean, std, 95% t interval, best), time and
    steps to target (median over seeds, a seed that never reached it counted as never), rank,
    and a test of the best configuration against each other one (Holm-adjusted p-values)."""
    configs = load_configs(session=session, study=study, with_targets=True)
    objective = study.objective
    maximize = objective["direction"] == "max"
    reference = study.reference or {}
    published = (
        reference.get("values", {}) if reference.get("metric") == objective["metric"] else {}
    )
    rows: list[dict[str, Any]] = []
    for c in configs:
        described = stats.describe(c.values)
        succeeded = [r for r in c.runs if r.status == JobStatus.succeeded]
        has_target = objective.get("target") is not None
        statuses = Counter(r.status for r in c.runs)
        best = (max if maximize else min)(c.values) if c.values else None
        rows.append(
            {
                "number": c.number,
                "label": c.label,
                "config": c.config,
                "state": c.state,
                "seeds": len(c.runs),
                "statuses": dict(statuses),
                "n": described.n,
                "mean": described.mean,
                "std": described.std,
                "ci_low": described.ci_low,
                "ci_high": described.ci_high,
                "median": described.median,
                "best": best,
                "values": [r.value for r in c.runs],
                "job_ids": [r.job_id for r in c.runs],
                "reached": f"{sum(r.steps_to_target is not None for r in succeeded)}/{len(c.runs)}"
                if has_target
                else None,
                "steps_to_target": stats.median_time_to_target(
                    [r.steps_to_target for r in succeeded] + [None] * (len(c.runs) - len(succeeded))
                )
                if has_target
                else None,
                "time_to_target_s": stats.median_time_to_target(
                    [r.time_to_target for r in succeeded] + [None] * (len(c.runs) - len(succeeded))
                )
                if has_target
                else None,
                "published": published.get(c.label),
                "rank": None,
                "vs_best": None,
            }
        )
    ranked = sorted(
        (r for r in rows if r["mean"] is not None and r["state"] != "pruned"),
        key=lambda r: -r["mean"] if maximize else r["mean"],
    )
    for i, row in enumerate(ranked):
        row["rank"] = i + 1
    if ranked:
        best_row = ranked[0]
        best_values = [v for v in best_row["values"] if v is not None]
        others = ranked[1:]
        tests = [
            (stats.welch if test == "welch" else stats.bootstrap)(
                best_values, [v for v in row["values"] if v is not None]
            )
            for row in others
        ]
        adjusted = stats.holm([t.p_value if t else None for t in tests])
        for row, result, p_adjusted in zip(others, tests, adjusted, strict=True):
            row["vs_best"] = (
                None
                if result is None
                else {
                    "test": result.method,
                    "difference": -result.difference,  # this configuration minus the best
                    "p_value": result.p_value,
                    "p_adjusted": p_adjusted,
                    "statistic": result.statistic,
                    "df": result.df,
                    "ci_low": None if result.ci_high is None else -result.ci_high,
                    "ci_high": None if result.ci_low is None else -result.ci_low,
                }
            )
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["number"]))
    jobs = [r for c in configs for r in c.runs]
    return {
        "objective": objective,
        "test": test,
        "confidence": stats.CONFIDENCE,
        "configurations": len(configs),
        "budget": study.budget,
        "jobs": len(jobs),
        "jobs_by_status": dict(Counter(r.status for r in jobs)),
        "reference": reference or None,
        "rows": rows,
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


TABLE_COLUMNS = [
    "rank",
    "label",
    "state",
    "n",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "best",
    "published",
    "reached",
    "steps_to_target",
    "time_to_target_s",
    "difference_vs_best",
    "p_adjusted_vs_best",
]


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    vs = row["vs_best"] or {}
    return {
        **{c: row.get(c) for c in TABLE_COLUMNS},
        "difference_vs_best": vs.get("difference"),
        "p_adjusted_vs_best": vs.get("p_adjusted"),
    }


def render_csv(summary: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in summary["rows"]:
        writer.writerow({k: "" if v is None else v for k, v in _table_row(row).items()})
    return out.getvalue()


def render_markdown(summary: dict[str, Any], *, title: str) -> str:
    objective = summary["objective"]
    target = objective.get("target")
    confidence = int(summary["confidence"] * 100)
    by_status = ", ".join(f"{k} {v}" for k, v in summary["jobs_by_status"].items())
    lines = [
        f"## {title}",
        "",
        f"Objective: {objective['metric']} ({objective['at']}, "
        f"{'higher' if objective['direction'] == 'max' else 'lower'} is better); "
        f"{summary['configurations']}/{summary['budget']} configurations, "
        f"{summary['jobs']} jobs ({by_status}).",
        "",
    ]
    has_reference = any(r["published"] is not None for r in summary["rows"])
    header = ["rank", "configuration", "n", "mean", "std", f"{confidence}% CI", "best"]
    header += ["published"] if has_reference else []
    header += [f"reached {target}", "median steps", "median time (s)"] if target is not None else []
    header += [f"vs best ({summary['test']}, Holm p)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary["rows"]:
        vs = row["vs_best"]
        interval = (
            f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]" if row["ci_low"] is not None else "—"
        )
        cells = [
            _fmt(row["rank"]) if row["rank"] else row["state"],
            row["label"],
            f"{row['n']}/{row['seeds']}",
            _fmt(row["mean"]),
            _fmt(row["std"]),
            interval,
            _fmt(row["best"]),
        ]
        cells += [_fmt(row["published"])] if has_reference else []
        if target is not None:
            cells += [
                row["reached"] or "—",
                _fmt(row["steps_to_target"])
                if row["steps_to_target"] is not None
                else "not reached",
                _fmt(row["time_to_target_s"])
                if row["time_to_target_s"] is not None
                else "not reached",
            ]
        cells += [
            "best"
            if row["rank"] == 1
            else (f"{_fmt(vs['difference'])} (p={_p(vs['p_adjusted'])})" if vs else "—")
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    reference = summary.get("reference")
    if reference and has_reference:
        lines += ["", f"Published: {reference['source']}."]
        if reference.get("note"):
            lines += [reference["note"]]
    return "\n".join(lines) + "\n"


def finish_study(*, session: Session, study: Study, status: StudyStatus, error: str | None) -> None:
    study.status = status
    study.error = error
    study.finished_at = utcnow()
    study.driver_token = None
