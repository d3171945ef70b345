"""The app factory. Routers are bare; their prefixes and tags are attached here, in one place."""

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


def create_app() -> FastAPI:
    app = FastAPI(
        title="Descent",
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
