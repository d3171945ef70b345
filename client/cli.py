"""The `descent` command line.

Server side: `descent up` (API + worker, what `make run` runs), `serve`, `worker`, `migrate`.
In-process: `descent run spec.yaml` runs a spec here (train, lr_range_test, solve), no service.
Client side (HTTP): submit, status, list, cancel, metrics — see client/remote.py.
"""

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from client import remote

app = typer.Typer(help="Descent: train and compare optimization strategies.", no_args_is_help=True)
console = Console(stderr=True)


def load_spec_file(path: Path) -> dict[str, Any]:
    """A spec from a YAML or JSON file (JSON is YAML, so one parser reads both)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise typer.BadParameter(f"{path} must hold one mapping (the job spec)")
    return loaded


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="bind address (default DESCENT_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="API port (default PORT or 8000)")] = None,
) -> None:
    """Migrate, then run the API and one worker together until Ctrl-C."""
    from client.serve import up as run_up

    raise typer.Exit(run_up(host, port))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    migrate: Annotated[bool, typer.Option(help="run `alembic upgrade head` first")] = True,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="API server processes on one socket (default DESCENT_API_PROCESSES or 1)",
        ),
    ] = None,
) -> None:
    """Run the HTTP API."""
    from client.serve import serve as run_serve

    raise typer.Exit(run_serve(host, port, run_migrations=migrate, processes=processes))


@app.command()
def worker(
    queues: Annotated[str | None, typer.Option(help="comma-separated; default by device")] = None,
    loglevel: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run one Celery worker process (pool solo: one job at a time, one process per GPU)."""
    from client.serve import worker as run_worker

    run_worker(queues, loglevel)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (`alembic upgrade head`)."""
    from client.serve import migrate as run_migrate

    run_migrate()
    console.print("database is up to date")


@app.command()
def run(
    spec_file: Annotated[Path, typer.Argument(help="job spec, YAML or JSON")],
    device: Annotated[str | None, typer.Option(help="override the spec's device")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print a solve's summary as JSON instead of a table")
    ] = False,
) -> None:
    """Run a spec in this process, no service needed: training and lr_range_test print their
    summary as JSON, solve a table of its methods. Exits 0 when it succeeded, 1 when not, 2 for a
    spec that cannot run here (bad fields, or task: ensemble, which needs the service)."""
    from pydantic import ValidationError

    from client.local import NeedsService, results_console, run_in_process, solve_table
    from models.spec import JobSpec, describe_errors

    raw = load_spec_file(spec_file)
    if device:
        raw["device"] = device
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        for error in describe_errors(list(exc.errors())):
            console.print(f"[red]{error['field']}[/red]: {error['message']}")
        raise typer.Exit(2) from exc
    try:
        outcome = run_in_process(spec, console)
    except NeedsService as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if spec.task == "solve" and not as_json:
        results_console().print(solve_table(outcome.summary))
    else:
        print(json.dumps({"status": outcome.status, "error": outcome.error, **outcome.summary}))
    if outcome.status != "succeeded":
        console.print(f"[red]{outcome.status}[/red]: {outcome.error or 'no error message'}")
    elif spec.task == "lr_range_test":
        console.print(f"suggested lr: {outcome.summary['lr_range_test']['suggested_lr']}")
    raise typer.Exit(0 if outcome.status == "succeeded" else 1)


keys_app = typer.Typer(
    help="API keys (server side: reads and writes the database directly, like `migrate`).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@contextmanager
def key_session() -> Iterator[Any]:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from models.db import session_scope

    try:
        with session_scope() as session:
            yield session
    except (OperationalError, ProgrammingError) as exc:
        console.print(f"[red]database error[/red]: {exc.orig}\n(has `descent migrate` run?)")
        raise typer.Exit(3) from exc


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="whose jobs this key submits and sees")],
    role: Annotated[str, typer.Option(help="user, or admin (sees every owner's jobs)")] = "user",
    name: Annotated[str | None, typer.Option(help="a label, e.g. the machine it is for")] = None,
    max_active_jobs: Annotated[int | None, typer.Option(min=1)] = None,
    max_parameters: Annotated[int | None, typer.Option(min=1)] = None,
    max_job_size: Annotated[
        int | None, typer.Option(min=1, help="steps × parameters per job")
    ] = None,
    requests_per_minute: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Create a key and print it once (stdout); only its hash is stored. Limits left out follow
    the server's defaults (DESCENT_MAX_ACTIVE_JOBS, …)."""
    from models.keys import create_key
    from models.tables import KeyRole

    if role not in KeyRole.__members__:
        raise typer.BadParameter(
            f"choose from {', '.join(KeyRole.__members__)}", param_hint="--role"
        )
    try:
        with key_session() as session:
            key, secret = create_key(
                session=session,
                owner=owner,
                role=KeyRole(role),
                name=name,
                max_active_jobs=max_active_jobs,
                max_parameters=max_parameters,
                max_job_size=max_job_size,
                requests_per_minute=requests_per_minute,
            )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(
        f"created {key.role} key {key.id} ({key.prefix}…) for {key.owner!r}; "
        "it is shown once, store it now:"
    )
    print(secret)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id, or the prefix `keys list` shows")],
) -> None:
    """Revoke a key: requests with it answer 401 within 5 seconds (an API process trusts a key
    it verified that long: models.keys.KEY_CACHE_SECONDS)."""
    from models.keys import revoke_key

    with key_session() as session:
        key = revoke_key(session=session, key_id=key_id)
        if key is None:
            console.print(f"[red]no key (or more than one) matches {key_id!r}[/red]")
            raise typer.Exit(1)
        console.print(f"revoked key {key.id} ({key.prefix}…) of {key.owner!r}")


@keys_app.command("list")
def keys_list(
    owner: Annotated[str | None, typer.Option(help="only this owner's keys")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="include revoked keys")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List keys (never the keys themselves: only their prefixes)."""
    from rich.table import Table

    from models.keys import list_keys

    with key_session() as session:
        rows = [
            {
                "id": k.id,
                "prefix": k.prefix,
                "owner": k.owner,
                "role": k.role,
                "name": k.name,
                "max_active_jobs": k.max_active_jobs,
                "max_parameters": k.max_parameters,
                "max_job_size": k.max_job_size,
                "requests_per_minute": k.requests_per_minute,
                "created_at": k.created_at.isoformat(),
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in list_keys(session=session, owner=owner, include_revoked=revoked)
        ]
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table("id", "prefix", "owner", "role", "name", "limits", "created", "revoked")
    for row in rows:
        limits = ", ".join(
            f"{label}={row[label]}"
            for label in (
                "max_active_jobs",
                "max_parameters",
                "max_job_size",
                "requests_per_minute",
            )
            if row[label] is not None
        )
        table.add_row(
            row["id"],
            row["prefix"] + "…",
            row["owner"],
            row["role"],
            row["name"] or "",
            limits or "server defaults",
            row["created_at"][:19],
            (row["revoked_at"] or "")[:19],
        )
    Console().print(table)


remote.register(app)


def main() -> None:
    app(prog_name="descent")


if __name__ == "__main__":
    sys.exit(main())
