"""Metric series: the write path of one flush, and the downsampled reads behind compare,
leaderboards and studies.

Writing (`write_points`, inside record_progress's transaction, so all of it or none lands):
- the points go into `metrics`. When none of them can collide with a stored point (each
  series' new steps all lie beyond its last stored step: the usual flush) they are sent in one
  binary COPY on PostgreSQL (or a plain multi-row INSERT on SQLite); otherwise (a resumed
  attempt writing steps again) by INSERT … ON CONFLICT DO NOTHING RETURNING, and only the rows
  actually inserted count below, so a summary always describes exactly the stored rows.
- `metric_summaries`: count, first and last step, last value, lowest and highest point of each
  series, merged into the stored row by an upsert.
- `metric_rollups`: for every bucket of `width` steps, at widths 64·4^k, the lowest and the
  highest point. A flush of n points (per series) touches about n/48 + 10 rollup rows.
  On PostgreSQL both upserts are one statement, so a flush costs four round trips after the
  job's own UPDATE: the summaries' last steps, the COPY (start and end) and the upserts.

Why rollups instead of downsampling on read: a min/max-per-bucket GROUP BY over 10 series ×
100,000 points took 420 ms on PostgreSQL on the development machine (and a single series
40 ms), against a 100 ms budget for `GET /v1/compare`; reading a few hundred rollup rows per
series does not grow with the length of the series. Why our own COPY encoder: SQLAlchemy's
executemany path wrote about 13,000 points/s and psycopg's row-by-row `write_row` about 140,000;
the binary COPY buffer built with numpy costs a few milliseconds per 100,000 points.
"""

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import bindparam, func, literal_column, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.tables import Metric, MetricRollup, MetricSummary

T = TypeVar("T")
ROLLUP_WIDTHS = tuple(64 * 4**k for k in range(10))  # 64, 256, 1024, … 16,777,216
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


@dataclass
class Points:
    """One series' points as arrays, ordered by step."""

    steps: np.ndarray  # int64
    values: np.ndarray  # float64
    epochs: np.ndarray  # float64, NaN where unknown
    walls: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.steps)

    def take(self, index: np.ndarray) -> "Points":
        return Points(self.steps[index], self.values[index], self.epochs[index], self.walls[index])

    def epoch_list(self) -> list[float | None]:
        return [None if e != e else e for e in self.epochs.tolist()]  # NaN != NaN

    @classmethod
    def concat(cls, parts: Sequence["Points"]) -> "Points":
        return cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("steps", "values", "epochs", "walls")
            )
        )


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _group(points: Sequence[dict[str, Any]]) -> dict[str, Points]:
    """Points given as one dict each, by series name, in the order given."""
    # One comprehension per field: three times faster than transposing tuples (measured).
    names = [p["name"] for p in points]
    all_points = Points(
        np.array([p["step"] for p in points], dtype=np.int64),
        np.array([p["value"] for p in points], dtype=np.float64),
        np.array([p.get("epoch") for p in points], dtype=np.float64),  # None becomes NaN
        np.array([p["wall_time"] for p in points], dtype=np.float64),
    )
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        rows.setdefault(name, []).append(i)
    return {name: all_points.take(np.array(index)) for name, index in rows.items()}


def _tidy(p: Points) -> Points:
    """One series' points sorted by step; a step given twice keeps its first value; NaN (which
    no database column here takes) is left out."""
    if np.isnan(p.values).any():
        p = p.take(~np.isnan(p.values))
    if np.any(p.steps[1:] < p.steps[:-1]):
        p = p.take(np.argsort(p.steps, kind="stable"))  # stable: the first of equals leads
    first = np.ones(len(p), dtype=bool)
    first[1:] = p.steps[1:] != p.steps[:-1]
    return p if first.all() else p.take(first)


# Built once: building it at every flush cost about 0.2 ms of client time (measured).
_LAST_STEPS = select(MetricSummary.name, MetricSummary.last_step).where(
    MetricSummary.job_id == bindparam("job_id"),
    MetricSummary.name.in_(bindparam("names", expanding=True)),
)


def write_points(
    *, session: Session, job_id: str, points: Sequence[dict[str, Any]] | Mapping[str, Points]
) -> int:
    """Store one flush's points and bring the series' summaries and rollups up to date.
    `points`: one dict per point (name, step, value, epoch, wall_time), or arrays by series
    name (what the engine's sink sends). Returns how many points were new (a point already
    stored at the same step is skipped)."""
    grouped = points if isinstance(points, Mapping) else _group(points)
    series = {name: tidy for name, p in grouped.items() if len(tidy := _tidy(p))}
    if not series:
        return 0
    last_steps = dict(session.execute(_LAST_STEPS, {"job_id": job_id, "names": list(series)}).all())
    collision_free = all(
        name not in last_steps or int(p.steps[0]) > last_steps[name] for name, p in series.items()
    )
    if collision_free:
        send = _insert_all(session, job_id, series, then=lambda: _merge(session, job_id, series))
    else:
        series = _insert_new_only(session, job_id, series)
        send = _merge(session, job_id, series)
    send()
    return sum(len(p) for p in series.values())


def _merge(session: Session, job_id: str, series: dict[str, Points]) -> Callable[[], None]:
    """Build the summaries' and rollups' upserts; returns the call that sends them."""
    names = [name for name, p in series.items() if len(p)]
    if not names:
        return lambda: None
    upserts = [_summary_upsert(names, series), _rollup_upsert(names, series)]
    return _upsert(session, job_id, names, upserts)


def _insert_all(
    session: Session, job_id: str, series: dict[str, Points], then: Callable[[], T]
) -> T:
    """Insert every point; returns what `then` returns. On PostgreSQL `then` runs after the
    COPY data is sent, while the server is still working through it (on another core)."""
    if session.get_bind().dialect.name == "postgresql":
        raw = session.connection().connection.driver_connection
        assert raw is not None
        with (
            raw.cursor() as cursor,
            cursor.copy(
                "COPY metrics (job_id, name, step, value, epoch, wall_time) FROM STDIN BINARY"
            ) as copy,
        ):
            copy.write(_COPY_HEADER)
            for name, p in series.items():
                copy.write(_copy_tuples(job_id, name, p))
            copy.write(_COPY_TRAILER)
            return then()
    rows = [
        {"job_id": job_id, "name": name, "step": s, "value": v, "epoch": e, "wall_time": w}
        for name, p in series.items()
        for s, v, e, w in zip(
            p.steps.tolist(), p.values.tolist(), p.epoch_list(), p.walls.tolist(), strict=True
        )
    ]
    session.execute(_insert(session, Metric), rows)
    return then()


def _copy_tuples(job_id: str, name: str, p: Points) -> bytes:
    """PostgreSQL's binary COPY tuples for one series, built as one numpy record array: every
    row of a series has the same layout (an unknown epoch is a NULL field, so rows without an
    epoch get a layout of their own)."""
    job, label = job_id.encode(), name.encode()
    known = ~np.isnan(p.epochs)
    parts = []
    for has_epoch in (True, False):
        rows = p.take(known if has_epoch else ~known)
        if not len(rows):
            continue
        fields: list[tuple[str, str]] = [
            ("count", ">i2"),
            ("job_len", ">i4"),
            ("job", f"S{len(job)}"),
            ("name_len", ">i4"),
            ("name", f"S{len(label)}"),
            ("step_len", ">i4"),
            ("step", ">i4"),
            ("value_len", ">i4"),
            ("value", ">f8"),
            ("epoch_len", ">i4"),
        ]
        fields += [("epoch", ">f8")] if has_epoch else []
        fields += [("wall_len", ">i4"), ("wall", ">f8")]
        record = np.empty(len(rows), dtype=np.dtype(fields))
        record["count"] = 6
        record["job_len"], record["job"] = len(job), job
        record["name_len"], record["name"] = len(label), label
        record["step_len"], record["step"] = 4, rows.steps
        record["value_len"], record["value"] = 8, rows.values
        if has_epoch:
            record["epoch_len"], record["epoch"] = 8, rows.epochs
        else:
            record["epoch_len"] = -1
        record["wall_len"], record["wall"] = 8, rows.walls
        parts.append(record.tobytes())
    return b"".join(parts)


def _insert_new_only(session: Session, job_id: str, series: dict[str, Points]) -> dict[str, Points]:
    rows = [
        {"job_id": job_id, "name": name, "step": s, "value": v, "epoch": e, "wall_time": w}
        for name, p in series.items()
        for s, v, e, w in zip(
            p.steps.tolist(), p.values.tolist(), p.epoch_list(), p.walls.tolist(), strict=True
        )
    ]
    statement = (
        _insert(session, Metric)
        .on_conflict_do_nothing()
        .returning(Metric.name, Metric.step, sort_by_parameter_order=False)
    )
    inserted: dict[str, set[int]] = {}
    for name, step in session.execute(statement, rows):
        inserted.setdefault(name, set()).add(step)
    kept = {}
    for name, p in series.items():
        if name in inserted:
            wanted = np.fromiter(inserted[name], dtype=np.int64)
            kept[name] = p.take(np.isin(p.steps, wanted))
    return kept


def bucket_extremes(
    buckets: np.ndarray, values: np.ndarray, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the lowest and of the highest value in each bucket (ties: the earlier step).
    Returns (bucket ids, index of each bucket's min, index of each bucket's max)."""
    lowest = np.lexsort((steps, values, buckets))
    highest = np.lexsort((steps, -values, buckets))
    sorted_ids = buckets[lowest]
    starts = np.ones(len(lowest), dtype=bool)
    starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
    # Both orders sort by bucket first, so their group starts are at the same positions.
    return sorted_ids[starts], lowest[starts], highest[starts]


# Merging a flush's aggregates into the stored rows. `new` is the flush's row (EXCLUDED), `old`
# the stored one; ties keep the stored (earlier) point.
_SUMMARY_MERGE = {
    "count": "{old}.count + {new}.count",
    "first_step": "CASE WHEN {new}.first_step < {old}.first_step "
    "THEN {new}.first_step ELSE {old}.first_step END",
    **{
        f"last_{c}": f"CASE WHEN {{new}}.last_step > {{old}}.last_step "
        f"THEN {{new}}.last_{c} ELSE {{old}}.last_{c} END"
        for c in ("step", "value", "wall")
    },
    **{
        f"{side}_{c}": f"CASE WHEN {{new}}.{side}_value {op} {{old}}.{side}_value "
        f"THEN {{new}}.{side}_{c} ELSE {{old}}.{side}_{c} END"
        for side, op in (("min", "<"), ("max", ">"))
        for c in ("step", "value")
    },
}
_ROLLUP_MERGE = {
    f"{side}_{c}": f"CASE WHEN {{new}}.{side}_value {op} {{old}}.{side}_value "
    f"THEN {{new}}.{side}_{c} ELSE {{old}}.{side}_{c} END"
    for side, op in (("min", "<"), ("max", ">"))
    for c in ("step", "value", "epoch", "wall")
}
# A stored rollup row changes only when the flush beats one of its extremes; most coarse
# buckets don't, and an update that would write the same values is skipped (no new row version).
_ROLLUP_CHANGED = "{new}.min_value < {old}.min_value OR {new}.max_value > {old}.max_value"


@dataclass
class _Upsert:
    """One table's rows for INSERT … ON CONFLICT (key) DO UPDATE with the `merge` rules (only
    where `changed` holds, when given), column-wise; row i belongs to the series
    `names[series[i]]` (see _upsert)."""

    table: Any
    key: list[str]
    merge: dict[str, str]
    series: np.ndarray  # int64
    columns: dict[str, np.ndarray]  # int64 or float64 (NaN is NULL)
    changed: str | None = None


def _pg_array(values: np.ndarray) -> str:
    """A column as a PostgreSQL array literal, NaN as NULL. repr gives the shortest string that
    reads back as the same double, so no bit is lost; building the string is about 20 times
    faster than psycopg adapting a list element by element (measured)."""
    items = values.tolist()
    if values.dtype.kind != "f":
        return "{" + ",".join(map(str, items)) + "}"
    if np.isnan(values).any():
        return "{" + ",".join("NULL" if v != v else repr(v) for v in items) + "}"
    return "{" + ",".join(map(repr, items)) + "}"


@lru_cache(maxsize=64)
def _text(sql: str) -> Any:
    """text(sql), parsed once (the flush's statements are the same every time)."""
    return text(sql)


def _upsert(
    session: Session, job_id: str, names: list[str], upserts: list[_Upsert]
) -> Callable[[], None]:
    """The flush's upserts, column-wise, made ready to send: returns the call that sends them.

    PostgreSQL gets a single statement (all but the last upsert as data-modifying WITH
    queries, which always run to completion) whose parameters are arrays (unnest): one round
    trip and one cached plan whatever the number of rows. (An executemany sends a statement
    per row, 0.2 ms each; a multi-row VALUES took SQLAlchemy 0.2 s to compile per 1,000 rows;
    both measured.) SQLite, in process, takes an executemany per table."""
    if session.get_bind().dialect.name == "postgresql":
        params: dict[str, Any] = {"job_id": job_id, "names": names}
        statements = []
        for i, upsert in enumerate(upserts):
            table, columns, prefix = upsert.table.name, list(upsert.columns), f"u{i}_"
            kinds = {
                c: "float8" if v.dtype.kind == "f" else "int8" for c, v in upsert.columns.items()
            }
            arrays = ", ".join(f"CAST(:{prefix}{c} AS {kinds[c]}[])" for c in columns)
            updates = ", ".join(
                f"{column} = " + rule.format(new="EXCLUDED", old=table)
                for column, rule in upsert.merge.items()
            )
            where = upsert.changed.format(new="EXCLUDED", old=table) if upsert.changed else ""
            statements.append(
                f"INSERT INTO {table} (job_id, name, {', '.join(columns)}) "
                f"SELECT :job_id, (CAST(:names AS text[]))[u.series], "
                f"{', '.join(f'u.{c}' for c in columns)} "
                f"FROM unnest(CAST(:{prefix}series AS int8[]), {arrays}) "
                f"AS u(series, {', '.join(columns)}) "
                f"ON CONFLICT ({', '.join(upsert.key)}) DO UPDATE SET {updates}"
                + (f" WHERE {where}" if where else "")
            )
            params[f"{prefix}series"] = _pg_array(upsert.series + 1)  # arrays count from 1
            params.update({f"{prefix}{c}": _pg_array(v) for c, v in upsert.columns.items()})
        *first, last = statements
        with_queries = ", ".join(f"u{i} AS ({sql})" for i, sql in enumerate(first))
        statement = _text(f"WITH {with_queries} {last}" if first else last)

        def send() -> None:
            session.execute(statement, params)

        return send

    sends: list[tuple[Any, list[dict[str, Any]]]] = []
    for upsert in upserts:
        table = upsert.table
        set_: dict[str, Any] = {
            column: literal_column(rule.format(new="excluded", old=table.name))
            for column, rule in upsert.merge.items()
        }
        lists = [
            [None if v != v else v for v in c.tolist()] if c.dtype.kind == "f" else c.tolist()
            for c in upsert.columns.values()
        ]
        rows = [
            {"job_id": job_id, "name": names[i], **dict(zip(upsert.columns, values, strict=True))}
            for i, *values in zip(upsert.series.tolist(), *lists, strict=True)
        ]
        changed = upsert.changed and upsert.changed.format(new="excluded", old=table.name)
        insert = sqlite.insert(table).on_conflict_do_update(
            index_elements=upsert.key, set_=set_, where=text(changed) if changed else None
        )
        sends.append((insert, rows))

    def send_each() -> None:
        for insert, rows in sends:
            session.execute(insert, rows)

    return send_each


def _summary_upsert(names: list[str], series: dict[str, Points]) -> _Upsert:
    picked: dict[str, list[Any]] = {
        c: []
        for c in (
            "count", "first_step", "last_step", "last_value", "last_wall",
            "min_step", "min_value", "max_step", "max_value",
        )
    }  # fmt: skip
    for name in names:
        p = series[name]
        low, high = int(np.argmin(p.values)), int(np.argmax(p.values))
        for column, value in (
            ("count", len(p)),
            ("first_step", p.steps[0]),
            ("last_step", p.steps[-1]),
            ("last_value", p.values[-1]),
            ("last_wall", p.walls[-1]),
            ("min_step", p.steps[low]),
            ("min_value", p.values[low]),
            ("max_step", p.steps[high]),
            ("max_value", p.values[high]),
        ):
            picked[column].append(value)
    return _Upsert(
        MetricSummary.__table__,
        ["job_id", "name"],
        _SUMMARY_MERGE,
        np.arange(len(names)),
        {
            c: np.array(v, dtype=np.float64 if c.endswith(("value", "wall")) else np.int64)
            for c, v in picked.items()
        },
    )


def run_extreme(keys: np.ndarray, values: np.ndarray, reduce: np.ufunc) -> np.ndarray:
    """For non-decreasing `keys`: in each run of equal keys, the index of the first value that
    `reduce` (np.minimum or np.maximum) picks. Linear time (the points come sorted)."""
    new_run = np.empty(len(keys), dtype=bool)
    new_run[0], new_run[1:] = True, keys[1:] != keys[:-1]
    starts = np.flatnonzero(new_run)
    run = np.cumsum(new_run) - 1
    hits = np.flatnonzero(values == reduce.reduceat(values, starts)[run])
    first = np.empty(len(hits), dtype=bool)
    first[0], first[1:] = True, run[hits][1:] != run[hits][:-1]
    return hits[first]


def _rollup_upsert(names: list[str], series: dict[str, Points]) -> _Upsert:
    """All series at once: each level's buckets are runs of (series, step // width) in the
    points sorted by series then step, so a flush costs 20 passes over arrays whatever the
    number of series."""
    points = Points.concat([series[name] for name in names])
    label = np.repeat(np.arange(len(names)), [len(series[name]) for name in names])
    # Each width from the one below: a bucket's extreme is among its sub-buckets' extremes.
    chains = {"min": (points, label, np.minimum), "max": (points, label, np.maximum)}
    parts: dict[str, list[np.ndarray]] = {c: [] for c in ("series", "width", "bucket")}
    for side in chains:
        for c in ("step", "value", "epoch", "wall"):
            parts[f"{side}_{c}"] = []
    for width in ROLLUP_WIDTHS:
        for side, (chosen, owner, reduce) in chains.items():
            # Steps are 32-bit (the metrics column): the series goes in the bits above them.
            keys = owner << 33 | (chosen.steps // width + 2**32)
            index = run_extreme(keys, chosen.values, reduce)
            chosen, owner = chosen.take(index), owner[index]
            chains[side] = (chosen, owner, reduce)
            parts[f"{side}_step"].append(chosen.steps)
            parts[f"{side}_value"].append(chosen.values)
            parts[f"{side}_epoch"].append(chosen.epochs)
            parts[f"{side}_wall"].append(chosen.walls)
        # Both chains hold one point per (series, bucket), in the same order.
        parts["series"].append(owner)
        parts["width"].append(np.full(len(owner), width, dtype=np.int64))
        parts["bucket"].append(chosen.steps // width)
    columns = {c: np.concatenate(v) for c, v in parts.items()}
    return _Upsert(
        MetricRollup.__table__,
        ["job_id", "name", "width", "bucket"],
        _ROLLUP_MERGE,
        columns.pop("series"),
        columns,
        _ROLLUP_CHANGED,
    )


# ---------------------------------------------------------------------------------------------
# Reading


def summaries(
    *, session: Session, job_ids: Iterable[str], names: Iterable[str] | None = None
) -> dict[tuple[str, str], MetricSummary]:
    query = select(MetricSummary).where(MetricSummary.job_id.in_(list(job_ids)))
    if names is not None:
        query = query.where(MetricSummary.name.in_(list(names)))
    return {(s.job_id, s.name): s for s in session.scalars(query)}


def _raw(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Points]:
    if not keys:
        return {}
    rows = session.execute(
        select(
            Metric.job_id, Metric.name, Metric.step, Metric.value, Metric.epoch, Metric.wall_time
        )
        .where(tuple_(Metric.job_id, Metric.name).in_(keys))
        .order_by(Metric.job_id, Metric.name, Metric.step)
    ).all()
    out: dict[tuple[str, str], list] = {}
    for row in rows:
        out.setdefault((row[0], row[1]), []).append(row[2:])
    return {key: _points(values) for key, values in out.items()}


def _points(rows: list) -> Points:
    steps, values, epochs, walls = zip(*rows, strict=True) if rows else ((), (), (), ())
    return Points(
        np.asarray(steps, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
        np.asarray([np.nan if e is None else e for e in epochs], dtype=np.float64),
        np.asarray(walls, dtype=np.float64),
    )


def downsample_points(candidates: Points, first: int, last: int, max_points: int) -> Points:
    """At most `max_points` points: the first and last step, then the lowest and the highest
    point of each of (max_points − 2) / 2 equal step ranges. Every spike survives, and so do
    the series' overall minimum and maximum."""
    if len(candidates) <= max_points:
        return candidates
    buckets = max((max_points - 2) // 2, 1)
    span = max(last - first + 1, 1)
    index = (candidates.steps - first) * buckets // span
    _, low, high = bucket_extremes(index, candidates.values, candidates.steps)
    ends = np.flatnonzero((candidates.steps == first) | (candidates.steps == last))
    keep = np.unique(np.concatenate([low, high, ends]))
    kept = candidates.take(keep)
    order = np.argsort(kept.steps, kind="stable")
    kept = kept.take(order)
    distinct = np.ones(len(kept), dtype=bool)
    distinct[1:] = kept.steps[1:] != kept.steps[:-1]
    return kept.take(distinct)


def read_series(
    *,
    session: Session,
    job_ids: Sequence[str],
    names: Sequence[str],
    max_points: int,
    raw_limit: int | None = None,
) -> dict[tuple[str, str], Points]:
    """Each (job, series) as at most `max_points` points that keep every spike and the series'
    lowest and highest point. A series is read from the coarsest rollup width that still has at
    least one bucket per output bucket (so at most ~4 rollup rows per output point, whatever
    its length), plus its first and last point; a series too short for that is read whole."""
    raw_limit = raw_limit if raw_limit is not None else 8 * max_points
    buckets = max((max_points - 2) // 2, 1)
    known = summaries(session=session, job_ids=job_ids, names=names)
    by_width: dict[int, list[tuple[str, str]]] = {}
    short = []
    for key, s in known.items():
        span = s.last_step - s.first_step + 1
        fitting = [w for w in ROLLUP_WIDTHS if span // w >= buckets]
        if s.count <= raw_limit or not fitting:
            short.append(key)
        else:
            by_width.setdefault(fitting[-1], []).append(key)
    out = {
        key: downsample_points(p, known[key].first_step, known[key].last_step, max_points)
        for key, p in _raw(session, short).items()
    }
    long = {key: known[key] for keys in by_width.values() for key in keys}
    edges: dict[tuple[str, str], list] = {}
    ends = [
        (job, name, step) for (job, name), s in long.items() for step in (s.first_step, s.last_step)
    ]
    if ends:
        for row in session.execute(
            select(
                Metric.job_id, Metric.name, Metric.step, Metric.value, Metric.epoch,
                Metric.wall_time,
            ).where(tuple_(Metric.job_id, Metric.name, Metric.step).in_(ends))
        ):  # fmt: skip
            edges.setdefault((row[0], row[1]), []).append(tuple(row[2:]))
    extremes = (
        MetricRollup.min_step, MetricRollup.min_value, MetricRollup.min_epoch,
        MetricRollup.min_wall, MetricRollup.max_step, MetricRollup.max_value,
        MetricRollup.max_epoch, MetricRollup.max_wall,
    )  # fmt: skip
    for width, keys in by_width.items():
        for key in keys:
            # One query per series, numbers only: numpy converts the rows in one call.
            rows = session.execute(
                select(*extremes).where(
                    MetricRollup.job_id == key[0],
                    MetricRollup.name == key[1],
                    MetricRollup.width == width,
                )
            ).all()
            # tuple(): numpy reads plain tuples fast, Row objects slowly. None (epoch) → NaN.
            table = np.array([tuple(r) for r in rows], dtype=np.float64).reshape(-1, 8)
            candidates = np.concatenate(
                [table[:, :4], table[:, 4:], np.array(edges.get(key, []), dtype=np.float64)
                 .reshape(-1, 4)]
            )  # fmt: skip
            s = long[key]
            out[key] = downsample_points(
                _from_table(candidates), s.first_step, s.last_step, max_points
            )
    return out


def _from_table(table: np.ndarray) -> Points:
    """Columns step, value, epoch, wall of a float array as Points."""
    return Points(
        table[:, 0].astype(np.int64), table[:, 1].copy(), table[:, 2].copy(), table[:, 3].copy()
    )


def first_reaching(
    *,
    session: Session,
    keys: Sequence[tuple[str, str]],
    threshold: float,
    mode: str,
    known: dict[tuple[str, str], MetricSummary] | None = None,
) -> dict[tuple[str, str], tuple[int, float, float | None] | None]:
    """(step, wall seconds, epoch) of the first point of each series at or beyond `threshold`
    (`mode` max: value ≥ threshold; min: value ≤ threshold), or None when never reached.

    The summary answers "never" without reading the series; otherwise the first 1024-step
    rollup bucket whose extreme passes the threshold is found, and only that bucket's rows are
    read."""
    if known is None:
        known = summaries(session=session, job_ids={k[0] for k in keys}, names={k[1] for k in keys})
    passes = (lambda v: v >= threshold) if mode == "max" else (lambda v: v <= threshold)
    out: dict[tuple[str, str], tuple[int, float, float | None] | None] = {}
    width = ROLLUP_WIDTHS[2]
    for key in keys:
        s = known.get(key)
        extreme = None if s is None else (s.max_value if mode == "max" else s.min_value)
        if s is None or extreme is None or not passes(extreme):
            out[key] = None
            continue
        job_id, name = key
        extreme_col = MetricRollup.max_value if mode == "max" else MetricRollup.min_value
        hit = Metric.value >= threshold if mode == "max" else Metric.value <= threshold
        bucket_filter = []
        if s.count > 4 * width:
            first_bucket = session.scalar(
                select(func.min(MetricRollup.bucket)).where(
                    MetricRollup.job_id == job_id,
                    MetricRollup.name == name,
                    MetricRollup.width == width,
                    extreme_col >= threshold if mode == "max" else extreme_col <= threshold,
                )
            )
            if first_bucket is not None:
                bucket_filter = [
                    Metric.step >= first_bucket * width,
                    Metric.step < (first_bucket + 1) * width,
                ]
        row = session.execute(
            select(Metric.step, Metric.wall_time, Metric.epoch)
            .where(Metric.job_id == job_id, Metric.name == name, hit, *bucket_filter)
            .order_by(Metric.step)
            .limit(1)
        ).first()
        out[key] = None if row is None else (row[0], row[1], row[2])
    return out


@dataclass
class Standing:
    job: Any  # models.tables.Job
    value: float
    step: int


def leaderboard(
    *,
    session: Session,
    metric: str,
    order: str,
    at: str = "best",
    owner: str | None = None,
    tag: str | None = None,
    study_id: str | None = None,
    limit: int = 50,
) -> list[Standing]:
    """Jobs ranked by one series' summary (`at` best: the highest for order max, the lowest for
    min; final: the last value). One indexed join on metric_summaries, no metric rows read."""
    from models.tables import Job, StudyTrial

    if at == "final":
        value, step = MetricSummary.last_value, MetricSummary.last_step
    elif order == "max":
        value, step = MetricSummary.max_value, MetricSummary.max_step
    else:
        value, step = MetricSummary.min_value, MetricSummary.min_step
    query = (
        select(Job, value, step)
        .join(MetricSummary, (MetricSummary.job_id == Job.id) & (MetricSummary.name == metric))
        .order_by(value.desc() if order == "max" else value.asc(), Job.created_at, Job.id)
        .limit(limit)
    )
    if owner is not None:
        query = query.where(Job.owner == owner)
    if study_id is not None:
        query = query.join(StudyTrial, StudyTrial.job_id == Job.id).where(
            StudyTrial.study_id == study_id
        )
    if tag is not None:
        key, _, wanted = tag.partition(":")
        field = Job.tags[key]
        query = query.where(field.as_string() == wanted if wanted else field.is_not(None))
    return [Standing(job, v, s) for job, v, s in session.execute(query)]
