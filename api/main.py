"""The app factory. Routers are bare; their prefixes and tags are attached here, in one place."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import ERROR_RESPONSES, install_error_handlers
from api.etag import ETagMiddleware
from api.limits import BodySizeLimit
from api.monitoring import install_metrics
from api.routes import (
    compare,
    ensembles,
    events,
    health,
    jobs,
    leaderboard,
    metrics,
    pages,
    studies,
)
from models.settings import get_settings

_frozen = False


def freeze_long_lived_objects() -> None:
    """Move what the server has built so far (modules, the app, its routes and schemas) out of
    the garbage collector's sight, and once more what survives the first full collection after
    that (what the first requests build: SQLAlchemy and psycopg state, FastAPI's lazy route
    data). A full collection otherwise walks those 200,000 objects every few seconds under
    load: a 100 to 180 ms pause of every request in flight, which made the p99 of
    GET /v1/jobs/{id} (benchmarks/job_read_load.py). Frozen objects are still freed when
    their reference count drops; only cycles among them are never collected. Once a process."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
    pending = [True]

    def after_first_full_collection(phase: str, info: dict) -> None:
        if pending and phase == "stop" and info["generation"] == 2:
            pending.clear()
            gc.freeze()

    gc.callbacks.append(after_first_full_collection)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    freeze_long_lived_objects()
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        title="Descent",
        lifespan=lifespan,
        version="0.1.0",
        description="Train and compare neural-network optimization strategies.",
        responses=ERROR_RESPONSES,
    )
    app.add_middleware(BodySizeLimit, max_bytes=get_settings().max_body_bytes)
    app.add_middleware(ETagMiddleware)  # 304 for unchanged GETs under /v1/
    install_error_handlers(app)
    app.include_router(health.router, tags=["health"])
    app.include_router(jobs.router, prefix="/v1/jobs", tags=["jobs"])
    app.include_router(metrics.router, prefix="/v1/jobs", tags=["metrics"])
    app.include_router(events.router, prefix="/v1/jobs", tags=["events"])
    app.include_router(studies.router, prefix="/v1/studies", tags=["studies"])
    app.include_router(compare.router, prefix="/v1/compare", tags=["compare"])
    app.include_router(ensembles.router, prefix="/v1/ensembles", tags=["ensembles"])
    app.include_router(leaderboard.router, prefix="/v1/leaderboard", tags=["leaderboard"])
    install_metrics(app)  # Prometheus at /metrics
    pages.mount(app)  # the dashboard at / and its files under /static
    return app


app = create_app()
