"""HTTP commands of the CLI: submit, status, list, cancel, metrics, compare, export, and
`study create | summary | list`.

They talk to a running server through `client.api.Descent` (so never import torch, api or
worker here). Results meant for scripts go to stdout (a job id, JSON, CSV, tables); messages and
the progress bar go to stderr, so `ID=$(descent submit spec.yaml)` works.

Exit codes: 0 done (with `submit --watch`: the job succeeded); 1 the watched job ended failed,
diverged or canceled; 2 the server rejected the request (each bad field of a spec is printed) or
the command line is wrong; 3 the server could not be reached or answered another error (401:
a missing or wrong `--key`), or `--timeout` passed while watching. `submit --preset NAME
--watch` follows a study the same way: 0 when it succeeded, 1 when it failed or was canceled.
"""

import csv
import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from client.api import DEFAULT_URL, Comparison, Descent, DescentError, Job, Metrics, Study

SHOWN = ("train_loss", "val_acc")
COMPARED = ("train_loss", "val_loss", "val_acc")  # compare's default columns, when present
STATUS_STYLE = {"succeeded": "green", "failed": "red", "diverged": "red", "canceled": "yellow"}

out = Console()
err = Console(stderr=True)

Url = Annotated[
    str, typer.Option("--url", envvar="DESCENT_URL", help="the API's base URL ($DESCENT_URL)")
]
Seeds = Annotated[
    int | None, typer.Option(min=1, max=100, help="replicates per configuration (a study)")
]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        help="PATH=VALUE on the study's base spec (YAML value), e.g. epochs=1; repeatable"
    ),
]
Key = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="DESCENT_API_KEY",
        show_default=False,
        help="API key, when the server has auth on ($DESCENT_API_KEY)",
    ),
]


def connect(url: str, key: str | None) -> Descent:
    """The client the commands use (tests replace this to talk to an in-process app)."""
    return Descent(url, key)


@contextmanager
def service(url: str, key: str | None) -> Iterator[Descent]:
    """A client whose errors end the command with a message and exit code 2 or 3."""
    try:
        with connect(url, key) as descent:
            yield descent
    except DescentError as exc:
        rejected = exc.status == 422
        what = "rejected" if rejected else "error" if exc.status is None else f"error {exc.status}"
        err.print(f"[red]{what}[/red] {escape(exc.code)}: {escape(exc.message)}")
        for detail in exc.details:
            err.print(
                f"  [bold]{escape(detail.field or '(body)')}[/bold]: {escape(detail.message)}"
            )
        if exc.status == 401:
            err.print(
                "this server wants an API key: pass --key KEY or set DESCENT_API_KEY"
                if not key
                else "the key given (--key or $DESCENT_API_KEY) is not valid here"
            )
        raise typer.Exit(2 if rejected else 3) from exc


def parse_tags(pairs: list[str]) -> dict[str, str]:
    """`["study=sweep", "seed=3"]` → `{"study": "sweep", "seed": "3"}`."""
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"want KEY=VALUE, got {pair!r}", param_hint="--tag")
        tags[key] = value
    return tags


def tag_filter(tag: str | None) -> str | None:
    """The API filters by `key` or `key:value`; accept `key=value` too."""
    if tag is None or ":" in tag.partition("=")[0]:
        return tag
    key, sep, value = tag.partition("=")
    return f"{key}:{value}" if sep else key


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'cyan')}]{status}[/]"


def when(moment: datetime | None, short: bool = False) -> str:
    """Local time; `short` drops the year and the seconds."""
    if moment is None:
        return "-"
    return f"{moment.astimezone():{'%m-%d %H:%M' if short else '%Y-%m-%d %H:%M:%S'}}"


def progress_text(job: Job) -> str:
    p = job.progress
    if p.total_steps:
        return f"{p.step}/{p.total_steps} ({p.fraction or 0:.0%})"
    return str(p.step) if p.step else "-"


def percent_text(job: Job) -> str:
    fraction = job.progress.fraction
    return "-" if fraction is None else f"{fraction:.0%}"


def epoch_text(job: Job) -> str:
    p = job.progress
    return f"{p.epoch:.3g}" + (f"/{p.total_epochs:g}" if p.total_epochs else "")


def value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class LatestMetrics:
    """The newest value of a few series, read incrementally: each read asks only for the steps
    after the previous read's `last_step`."""

    descent: Descent
    job_id: str
    names: tuple[str, ...] = SHOWN
    since_step: int | None = None
    latest: dict[str, float] = field(default_factory=dict)

    def refresh(self) -> str:
        metrics = self.descent.metrics(
            self.job_id, names=list(self.names), since_step=self.since_step
        )
        for name, series in metrics.series.items():
            if series.last is not None:
                self.latest[name] = series.last
        self.since_step = metrics.last_step
        return "  ".join(f"{n} {self.latest[n]:.4g}" for n in self.names if n in self.latest)


def watch(descent: Descent, job: Job, poll: float, timeout: float | None) -> Job:
    """A progress bar (steps, train_loss, val_acc) until the job's status is final."""
    columns = (
        TextColumn("{task.fields[status]:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[shown]}"),
        TimeElapsedColumn(),
    )
    latest = LatestMetrics(descent, job.id)
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(job.id, total=None, status=job.status, shown="")

        def show(current: Job) -> None:
            progress = current.progress
            shown = latest.refresh()
            bar.update(
                task,
                total=progress.total_steps,
                completed=progress.step,
                status=current.status,
                shown=shown,
            )

        return descent.wait(job.id, poll=poll, timeout=timeout, on_update=show)


def submit(
    spec_file: Annotated[
        Path | None, typer.Argument(help="job spec, YAML or JSON (or --preset)", show_default=False)
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="start a ready-made study instead, e.g. mnist_showdown", show_default=False
        ),
    ] = None,
    watch_job: Annotated[
        bool,
        typer.Option("--watch", help="follow the job (or study) with a progress bar until it ends"),
    ] = False,
    name: Annotated[
        str | None, typer.Option(help="the job's name (replaces the spec's), or the study's")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE label added to the spec's tags; repeatable")
    ] = None,
    seeds: Seeds = None,
    override: Overrides = None,
    poll: Annotated[float, typer.Option(min=0.01, help="seconds between reads (--watch)")] = 1.0,
    timeout: Annotated[
        float | None, typer.Option(help="stop watching after this many seconds (exit 3)")
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Submit a job spec, or start a preset study (--preset NAME), and print its id.

    --watch follows it to its end with a progress bar, then prints its summary.

    A job's summary is JSON; a study's bar counts its finished trials, then its table is shown.

    --seeds and --override go with --preset, as in `study create`.

    Exit codes: 0 succeeded, 1 failed/diverged/canceled, 2 rejected or bad usage, 3 no answer.
    """
    from client.cli import load_spec_file  # here, not at the top: client.cli imports us

    if (spec_file is None) == (preset is None):
        raise typer.BadParameter(
            "give a spec file or --preset NAME (one of them)", param_hint="SPEC_FILE / --preset"
        )
    if preset is not None:
        if tag:
            raise typer.BadParameter("tags go on a job spec, not a study", param_hint="--tag")
        definition = study_definition(
            {"preset": preset}, seeds=seeds, budget=None, name=name, override=override
        )
        submit_study(definition, watch_job, poll, timeout, url, key)
        return
    if seeds is not None or override:
        raise typer.BadParameter(
            "--seeds and --override go with --preset (edit the spec file for one job)",
            param_hint="--seeds / --override",
        )
    assert spec_file is not None
    spec = load_spec_file(spec_file)
    if name is not None:
        spec["name"] = name
    if tag:
        existing = spec.get("tags") or {}
        spec["tags"] = {**existing, **parse_tags(tag)} if isinstance(existing, dict) else existing
    with service(url, key) as descent:
        job = descent.submit(spec)
        print(job.id)
        err.print(f"Location: {job.location or descent.url + '/v1/jobs/' + job.id}")
        if not watch_job:
            return
        try:
            job = watch(descent, job, poll, timeout)
        except TimeoutError as exc:
            err.print(f"{exc}; it goes on: descent status {job.id}")
            raise typer.Exit(3) from exc
        except KeyboardInterrupt:
            err.print(f"stopped watching; the job goes on: descent status {job.id}")
            raise typer.Exit(130) from None
    err.print(
        f"job {job.id} {styled(job.status)}" + (f": {escape(job.error)}" if job.error else "")
    )
    print(json.dumps({"status": job.status, "error": job.error, **(job.summary or {})}))
    raise typer.Exit(0 if job.status == "succeeded" else 1)


def submit_study(
    definition: dict[str, Any],
    watch_it: bool,
    poll: float,
    timeout: float | None,
    url: str,
    key: str | None,
) -> None:
    """`submit --preset`: create the study, print its id; with --watch follow it to its end,
    print its table and exit 0 when it succeeded, 1 when it failed or was canceled."""
    with service(url, key) as descent:
        study = descent.create_study(definition)
        print(study.id)
        announce_study(study)
        if not watch_it:
            return
        try:
            study = watch_study(descent, study, poll, timeout)
        except TimeoutError as exc:
            err.print(f"{exc}; it goes on: descent study summary {study.id}")
            raise typer.Exit(3) from exc
        except KeyboardInterrupt:
            err.print(f"stopped watching; the study goes on: descent study summary {study.id}")
            raise typer.Exit(130) from None
    show_study(study)
    raise typer.Exit(0 if study.status == "succeeded" else 1)


def status(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    as_json: Annotated[bool, typer.Option("--json", help="print the job as JSON")] = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Show one job: status, progress, summary and error."""
    with service(url, key) as descent:
        job = descent.job(job_id)
    if as_json:
        print(job.model_dump_json(indent=2))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = {
        "id": job.id,
        "name": escape(job.name or "-"),
        "status": styled(job.status) + (" (cancel requested)" if job.cancel_requested else ""),
        "progress": progress_text(job),
        "epoch": epoch_text(job),
        "attempt": f"{job.attempt}" + (f" on {escape(job.worker)}" if job.worker else ""),
        "tags": escape(", ".join(f"{k}={v}" for k, v in job.tags.items()) or "-"),
        "created": when(job.created_at),
        "started": when(job.started_at),
        "finished": when(job.finished_at),
    }
    if job.error:
        rows["error"] = f"[red]{escape(job.error)}[/red]"
    for key, value in (job.summary or {}).items():
        rows[f"summary.{key}"] = escape(value_text(value))
    for key, value in rows.items():
        table.add_row(key, value)
    out.print(table)


def list_jobs(
    status: Annotated[
        str | None, typer.Option(help="queued, running, requeued, succeeded, failed, …")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="KEY or KEY=VALUE")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="jobs per page")] = 20,
    cursor: Annotated[str | None, typer.Option(help="the next page's cursor")] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List jobs, newest first."""
    with service(url, key) as descent:
        page = descent.jobs(status=status, tag=tag_filter(tag), limit=limit, cursor=cursor)
    # The id is what a user copies into the next command: never wrap or cut it. Name and tags
    # give way first when the terminal is narrow.
    id_width = max((len(job.id) for job in page.data), default=2)
    table = Table(
        Column("id", no_wrap=True, min_width=id_width),
        "name",
        Column("status", no_wrap=True, min_width=9),
        Column("done", no_wrap=True),
        Column("created", no_wrap=True),
        "tags",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    for job in page.data:
        tags = ", ".join(f"{k}={v}" for k, v in job.tags.items())
        table.add_row(
            job.id,
            escape(job.name or ""),
            styled(job.status),
            percent_text(job),
            when(job.created_at, short=True),
            escape(tags),
        )
    out.print(table)
    if page.next_cursor:
        err.print(f"more: descent list --cursor {page.next_cursor}")


def cancel(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Cancel a job: a queued one at once, a running one at its next metrics flush."""
    with service(url, key) as descent:
        job = descent.cancel(job_id)
    note = ""
    if job.cancel_requested:
        note = " (cancel requested; it stops at its next flush)"
    elif job.status != "canceled" and job.finished:
        note = " (already finished)"
    print(f"{job.id} {job.status}{note}")


def print_csv(metrics: Metrics, stream: TextIO | None = None) -> None:
    writer = csv.writer(stream or sys.stdout, lineterminator="\n")
    writer.writerow(["name", "step", "value", "epoch", "wall_time"])
    for name, series in metrics.series.items():
        for p in series.points():
            writer.writerow([name, p.step, p.value, p.epoch, p.wall_time])


def metrics(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    names: Annotated[
        str | None, typer.Option(help="comma-separated, e.g. train_loss,val_acc")
    ] = None,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="every point as CSV: name,step,value,epoch,wall_time")
    ] = False,
    since_step: Annotated[int | None, typer.Option(min=0, help="only steps after this")] = None,
    max_points: Annotated[
        int | None, typer.Option(min=2, help="downsample each series (spikes kept)")
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Print a job's metric series: one row per series, or every point with --csv."""
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    with service(url, key) as descent:
        result = descent.metrics(job_id, names=wanted, since_step=since_step, max_points=max_points)
    if as_csv:
        print_csv(result)
        return
    table = Table("series", "points", "steps", "last", "min", "max")
    for name, series in result.series.items():
        values = [v for v in series.values if v is not None]
        steps = f"{series.steps[0]}-{series.steps[-1]}" if series.steps else "-"
        stats = (series.last, min(values), max(values)) if values else (None, None, None)
        table.add_row(escape(name), str(len(series.steps)), steps, *map(value_text, stats))
    out.print(table)
    err.print(f"job {result.job_id} {styled(result.status)}")


def split_names(text: str | None) -> list[str] | None:
    names = [n.strip() for n in text.split(",") if n.strip()] if text else []
    return names or None


def better(metric: str) -> str:
    """Which end of a series is best: accuracies high, losses and the rest low."""
    return "max" if any(word in metric for word in ("acc", "auc", "f1", "r2")) else "min"


def compare_table(comparison: Comparison, jobs: dict[str, Job], names: list[str]) -> Table:
    table = Table(
        Column("job", no_wrap=True),
        "name",
        Column("status", no_wrap=True),
        "optimizer",
        Column("steps", justify="right"),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    for name in names:
        table.add_column(f"{name}\nfinal ({better(name)})", justify="right", no_wrap=True)
    if comparison.target:
        target = comparison.target
        op = ">=" if target["mode"] == "max" else "<="
        table.add_column(f"{target['metric']}{op}{target['value']:g}\nfirst at", justify="right")
    for column in comparison.jobs:
        job = jobs.get(column.id)
        optimizer = (job.spec.get("optimizer") or {}) if job else {}
        opt_text = f"{optimizer.get('name', '-')} {value_text(optimizer.get('lr'))}".strip()
        cells = []
        for name in names:
            stats = column.metrics.get(name)
            best = None if stats is None else (stats.max if better(name) == "max" else stats.min)
            cells.append("-" if stats is None else f"{stats.final:.4g} ({best:.4g})")
        if comparison.target:
            hit = column.target
            cells.append(
                f"step {hit.step}" + (f", {hit.time_s:.1f} s" if hit.time_s is not None else "")
                if hit and hit.reached
                else "not reached"
            )
        table.add_row(
            column.id,
            escape(column.name or ""),
            styled(column.status),
            escape(opt_text if job else "-"),
            str(job.progress.step) if job else "-",
            *cells,
        )
    return table


def compare(
    job_ids: Annotated[list[str], typer.Argument(help="two or more job ids")],
    metrics_option: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            help="comma-separated series (default: train_loss, val_loss, val_acc if present)",
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="e.g. val_acc>=0.97: when each job first reached it")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Compare jobs in a table: the final and best value of each series.

    Best is the lowest loss or the highest accuracy; --target adds when each job first reached
    a value. Exit codes: 0 shown, 2 a bad request, 3 an unknown job or no answer."""
    wanted = split_names(metrics_option)
    with service(url, key) as descent:
        comparison = descent.compare(job_ids, metrics=wanted, target=target, max_points=4)
        jobs = {job_id: descent.job(job_id) for job_id in dict.fromkeys(job_ids)}
    if as_json:
        print(comparison.model_dump_json(indent=2, exclude={"series"}))
        return
    present = sorted({name for column in comparison.jobs for name in column.metrics})
    names = wanted or [n for n in COMPARED if n in present] or present[:4]
    out.print(compare_table(comparison, jobs, names))


def export(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    format: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write (csv: default stdout)")
    ] = None,
    names: Annotated[str | None, typer.Option(help="comma-separated series; default all")] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Export every metric point of a job: name, step, value, epoch, wall_time.

    Parquet needs pyarrow (`pip install pyarrow`), which Descent does not install itself."""
    if format not in ("csv", "parquet"):
        raise typer.BadParameter("csv or parquet", param_hint="--format")
    if format == "parquet":
        if importlib.util.find_spec("pyarrow") is None:
            err.print(
                "[red]parquet export needs pyarrow[/red], which is not installed: "
                "`pip install pyarrow`, or use --format csv"
            )
            raise typer.Exit(2)
        if output is None:
            raise typer.BadParameter("parquet is binary: name a file", param_hint="--output")
    with service(url, key) as descent:
        result = descent.metrics(job_id, names=split_names(names))
    points = sum(len(series.steps) for series in result.series.values())
    if format == "parquet":
        write_parquet(result, output)  # type: ignore[arg-type]
    elif output is None:
        print_csv(result)
    else:
        with output.open("w", newline="") as stream:
            print_csv(result, stream)
    where = f" to {output}" if output else ""
    err.print(f"{points} points of {len(result.series)} series{where}")


def write_parquet(metrics: Metrics, path: Path) -> None:
    import pyarrow as pa  # type: ignore[import-not-found]  # optional: checked by the caller
    import pyarrow.parquet as pq  # type: ignore[import-not-found]

    columns: dict[str, list[Any]] = {k: [] for k in ("name", "step", "value", "epoch", "wall_time")}
    for name, series in metrics.series.items():
        columns["name"] += [name] * len(series.steps)
        columns["step"] += series.steps
        columns["value"] += series.values
        columns["epoch"] += series.epochs
        columns["wall_time"] += series.wall_times
    schema = pa.schema(
        [
            ("name", pa.string()),
            ("step", pa.int64()),
            ("value", pa.float64()),
            ("epoch", pa.float64()),
            ("wall_time", pa.float64()),
        ]
    )
    pq.write_table(pa.table(columns, schema=schema), path)


study_app = typer.Typer(
    help="Studies: a space of specs over seeds, summarized.", no_args_is_help=True
)


@study_app.command("create")
def study_create(
    definition_file: Annotated[
        Path | None, typer.Argument(help="study definition, YAML or JSON")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="a ready-made study, e.g. mnist_showdown")
    ] = None,
    seeds: Seeds = None,
    budget: Annotated[int | None, typer.Option(min=1, help="configurations to run")] = None,
    override: Overrides = None,
    name: Annotated[str | None, typer.Option(help="the study's name")] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Start a study from a definition file or a preset; prints its id."""
    from client.cli import load_spec_file  # here, not at the top: client.cli imports us

    if (definition_file is None) == (preset is None):
        raise typer.BadParameter("give a definition file or --preset NAME (one of them)")
    definition = study_definition(
        load_spec_file(definition_file) if definition_file else {"preset": preset},
        seeds=seeds,
        budget=budget,
        name=name,
        override=override,
    )
    with service(url, key) as descent:
        study = descent.create_study(definition)
    print(study.id)
    announce_study(study)


def study_definition(
    definition: dict[str, Any],
    *,
    seeds: int | None,
    budget: int | None,
    name: str | None,
    override: list[str] | None,
) -> dict[str, Any]:
    """A study definition (a file's, or `{"preset": NAME}`) with the command line's options
    on it: `study create` and `submit --preset` share it."""
    import yaml  # type: ignore[import-untyped]

    if seeds is not None:
        definition["seeds"] = seeds
    if budget is not None:
        definition["budget"] = budget
    if name is not None:
        definition["name"] = name
    for pair in override or []:
        path, sep, value = pair.partition("=")
        if not sep or not path:
            raise typer.BadParameter(f"want PATH=VALUE, got {pair!r}", param_hint="--override")
        definition.setdefault("overrides", {})[path] = yaml.safe_load(value)
    return definition


def study_label(study: Study) -> str:
    return escape(study.name or study.preset or study.id)


def announce_study(study: Study) -> None:
    err.print(
        f"study {study_label(study)} {styled(study.status)}: descent study summary {study.id}"
    )


def watch_study(descent: Descent, study: Study, poll: float, timeout: float | None) -> Study:
    """A progress bar (trial jobs finished / planned) until the study has ended."""
    columns = (
        TextColumn("{task.fields[status]:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trials"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as bar:
        done, total = study.trials()
        task = bar.add_task(study.id, total=total, completed=done, status=study.status)

        def show(current: Study) -> None:
            done, total = current.trials()
            bar.update(task, total=total, completed=done, status=current.status)

        return descent.wait_study(study.id, poll=poll, timeout=timeout, on_update=show)


def show_study(study: Study) -> None:
    """The study's state and objective (stderr), its ranked table (stdout) and its error."""
    assert study.summary is not None
    objective = study.summary.objective
    by_status = ", ".join(f"{v} {k}" for k, v in study.summary.jobs_by_status.items())
    err.print(
        f"study {study_label(study)} {styled(study.status)}: "
        f"{objective['direction']} {objective['metric']} ({objective['at']}); "
        f"jobs: {by_status or 'none yet'}"
    )
    out.print(study_table(study))
    if study.error:
        err.print(f"[red]{escape(study.error)}[/red]")


def study_table(study: Study) -> Table:
    assert study.summary is not None
    summary = study.summary
    rows = summary.rows
    published = any(row.published is not None for row in rows)
    target = summary.objective.get("target") is not None
    confidence = round(summary.confidence * 100)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    headers = ["rank", "configuration", "state", "n", f"mean ± {confidence}% CI", "best"]
    headers += ["published"] if published else []
    headers += ["reached", "steps to target", "time to target"] if target else []
    headers += ["Δ vs best", "p (Holm)"]
    for header in headers:
        table.add_column(header, justify="left" if header == "configuration" else "right")
    for row in rows:
        half = None if row.ci_high is None or row.mean is None else row.ci_high - row.mean
        mean = "-" if row.mean is None else f"{row.mean:.4g}" + (f" ± {half:.2g}" if half else "")
        p_value = (row.vs_best or {}).get("p_adjusted")
        cells = [
            str(row.rank or "-"),
            escape(row.label),
            row.state,
            f"{row.n}/{row.seeds}",
            mean,
            value_text(row.best),
        ]
        cells += [value_text(row.published)] if published else []
        if target:
            time_s = row.time_to_target_s
            cells += [
                row.reached or "-",
                value_text(row.steps_to_target),
                "-" if time_s is None else f"{time_s:.1f} s",
            ]
        cells += [
            value_text((row.vs_best or {}).get("difference")),
            "-" if p_value is None else ("<0.001" if p_value < 0.001 else f"{p_value:.3f}"),
        ]
        table.add_row(*cells)
    return table


@study_app.command("summary")
def study_summary(
    study_id: Annotated[str, typer.Argument(help="the study's id")],
    format: Annotated[str, typer.Option("--format", help="table, json, csv or markdown")] = "table",
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Show a study's table: one row per configuration, ranked.

    Each row: the objective's mean ± CI over seeds, best, time to target, and the difference to
    the best configuration with a Holm-adjusted p-value. csv and markdown come from the server."""
    if format not in ("table", "json", "csv", "markdown"):
        raise typer.BadParameter("table, json, csv or markdown", param_hint="--format")
    with service(url, key) as descent:
        if format in ("csv", "markdown"):
            print(descent.study_report(study_id, format), end="")
            return
        study = descent.study(study_id)
    if format == "json":
        print(study.model_dump_json(indent=2))
        return
    show_study(study)


@study_app.command("list")
def study_list(
    status: Annotated[str | None, typer.Option(help="running, succeeded, failed, canceled")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List studies, newest first."""
    with service(url, key) as descent:
        found = descent.studies(status=status, limit=limit)
    table = Table("id", "name", "status", "objective", "budget", "seeds", "created")
    for study in found:
        objective = f"{study.objective.get('direction')} {study.objective.get('metric')}"
        table.add_row(
            study.id,
            escape(study.name or study.preset or ""),
            styled(study.status),
            objective,
            str(study.budget),
            str(len(study.seeds)),
            when(study.created_at, short=True),
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    """Attach the HTTP commands to the CLI."""
    app.command()(submit)
    app.command()(status)
    app.command("list")(list_jobs)
    app.command()(cancel)
    app.command()(metrics)
    app.command()(compare)
    app.command()(export)
    app.add_typer(study_app, name="study")
