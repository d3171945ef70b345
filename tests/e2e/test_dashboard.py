"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright,
against the real service (`descent up`: API + worker, embedded SQLite).

- two jobs submitted while the jobs table is open reach `succeeded` in it without a reload;
  compare draws their two curves (the canvas holds pixels of both series' colours), the job view
  its curves and summary;
- compare of 10 jobs × 500 points per series: every curve is there. The render time is measured
  and written to the artifacts folder, and to benchmarks/results/dashboard_render.json when
  DESCENT_WRITE_RESULTS=1 (reported, not asserted: a test run leaves the tree clean);
- with auth on, the page asks for a key, keeps it for the tab, and lists that owner's jobs.

Screenshots go to the test's artifacts folder (printed; DESCENT_ARTIFACTS_DIR to choose it).
Skips with a reason when Chromium or Playwright is missing, unless REQUIRE_SERVICES=1.
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ROOT,
    SETTINGS_ENV,
    ServiceProcess,
    free_port,
    reset_caches,
    service_missing,
    wait_for_http,
)

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("DESCENT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The first two colours of the dashboard's palette (api/static/js/chart.js): job 1 and job 2.
FIRST_COLOURS = ("#4e79a7", "#f28e2b")
RESULTS = ROOT / "benchmarks" / "results" / "dashboard_render.json"
PAGE_BUDGET_BYTES = 300 * 1024


@dataclass
class Service:
    url: str
    data_dir: Path
    process: ServiceProcess


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("DESCENT_ARTIFACTS_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("dashboard-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install playwright)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        service_missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Service]:
    """`descent up` on a free port; this process's settings point at the same SQLite file, so
    tests can write jobs into the ledger as a worker would."""
    folder = tmp_path_factory.mktemp("dashboard-service")
    port = free_port()
    env = {
        "DESCENT_DATA_DIR": str(folder / "data"),
        "PORT": str(port),
        "DESCENT_FLUSH_SECONDS": "0.2",
    }
    up = ServiceProcess(["up"], env, folder / "up.log")
    with pytest.MonkeyPatch.context() as patch:
        for name in SETTINGS_ENV:
            patch.delenv(name, raising=False)
        patch.setenv("DESCENT_DATA_DIR", env["DESCENT_DATA_DIR"])
        reset_caches()
        try:
            wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
            yield Service(f"http://127.0.0.1:{port}", folder / "data", up)
        finally:
            up.stop()
            reset_caches()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab; any uncaught error in the page's scripts fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def submit(http: httpx.Client, name: str, optimizer: dict[str, Any]) -> str:
    spec = {
        "name": name,
        "tags": {"suite": "dashboard"},
        "model": {"name": "linear"},
        "data": {"name": "digits"},
        "optimizer": optimizer,
        "epochs": 2,
    }
    created = http.post("/v1/jobs", json=spec)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def colour_pixels(page: Any, metric: str, colours: tuple[str, ...]) -> list[int]:
    """How many pixels of each colour the chart's canvas holds (a drawn curve is hundreds)."""
    return page.evaluate(
        """([metric, colours]) => {
            const canvas = document.querySelector(`.chart[data-metric="${metric}"] canvas`);
            const ctx = canvas.getContext("2d");
            const {data} = ctx.getImageData(0, 0, canvas.width, canvas.height);
            const rgb = colours.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
            const counts = rgb.map(() => 0);
            for (let p = 0; p < data.length; p += 4) {
                if (data[p + 3] < 200) continue;
                rgb.forEach(([r, g, b], k) => {
                    if (Math.abs(data[p] - r) + Math.abs(data[p + 1] - g)
                        + Math.abs(data[p + 2] - b) < 40) counts[k]++;
                });
            }
            return counts;
        }""",
        [metric, list(colours)],
    )


def first_load_bytes(browser: Any, url: str) -> dict[str, int]:
    """Bytes of the HTML, scripts and styles the browser actually fetched to show `/`."""
    context = browser.new_context()
    tab = context.new_page()
    sizes: dict[str, int] = {}

    def count(response: Any) -> None:
        if response.request.resource_type in ("document", "script", "stylesheet"):
            sizes[response.url.removeprefix(url)] = len(response.body())

    tab.on("response", count)
    tab.goto(url + "/")
    tab.wait_for_selector("#jobs-table")
    context.close()
    return sizes


def test_jobs_go_live_and_compare_draws_both_curves(
    service: Service, page: Any, browser: Any, artifacts: Path
) -> None:
    page.goto(service.url + "/")
    page.wait_for_selector("#jobs-table")
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads

    with httpx.Client(base_url=service.url, timeout=10) as http:
        first = submit(http, "dash-sgd", {"name": "sgd", "lr": 0.1})
        second = submit(http, "dash-adam", {"name": "adam", "lr": 0.01})
    for job_id in (first, second):
        row = page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')
        row.wait_for(timeout=20_000)  # the new rows appear by themselves
    final = (
        ":is([data-status=succeeded], [data-status=failed], [data-status=canceled], "
        "[data-status=diverged])"
    )
    for job_id in (first, second):
        ended = page.locator(f'#jobs-table tr[data-job-id="{job_id}"]{final}')
        ended.wait_for(timeout=180_000)  # no reload: the table updates itself
        if ended.get_attribute("data-status") != "succeeded":
            page.screenshot(path=str(artifacts / "jobs-not-succeeded.png"), full_page=True)
            job = httpx.get(f"{service.url}/v1/jobs/{job_id}").json()
            raise AssertionError(f"job {job_id} is {job['status']}: {job['error']}")
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    row_text = page.locator(f'#jobs-table tr[data-job-id="{first}"]').inner_text()
    for shown in ("dash-sgd", "suite=dashboard", "sgd", "fp32", "val_acc"):
        assert shown in row_text, (shown, row_text)
    page.screenshot(path=str(artifacts / "jobs.png"), full_page=True)

    for job_id in (first, second):
        page.locator(f'#jobs-table tr[data-job-id="{job_id}"] input[type="checkbox"]').check()
    page.get_by_role("button", name="Compare 2").click()
    page.wait_for_selector('#view[data-renders="1"]', timeout=20_000)
    chart = page.locator('.chart[data-metric="train_loss"]')
    assert chart.get_attribute("data-series") == "2"
    sgd_pixels, adam_pixels = colour_pixels(page, "train_loss", FIRST_COLOURS)
    assert sgd_pixels > 50 and adam_pixels > 50, (sgd_pixels, adam_pixels)
    page.wait_for_selector("#compare-summary tbody tr:nth-child(2)")
    summary_rows = page.locator("#compare-summary tbody tr")
    assert summary_rows.count() == 2
    assert {summary_rows.nth(i).get_attribute("data-job-id") for i in range(2)} == {first, second}
    page.screenshot(path=str(artifacts / "compare.png"), full_page=True)

    # The log-scale toggle and the wall-time axis redraw the same two curves.
    page.locator("#compare-log").check()
    page.wait_for_selector('#view[data-renders="1"] .chart[data-metric="train_loss"]')
    page.select_option("#compare-x", "time")
    page.wait_for_function("location.hash.includes('x=time') && location.hash.includes('log=1')")
    page.wait_for_selector('#view[data-renders="1"] .chart[data-metric="train_loss"]')
    assert page.locator('.chart[data-metric="train_loss"]').get_attribute("data-series") == "2"
    assert "wall time" in page.locator('.chart[data-metric="train_loss"]').inner_text()

    page.locator(f'#compare-summary a[href="#/jobs/{first}"]').click()
    page.wait_for_selector('.chart[data-metric="loss"][data-series]')
    assert page.locator('.chart[data-metric="learning rate"]').count() == 1
    assert "val_acc" in page.inner_text(".summary")
    assert '"sgd"' in page.inner_text("pre.spec")
    page.screenshot(path=str(artifacts / "job.png"), full_page=True)

    # A long job, canceled from its page: the page follows it to `canceled` by itself.
    with httpx.Client(base_url=service.url, timeout=10) as http:
        spec = {"name": "dash-long", "model": {"name": "mlp"}, "data": {"name": "digits"}}
        spec |= {"optimizer": {"name": "sgd"}, "epochs": 200}
        created = http.post("/v1/jobs", json=spec)
        assert created.status_code == 201, created.text
        long_id = created.json()["id"]
    page.goto(f"{service.url}/#/jobs/{long_id}")
    page.locator("#cancel").click()
    page.wait_for_selector(".toolbar .badge[data-status='canceled']", timeout=60_000)
    assert page.locator("#cancel").count() == 0

    sizes = first_load_bytes(browser, service.url)
    print(f"first load: {sum(sizes.values())} bytes: {sizes}")
    assert "/static/vendor/uplot/uPlot.iife.min.js" in sizes
    assert sum(sizes.values()) < PAGE_BUDGET_BYTES
    (artifacts / "first_load.json").write_text(json.dumps(sizes, indent=2))


def seed_finished_job(index: int, optimizer: str, points: int, names: tuple[str, ...]) -> str:
    """A finished job with `points` points per series, written through the ledger's own
    functions exactly as a worker writes them."""
    from models import queries
    from models.db import session_scope
    from models.spec import JobSpec
    from models.tables import JobStatus

    submitted = {
        "name": f"bench-{index}",
        "model": {"name": "mlp"},
        "data": {"name": "digits"},
        "optimizer": {"name": optimizer},
    }
    spec = JobSpec.model_validate(submitted)
    with session_scope() as session:
        job_id = queries.create_job(
            session=session, spec=spec, submitted=submitted, owner="local"
        ).id
    with session_scope() as session:
        claim = queries.claim_job(session=session, job_id=job_id, worker="seed", lease_seconds=600)
        assert claim is not None
    shift = index / 40  # ten curves apart from each other
    rows = []
    for step in range(1, points + 1):
        values = {
            "train_loss": 2.3 / (1 + step / 50) + shift,
            "val_loss": 2.4 / (1 + step / 60) + shift,
            "val_acc": 1 - 0.9 / (1 + step / 40) - shift / 4,
            "lr": 0.1 * (1 - step / (points + 1)),
        }
        rows += [
            {
                "name": n,
                "step": step,
                "value": values[n],
                "epoch": step / 100,
                "wall_time": 0.01 * step,
            }
            for n in names
        ]
    with session_scope() as session:
        queries.record_progress(
            session=session,
            job_id=job_id,
            attempt=claim.attempt,
            points=rows,
            step=points,
            epoch=points / 100,
            total_steps=points,
            total_epochs=points / 100,
            lease_seconds=600,
        )
    with session_scope() as session:
        finished = queries.finish_job(
            session=session,
            job_id=job_id,
            attempt=claim.attempt,
            status=JobStatus.succeeded,
            summary={"steps": points},
        )
        assert finished
    return job_id


def test_compare_of_ten_jobs_of_500_points(service: Service, page: Any, artifacts: Path) -> None:
    names = ("train_loss", "val_loss", "val_acc", "lr")
    optimizers = ["sgd", "adam", "adamw", "rmsprop", "adagrad"]
    ids = [seed_finished_job(i, optimizers[i % 5], 500, names) for i in range(10)]
    target = f"#/compare?ids={','.join(ids)}"
    page.goto(service.url + "/#/studies")
    page.wait_for_selector("#studies-table")

    runs = []
    for attempt in range(3):
        page.evaluate(
            "target => { window.__t0 = performance.now(); location.hash = target; }", target
        )
        page.wait_for_selector('#view[data-renders="1"]', timeout=30_000)
        total = page.evaluate("performance.now() - window.__t0")
        view = page.locator("#view")
        runs.append(
            {
                "render_ms": float(view.get_attribute("data-render-ms")),
                "fetch_ms": float(view.get_attribute("data-fetch-ms")),
                "total_ms": round(total, 1),
            }
        )
        charts = page.locator("#compare-charts .chart")
        assert charts.count() == len(names)
        for i in range(len(names)):
            assert charts.nth(i).get_attribute("data-series") == "10"
            assert charts.nth(i).get_attribute("data-points") == str(10 * 500)
        page.wait_for_selector("#compare-summary tbody tr:nth-child(10)")  # after the charts
        assert page.locator("#compare-summary tbody tr").count() == 10
        if attempt == 0:
            page.screenshot(path=str(artifacts / "compare-10x500.png"), full_page=True)
        page.evaluate("location.hash = '#/studies'")
        page.wait_for_selector("#studies-table")

    result = {
        "what": "dashboard compare view: 10 jobs x 500 points per series, 4 series (4 charts)",
        "render_ms_median": statistics.median(r["render_ms"] for r in runs),
        "total_ms_median": statistics.median(r["total_ms"] for r in runs),
        "runs": runs,
        "render_ms": "from data in hand to the charts painted (uPlot draw hooks + two frames)",
        "total_ms": "from the hash change to the charts painted, GET /v1/compare included",
        "browser": page.context.browser.version,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "DESCENT_WRITE_RESULTS=1 pytest tests/e2e/test_dashboard.py -k ten_jobs -s",
    }
    print(f"\ncompare 10 jobs x 500 points: {json.dumps(result, indent=2)}")
    (artifacts / RESULTS.name).write_text(json.dumps(result, indent=2) + "\n")
    if os.environ.get("DESCENT_WRITE_RESULTS") == "1":
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


@pytest.fixture
def auth_service(tmp_path: Path, browser: Any) -> Iterator[tuple[str, str]]:
    """The API alone (no worker) with auth on, and one user key made with the CLI."""
    port = free_port()
    env = {"DESCENT_DATA_DIR": str(tmp_path / "data"), "DESCENT_AUTH": "1"}
    serve = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=90)
        clean_env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
        made = subprocess.run(
            [sys.executable, "-m", "client.cli", "keys", "create", "--owner", "alice"],
            cwd=ROOT,
            env={**clean_env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        yield f"http://127.0.0.1:{port}", made.stdout.strip()
    finally:
        serve.stop()


def test_with_auth_on_the_page_asks_for_a_key_and_keeps_it(
    auth_service: tuple[str, str], page: Any, artifacts: Path
) -> None:
    url, key = auth_service
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/v1/jobs").status_code == 401
        http.headers["Authorization"] = f"Bearer {key}"
        job_id = submit(http, "alice-job", {"name": "sgd"})

    page.goto(url + "/")
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    assert "API key" in page.inner_text("#key-reason")
    page.screenshot(path=str(artifacts / "auth-dialog.png"))
    page.fill("#key-input", key)
    page.get_by_role("button", name="Use key").click()
    page.locator(f'#jobs-table tr[data-job-id="{job_id}"]').wait_for()
    assert page.evaluate("sessionStorage.getItem('descent.apiKey')") == key

    page.reload()  # the key stays with the tab: no second prompt
    page.locator(f'#jobs-table tr[data-job-id="{job_id}"]').wait_for()
    assert not dialog.is_visible()

    page.evaluate("sessionStorage.setItem('descent.apiKey', 'not-a-key')")
    page.reload()
    dialog.wait_for(state="visible")
    assert "invalid" in page.inner_text("#key-reason")
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_selector("#view .error")
    assert page.evaluate("sessionStorage.getItem('descent.apiKey')") is None


def test_study_view_shows_published_numbers_beside_ours(
    service: Service, page: Any, artifacts: Path
) -> None:
    tiny = {"epochs": 1, "data.args": {"subset": 100, "source": "bundled"}}
    with httpx.Client(base_url=service.url, timeout=10) as http:
        created = http.post(
            "/v1/studies", json={"preset": "mnist_showdown", "seeds": 1, "overrides": tiny}
        )
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]

    page.goto(f"{service.url}/#/studies")
    page.locator(f'#studies-table tr[data-study-id="{study_id}"] a').click()
    page.wait_for_selector("#study-summary")
    badge = page.locator(".toolbar .badge:not([data-status='running'])")
    badge.wait_for(timeout=240_000)  # the page follows the study by itself
    page.screenshot(path=str(artifacts / "study.png"), full_page=True)
    assert badge.get_attribute("data-status") == "succeeded"
    jobs_by_status = page.inner_text("p.muted")
    assert "6 succeeded" in jobs_by_status, jobs_by_status
    rows = page.locator("#study-summary tbody tr")
    assert rows.count() == 6
    adam = page.locator('#study-summary tr[data-label="Adam"]').inner_text()
    assert "0.9908" in adam  # the published number, beside ours
    assert "published" in page.inner_text("#study-summary thead")
    assert page.locator('.chart[data-metric="objective"] canvas').count() == 1
    assert page.locator('.chart[data-metric="objective"]').get_attribute("data-series") == "2"
