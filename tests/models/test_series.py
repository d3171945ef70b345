"""The flush's write path keeps per-series summaries and rollups exactly in step with the stored
rows (SQLite and PostgreSQL), and the downsampled reads keep every series' extremes."""

import math

import numpy as np
import pytest
from sqlalchemy import func, select

from models.db import session_scope
from models.queries import claim_job, create_job, record_progress
from models.series import (
    ROLLUP_WIDTHS,
    Points,
    downsample_points,
    first_reaching,
    read_series,
    summaries,
)
from models.spec import JobSpec
from models.tables import Metric, MetricRollup

SPEC = JobSpec.model_validate(
    {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}
)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("embedded_db" if request.param == "sqlite" else "services_env")
    return request.param


def running_job() -> tuple[str, int]:
    with session_scope() as session:
        job_id = create_job(session=session, spec=SPEC, submitted={}, owner="me").id
        claim = claim_job(session=session, job_id=job_id, worker="w", lease_seconds=30)
    assert claim is not None
    return job_id, claim.attempt


def flush(job_id: str, attempt: int, points: list[dict]) -> None:
    with session_scope() as session:
        record_progress(
            session=session,
            job_id=job_id,
            attempt=attempt,
            points=points,
            step=0,
            epoch=0.0,
            lease_seconds=30,
        )


def series(name: str, steps: range | list[int], values: list[float]) -> list[dict]:
    return [
        {"name": name, "step": s, "value": v, "epoch": s / 10, "wall_time": s / 100}
        for s, v in zip(steps, values, strict=True)
    ]


def test_summary_follows_every_flush_and_ignores_replayed_steps(ledger: str) -> None:
    job_id, attempt = running_job()
    flush(job_id, attempt, series("loss", [1, 2, 3], [3.0, 1.0, 2.0]))
    # A replay (steps 2-3 again with other values) and new steps: only 4 and 5 are new.
    flush(job_id, attempt, series("loss", [2, 3, 4, 5], [-9.0, 99.0, 0.5, 4.0]))
    flush(job_id, attempt, series("acc", [5], [0.75]))
    with session_scope() as session:
        known = summaries(session=session, job_ids=[job_id])
        stored = session.scalars(
            select(Metric.value)
            .where(Metric.job_id == job_id, Metric.name == "loss")
            .order_by(Metric.step)
        ).all()
    assert stored == [3.0, 1.0, 2.0, 0.5, 4.0]  # the first write of a step wins
    loss = known[(job_id, "loss")]
    assert (loss.count, loss.first_step, loss.last_step, loss.last_value) == (5, 1, 5, 4.0)
    assert (loss.min_step, loss.min_value, loss.max_step, loss.max_value) == (4, 0.5, 5, 4.0)
    assert loss.last_wall == pytest.approx(0.05)
    assert known[(job_id, "acc")].count == 1


def test_rollups_hold_each_buckets_extremes(ledger: str) -> None:
    job_id, attempt = running_job()
    rng = np.random.default_rng(0)
    values = rng.normal(size=3000).tolist()
    steps = list(range(1, 3001))
    # Three flushes whose boundaries fall inside buckets, so stored rows get merged.
    for start, stop in ((0, 1000), (1000, 1777), (1777, 3000)):
        flush(job_id, attempt, series("loss", steps[start:stop], values[start:stop]))
    array = np.array(values)
    with session_scope() as session:
        for width in ROLLUP_WIDTHS[:2]:
            rows = session.scalars(
                select(MetricRollup)
                .where(MetricRollup.job_id == job_id, MetricRollup.width == width)
                .order_by(MetricRollup.bucket)
            ).all()
            buckets = np.array(steps) // width
            assert [r.bucket for r in rows] == sorted(set(buckets.tolist()))
            for row in rows:
                inside = buckets == row.bucket
                assert row.min_value == array[inside].min()
                assert row.max_value == array[inside].max()
                assert values[row.min_step - 1] == row.min_value
                assert row.max_epoch == pytest.approx(row.max_step / 10)
        coarse = session.scalar(
            select(func.count()).where(
                MetricRollup.job_id == job_id, MetricRollup.width == ROLLUP_WIDTHS[-1]
            )
        )
    assert coarse == 1


def test_long_series_are_read_from_rollups_and_keep_their_extremes(ledger: str) -> None:
    job_id, attempt = running_job()
    n = 20_000
    values = np.sin(np.arange(n) / 300.0)
    values[12_345] = 50.0  # a spike
    values[777] = -50.0
    flush(job_id, attempt, series("loss", range(n), values.tolist()))
    with session_scope() as session:
        rolled = read_series(session=session, job_ids=[job_id], names=["loss"], max_points=200)
        whole = read_series(
            session=session, job_ids=[job_id], names=["loss"], max_points=200, raw_limit=10**9
        )
    for points in (rolled[(job_id, "loss")], whole[(job_id, "loss")]):
        assert len(points) <= 200
        assert points.steps[0] == 0 and points.steps[-1] == n - 1
        assert list(points.steps) == sorted(set(points.steps.tolist()))
        assert points.values.max() == 50.0 and points.values.min() == -50.0
        assert 12_345 in points.steps and 777 in points.steps
        assert np.allclose(points.values, values[points.steps])
        assert np.allclose(points.walls, points.steps / 100)


def test_downsampling_keeps_min_and_max_of_every_bucket() -> None:
    rng = np.random.default_rng(1)
    steps = np.arange(1000)
    values = rng.normal(size=1000)
    points = Points(steps, values, steps / 10.0, steps / 100.0)
    kept = downsample_points(points, 0, 999, 52)
    assert len(kept) <= 52
    for b in range(25):
        inside = (steps * 25 // 1000) == b
        assert values[inside].min() in kept.values and values[inside].max() in kept.values
    assert kept.steps[0] == 0 and kept.steps[-1] == 999
    short = Points(steps[:10], values[:10], steps[:10] / 10.0, steps[:10] / 100.0)
    assert downsample_points(short, 0, 9, 52) is short


def test_first_reaching_finds_the_first_step_past_a_target(ledger: str) -> None:
    job_id, attempt = running_job()
    n = 20_000
    values = np.linspace(0.0, 1.0, n)
    values[9_000] = 0.95  # an early excursion is the first crossing
    flush(job_id, attempt, series("acc", range(n), values.tolist()))
    flush(job_id, attempt, series("loss", range(3), [3.0, 2.0, 1.0]))
    keys = [(job_id, "acc"), (job_id, "loss")]
    with session_scope() as session:
        reached = first_reaching(session=session, keys=keys, threshold=0.9, mode="max")
        lower = first_reaching(session=session, keys=keys, threshold=1.5, mode="min")
        never = first_reaching(session=session, keys=keys, threshold=2.0, mode="max")
    assert reached[(job_id, "acc")][0] == 9_000
    assert reached[(job_id, "acc")][1] == pytest.approx(90.0)
    assert reached[(job_id, "loss")][0] == 0  # 3.0 ≥ 0.9 at once
    assert lower[(job_id, "loss")][0] == 2 and lower[(job_id, "acc")][0] == 0
    assert never[(job_id, "acc")] is None and never[(job_id, "loss")] is not None
    assert not math.isnan(reached[(job_id, "acc")][2])


SUMMARY_COLUMNS = [
    "name", "count", "first_step", "last_step", "last_value", "last_wall",
    "min_step", "min_value", "max_step", "max_value",
]  # fmt: skip


def stored(job_id: str) -> tuple[list, list, list]:
    """Every metric, summary and rollup row of a job, as plain tuples (NaN-free)."""
    with session_scope() as session:
        metrics = session.execute(
            select(Metric.name, Metric.step, Metric.value, Metric.epoch, Metric.wall_time)
            .where(Metric.job_id == job_id)
            .order_by(Metric.name, Metric.step)
        ).all()
        known = summaries(session=session, job_ids=[job_id])
        rollups = session.scalars(
            select(MetricRollup)
            .where(MetricRollup.job_id == job_id)
            .order_by(MetricRollup.name, MetricRollup.width, MetricRollup.bucket)
        ).all()
    columns = [c.name for c in MetricRollup.__table__.columns if c.name != "job_id"]
    return (
        [tuple(m) for m in metrics],
        sorted(tuple(getattr(s, c) for c in SUMMARY_COLUMNS) for s in known.values()),
        [tuple(getattr(r, c) for c in columns) for r in rollups],
    )


def test_many_series_at_once_as_arrays_or_dicts(ledger: str) -> None:
    """Several series in one flush, given as arrays (the engine's sink) or as dicts: the same
    rows, summaries and rollups, and every rollup row holds its bucket's first lowest and
    first highest point (ties, ±inf, unknown epochs, NaN, unsorted and repeated steps)."""
    rng = np.random.default_rng(7)
    flushes = []
    # Flush boundaries inside buckets, so stored rollup rows get merged (where the flush beats
    # only the lowest or only the highest point too).
    for start, stop in ((-40, 700), (700, 2000), (2000, 5000)):
        batch = {}
        for name in ("train_loss", "lr", 'odd "name", {x}\\'):
            steps = np.arange(start, stop)
            rng.shuffle(steps)
            steps = np.concatenate([steps, steps[:5]])  # repeated: the first value stays
            values = rng.normal(size=len(steps))
            if name != "lr":
                special = rng.choice([0.0, 0.5, -2.0, np.inf, -np.inf, np.nan], size=len(steps))
                values = np.where(rng.random(len(steps)) < 0.1, special, values)
            epochs = np.where(rng.random(len(steps)) < 0.3, np.nan, steps / 10)
            batch[name] = Points(steps, values, epochs, np.full(len(steps), stop / 100))
        flushes.append(batch)
    as_arrays, as_dicts = running_job(), running_job()
    for batch in flushes:
        flush(*as_arrays, batch)  # type: ignore[arg-type]
        flush(
            *as_dicts,
            [
                {"name": name, "step": s, "value": v, "epoch": None if e != e else e,
                 "wall_time": w}
                for name, p in batch.items()
                for s, v, e, w in zip(
                    p.steps.tolist(), p.values.tolist(), p.epochs.tolist(), p.walls.tolist(),
                    strict=True,
                )
            ],
        )  # fmt: skip
    metrics, summary_rows, rollups = stored(as_arrays[0])
    assert (metrics, summary_rows, rollups) == stored(as_dicts[0])
    # Brute force from the stored points.
    by_name: dict[str, list] = {}
    for name, step, value, epoch, wall in metrics:
        by_name.setdefault(name, []).append((step, value, epoch, wall))
    expected, expected_summaries = [], []
    for name, rows in sorted(by_name.items()):
        first: dict[int, float] = {}
        for batch in flushes:
            p = batch[name]
            for s, v in zip(p.steps.tolist(), p.values.tolist(), strict=True):
                if v == v:  # NaN is not stored
                    first.setdefault(s, v)
        assert [r[:2] for r in rows] == sorted(first.items())
        low = min(rows, key=lambda r: (r[1], r[0]))
        high = min(rows, key=lambda r: (-r[1], r[0]))
        last = rows[-1]
        expected_summaries.append(
            (name, len(rows), rows[0][0], last[0], last[1], last[3], *low[:2], *high[:2])
        )
        for width in ROLLUP_WIDTHS:
            buckets: dict[int, list] = {}
            for row in rows:
                buckets.setdefault(row[0] // width, []).append(row)
            for bucket, inside in sorted(buckets.items()):
                low = min(inside, key=lambda r: (r[1], r[0]))
                high = min(inside, key=lambda r: (-r[1], r[0]))
                expected.append((name, width, bucket, *low, *high))
    assert summary_rows == expected_summaries
    assert rollups == expected
