"""Liveness (the process answers) and readiness (the database and the broker answer)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.queue import broker_reachable
from models.db import get_engine

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, do not crash
        checks["database"] = f"{type(exc).__name__}: {exc}"
    checks["broker"] = broker_reachable() or "ok"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
