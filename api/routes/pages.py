"""The dashboard: `/` serves one HTML page, `/static/…` its ES modules, CSS and vendored uPlot.

Nothing here needs a build step or the internet. The page and its files are public (no key):
they hold no data. Every API call the page makes carries the key the user typed in
(`Authorization: Bearer …`, kept in sessionStorage), so auth is enforced where it always is,
on the /v1 routes.
"""

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Same-origin only: the page loads no script, style or font from anywhere else, and no inline
# script runs. uPlot sizes its elements through style attributes, hence 'unsafe-inline' for styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
# Revalidate every time (a cheap 304 with the file's ETag), so an upgraded server never runs
# against stale modules cached by the browser.
REVALIDATE = "no-cache"

router = APIRouter()


class DashboardFiles(StaticFiles):
    """StaticFiles (ETag, Last-Modified, 304) with a revalidate-always cache policy."""

    def file_response(self, *args, **kwargs) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


@router.get("/", include_in_schema=False)
def dashboard() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html",
        headers={
            "Cache-Control": REVALIDATE,
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
        },
    )


def mount(app: FastAPI) -> None:
    """Attach the page and its static files (a router cannot carry a mount, so one call does
    both)."""
    app.include_router(router, tags=["dashboard"])
    app.mount("/static", DashboardFiles(directory=STATIC_DIR), name="static")
