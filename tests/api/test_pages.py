"""The dashboard's page and static files: served without a key (the API calls carry it), nothing
loaded from outside, and the first load (HTML + every script and stylesheet it pulls in,
module imports followed) under 300 KB."""

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest
from fastapi.testclient import TestClient

BUDGET_BYTES = 300 * 1024
MODULE_IMPORT = re.compile(r"""(?:^|\n)\s*import\s+(?:[^"';]*?\s+from\s+)?["']([^"']+)["']""")


@pytest.fixture
def client(embedded_db: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("DESCENT_AUTH", "1")
    from tests.conftest import reset_caches

    reset_caches()
    from api.main import create_app

    with TestClient(create_app()) as http:
        yield http


class Assets(HTMLParser):
    """The scripts and stylesheets a page asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[str, bool]] = []  # (src, is a module)
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.scripts.append((str(found["src"]), found.get("type") == "module"))
        if tag == "link" and found.get("rel") == "stylesheet" and found.get("href"):
            self.styles.append(str(found["href"]))


def first_load(client: TestClient) -> dict[str, bytes]:
    """Every file a browser fetches to show `/`: the page, its stylesheets, its scripts and,
    for module scripts, every module they import (transitively)."""
    page = client.get("/")
    assert page.status_code == 200
    loaded = {"/": page.content}
    assets = Assets()
    assets.feed(page.text)
    for href in assets.styles:
        loaded[href] = client.get(href).content
    pending = [(src, module) for src, module in assets.scripts]
    while pending:
        url, module = pending.pop()
        if url in loaded:
            continue
        response = client.get(url)
        assert response.status_code == 200, f"{url}: {response.status_code}"
        assert "javascript" in response.headers["content-type"], url
        loaded[url] = response.content
        if module:
            for specifier in MODULE_IMPORT.findall(response.text):
                assert specifier.startswith((".", "/")), f"{url} imports {specifier} from outside"
                pending.append((urljoin(url, specifier), True))
    return loaded


def test_the_page_needs_no_key_but_the_api_does(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<main id="view"' in page.text and 'id="key-dialog"' in page.text
    assert client.get("/static/js/app.js").status_code == 200
    assert client.get("/v1/jobs").status_code == 401  # auth is on: the data still needs a key


def test_first_load_is_under_the_budget_and_every_import_resolves(client: TestClient) -> None:
    loaded = first_load(client)
    names = set(loaded)
    assert "/static/vendor/uplot/uPlot.iife.min.js" in names
    assert "/static/vendor/uplot/uPlot.min.css" in names
    assert {"/static/js/app.js", "/static/js/api.js", "/static/js/chart.js"} <= names
    assert {f"/static/js/views/{v}.js" for v in ("jobs", "job", "compare", "studies")} <= names
    total = sum(len(body) for body in loaded.values())
    print(f"first load: {total} bytes in {len(loaded)} files")
    assert total < BUDGET_BYTES, {name: len(body) for name, body in loaded.items()}


def test_nothing_is_loaded_from_outside(client: TestClient) -> None:
    assets = Assets()
    assets.feed(client.get("/").text)
    for url in [src for src, _ in assets.scripts] + assets.styles:
        assert url.startswith("/static/"), url
    for url, body in first_load(client).items():
        # No fetch, import or stylesheet may name another host (uPlot's banner names its home).
        text = body.decode()
        assert not re.search(r"""(?:fetch\(|import\(|url\(|src=|href=)\s*["']?https?://""", text), (
            url
        )


def test_uplot_ships_with_its_licence(client: TestClient) -> None:
    licence = client.get("/static/vendor/uplot/LICENSE")
    assert licence.status_code == 200
    assert "MIT License" in licence.text and "Leon Sorokin" in licence.text
    script = client.get("/static/vendor/uplot/uPlot.iife.min.js").text
    assert "uPlot (v1.6." in script  # the version README.md names


def test_static_files_stay_inside_their_folder(client: TestClient) -> None:
    assert client.get("/static/../main.py").status_code == 404
    assert client.get("/static/%2e%2e/main.py").status_code == 404
    assert client.get("/static/js/missing.js").status_code == 404
