"""The study driver: short rounds, each re-scheduled with a countdown, so one worker process can
drive a study and run its trial jobs in between (a round takes milliseconds, not a worker).

A round (the Celery task `drive_study(study_id, token)`):
1. locks the study row and checks the token: only the newest driver chain may act (a worker
   that starts takes over every running study with a new token, so after a crash or a restart
   exactly one chain goes on and older messages stop at their next round);
2. reads the configurations and their jobs from the ledger and rebuilds an optuna study in
   memory from them: parameters, results (the mean objective over seeds), running trials,
   intermediate values for the pruner, and the sampler's own notes (optuna's system attrs);
3. prunes running configurations the pruner gives up on (their jobs are canceled);
4. asks the sampler for new configurations while the budget and `max_concurrent` allow, and
   stores one queued job per seed for each; after commit it sends them to the broker and marks
   them sent (a job stored but never sent is sent again by the next round);
5. finishes the study when the budget is spent and every job has ended; otherwise runs again in
   DESCENT_STUDY_POLL_SECONDS (2 s by default).

Why optuna's study is rebuilt from our rows instead of living in optuna's RDBStorage:
- one ledger: the jobs, their results and the sampler's state cannot disagree;
- optuna's RDBStorage stamps its own revision into `alembic_version`, the table our migrations
  use, so it cannot share our database (and its tables would sit outside our migrations);
- every round rebuilds the sampler's view, so a restarted driver does nothing a normal round
  does not do: the restart path is exercised all the time, not only after a crash.
The grid sampler is ours (every combination once, in the order given: a study's configuration
numbers then follow the table the user wrote); the others are optuna's samplers and pruners.
"""

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from celery.signals import worker_ready
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from models import studies as study_queries
from models.db import session_scope
from models.queries import request_cancel
from models.settings import get_settings
from models.studies import Choice, Config, FloatRange, IntRange, Run
from models.tables import CLAIMABLE, Metric, Study, StudyStatus, StudyTrial, utcnow
from worker.celery_app import app

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
# TPE's multivariate mode and the like are marked experimental; a study's log needs no notice.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def poll_seconds() -> float:
    return float(os.environ.get("DESCENT_STUDY_POLL_SECONDS", "2"))


def distributions(space: dict[str, Any]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for path, dim in space.items():
        if isinstance(dim, Choice):
            out[path] = CategoricalDistribution(list(range(len(dim.values))))
        elif isinstance(dim, FloatRange):
            out[path] = FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
        else:
            assert isinstance(dim, IntRange)
            out[path] = IntDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
    return out


def make_sampler(spec: dict[str, Any], asked: int) -> optuna.samplers.BaseSampler:
    """The sampler, seeded from the study's seed and the number of configurations asked so far:
    the same history gives the same next configuration, and no two rounds repeat a draw."""
    seed = int(np.random.SeedSequence([spec["seed"], asked]).generate_state(1)[0])
    args = spec["args"]
    name = spec["name"]
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **args)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **args)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **args)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(spec: dict[str, Any] | None) -> optuna.pruners.BasePruner | None:
    if spec is None:
        return None
    if spec["name"] == "median":
        return optuna.pruners.MedianPruner(**spec["args"])
    return optuna.pruners.SuccessiveHalvingPruner(**spec["args"])


def intermediate_values(
    session: Any, study: Study, configs: list[Config]
) -> dict[int, dict[int, float]]:
    """Per configuration, the objective at each evaluated step, averaged over its seeds, at the
    steps every seed still in the running has reached (so configurations compare fairly)."""
    metric = study.objective["metric"]
    live = {
        r.job_id: c.number
        for c in configs
        for r in c.runs
        if r.status not in ("failed", "diverged", "canceled")
    }
    if not live:
        return {}
    points: dict[str, dict[int, float]] = {}
    for job_id, step, value in session.execute(
        select(Metric.job_id, Metric.step, Metric.value).where(
            Metric.job_id.in_(list(live)), Metric.name == metric
        )
    ):
        if value is not None and math.isfinite(value):
            points.setdefault(job_id, {})[step] = value
    out: dict[int, dict[int, float]] = {}
    for c in configs:
        series = [points.get(r.job_id, {}) for r in c.runs if r.job_id in live]
        if not series:
            continue
        common = set.intersection(*(set(s) for s in series))
        out[c.number] = {step: float(np.mean([s[step] for s in series])) for step in common}
    return out


def rebuild(
    study: Study,
    space: dict[str, Any],
    configs: list[Config],
    intermediate: dict[int, dict[int, float]],
) -> optuna.Study:
    """An in-memory optuna study holding every configuration, in number order (so optuna's
    trial ids equal our configuration numbers)."""
    direction = "maximize" if study.objective["direction"] == "max" else "minimize"
    sampler = (
        make_sampler(study.sampler, len(configs))
        if study.sampler["name"] != "grid"
        else optuna.samplers.RandomSampler(seed=0)  # never asked: the grid is ours
    )
    rebuilt = optuna.create_study(
        direction=direction, sampler=sampler, pruner=make_pruner(study.pruner)
    )
    storage = rebuilt._storage
    for key, value in (study.sampler_state or {}).items():
        storage.set_study_system_attr(rebuilt._study_id, key, value)
    dists = distributions(space)
    states = {
        "complete": TrialState.COMPLETE,
        "pruned": TrialState.PRUNED,
        "failed": TrialState.FAIL,
        "running": TrialState.RUNNING,
    }
    for c in configs:
        state = states[c.state]
        rebuilt.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=c.value if state == TrialState.COMPLETE else None,
                params=c.params,
                distributions=dists,
                system_attrs=c.system_attrs,
                intermediate_values=intermediate.get(c.number, {}),
            )
        )
    return rebuilt


@dataclass
class Round:
    next_in: float | None  # seconds until the next round; None: the chain ends
    send: list[tuple[str, str]] = field(default_factory=list)  # (job id, queue suffix)
    asked: int = 0
    pruned: list[int] = field(default_factory=list)


def drive_round(study_id: str, token: str) -> Round:
    with session_scope() as session:
        study = session.get(Study, study_id, with_for_update=True)
        if study is None or study.status != StudyStatus.running or study.driver_token != token:
            return Round(next_in=None)
        space = study_queries.parse_space(study.space)
        configs = study_queries.load_configs(session=session, study=study)
        result = Round(next_in=poll_seconds())
        uses_optuna = study.sampler["name"] != "grid" or study.pruner is not None
        optuna_study = None
        if uses_optuna:
            intermediate = intermediate_values(session, study, configs) if study.pruner else {}
            optuna_study = rebuild(study, space, configs, intermediate)
        if study.pruner is not None and optuna_study is not None:
            result.pruned = prune(session, study, configs, optuna_study)
        result.send += [
            (r.job_id, r.queue)
            for c in configs
            for r in c.runs
            if not r.enqueued and r.status in CLAIMABLE
        ]
        in_flight = sum(c.state == "running" for c in configs)
        while len(configs) < study.budget and in_flight < study.max_concurrent:
            number = len(configs)
            if study.sampler["name"] == "grid":
                config = study_queries.grid_config(space, number)
                params = {
                    path: dim.values.index(config[path])
                    for path, dim in space.items()
                    if isinstance(dim, Choice)
                }
                system_attrs: dict[str, Any] = {}
                if optuna_study is not None:  # kept in step for the pruner
                    optuna_study.add_trial(
                        optuna.trial.create_trial(
                            state=TrialState.RUNNING,
                            params=params,
                            distributions=distributions(space),
                        )
                    )
            else:
                assert optuna_study is not None
                trial = optuna_study.ask(distributions(space))
                params = dict(trial.params)
                config = study_queries.config_from_params(space, params)
                system_attrs = dict(optuna_study._storage.get_trial(trial._trial_id).system_attrs)
            label = study_queries.config_label(space, config)
            jobs = study_queries.add_trial_jobs(
                session=session,
                study=study,
                number=number,
                config=config,
                params=params,
                system_attrs=system_attrs,
                label=label,
            )
            configs.append(
                Config(
                    number=number,
                    label=label,
                    config=config,
                    params=params,
                    system_attrs=system_attrs,
                    pruned=False,
                    runs=[
                        Run(
                            job_id=j.id,
                            seed=s,
                            status=j.status,
                            queue=j.queue,
                            enqueued=False,
                            step=0,
                        )
                        for j, s in zip(jobs, study.seeds, strict=True)
                    ],
                )
            )
            result.send += [(j.id, j.queue) for j in jobs]
            result.asked += 1
            in_flight += 1
        if optuna_study is not None:
            study.sampler_state = dict(
                optuna_study._storage.get_study_system_attrs(optuna_study._study_id)
            )
        study.driver_beat_at = utcnow()
        if len(configs) >= study.budget and all(c.state != "running" for c in configs):
            study_queries.finish_study(
                session=session, study=study, status=StudyStatus.succeeded, error=None
            )
            result.next_in = None
    return result


def prune(
    session: Any, study: Study, configs: list[Config], optuna_study: optuna.Study
) -> list[int]:
    """Ask the pruner about every running configuration; cancel the jobs of those it stops.
    The pruner's notes on each trial (successive halving's rungs) are kept in the rows."""
    pruner = optuna_study.pruner
    pruned = []
    for c in configs:
        if c.state != "running":
            continue
        frozen = optuna_study._storage.get_trial(c.number)
        if not frozen.intermediate_values:
            continue
        stop = pruner.prune(optuna_study, frozen)
        notes = dict(optuna_study._storage.get_trial(c.number).system_attrs)
        changes: dict[str, Any] = {}
        if notes != c.system_attrs:
            changes["system_attrs"] = notes
            c.system_attrs = notes
        if stop:
            changes["pruned"] = True
            c.pruned = True
            pruned.append(c.number)
            for run in c.runs:
                request_cancel(session=session, job_id=run.job_id)
        if changes:
            session.execute(
                update(StudyTrial)
                .where(StudyTrial.study_id == study.id, StudyTrial.number == c.number)
                .values(**changes)
            )
    return pruned


def send_jobs(jobs: list[tuple[str, str]]) -> None:
    """To the broker, after the round's commit; then mark the rows sent."""
    prefix = get_settings().queue_prefix
    sent = []
    for job_id, queue in jobs:
        try:
            app.send_task("run_job", args=[job_id], task_id=job_id, queue=f"{prefix}.{queue}")
        except Exception:  # noqa: BLE001 - the next round sends what is left
            log.exception("could not send job %s; the next round tries again", job_id)
            break
        sent.append(job_id)
    if sent:
        with session_scope() as session:
            session.execute(
                update(StudyTrial).where(StudyTrial.job_id.in_(sent)).values(enqueued=True)
            )


def schedule(study_id: str, token: str, countdown: float | None = None) -> None:
    prefix = get_settings().queue_prefix
    app.send_task("drive_study", args=[study_id, token], countdown=countdown, queue=f"{prefix}.any")


def drive(study_id: str, token: str) -> str:
    """One round, then the next one scheduled. Never raises (a worker must outlive a study)."""
    try:
        result = drive_round(study_id, token)
    except OperationalError as exc:  # the database is away: try again later, same chain
        log.warning("study %s: database unavailable (%s); retrying", study_id, exc)
        schedule(study_id, token, countdown=5 * poll_seconds())
        return "retry"
    except Exception as exc:  # noqa: BLE001 - a study that cannot go on ends failed
        log.exception("study %s failed", study_id)
        with session_scope() as session:
            study = session.get(Study, study_id, with_for_update=True)
            if study is not None and study.driver_token == token:
                study_queries.finish_study(
                    session=session,
                    study=study,
                    status=StudyStatus.failed,
                    error=f"{type(exc).__name__}: {exc}",
                )
        return "failed"
    send_jobs(result.send)
    if result.asked or result.pruned:
        log.info(
            "study %s: %d new configurations, pruned %s", study_id, result.asked, result.pruned
        )
    if result.next_in is None:
        return "done"
    schedule(study_id, token, countdown=result.next_in)
    return "scheduled"


def resume_running_studies() -> int:
    """Take over every running study with a fresh driver chain (a worker starting after a crash
    or a deploy: whatever chain was in flight stops at its next round)."""
    with session_scope() as session:
        ids = list(session.scalars(select(Study.id).where(Study.status == StudyStatus.running)))
    resumed = 0
    for study_id in ids:
        with session_scope() as session:
            token = study_queries.take_over_driver(session=session, study_id=study_id)
        if token is not None:
            schedule(study_id, token)
            resumed += 1
    return resumed


@worker_ready.connect
def _resume_on_start(**_: Any) -> None:
    try:
        count = resume_running_studies()
    except Exception:  # noqa: BLE001 - a worker without a database still serves nothing else
        log.exception("could not resume running studies")
        return
    if count:
        log.info("resumed the drivers of %d running studies", count)
