"""PostgreSQL or Redis away for a moment (cut at a TCP proxy, every open connection reset): the
API answers 503 with a one-line reason and Retry-After, never a stack trace, and serves again as
soon as the service is back."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from tests.conftest import REDIS_URL, reset_caches
from tests.tcp_proxy import TcpProxy

SPEC = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


def client() -> TestClient:
    from api.main import create_app

    return TestClient(create_app(), raise_server_exceptions=False)


@pytest.fixture
def database_proxy(
    services_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TcpProxy]:
    url = make_url(services_env["DATABASE_URL"])
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port)
    monkeypatch.setenv("DATABASE_URL", proxied.render_as_string(hide_password=False))
    monkeypatch.setenv("DESCENT_AUTH", "off")
    reset_caches()
    yield proxy
    proxy.cut()
    reset_caches()


@pytest.fixture
def broker_proxy(
    services_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TcpProxy]:
    url = make_url(REDIS_URL)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 6379)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{proxy.port}/{url.database or 0}")
    monkeypatch.setenv("DESCENT_AUTH", "off")
    reset_caches()
    yield proxy
    proxy.cut()
    reset_caches()


def assert_unavailable(response, code: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert "\n" not in error["message"] and "Traceback" not in response.text
    assert response.headers["Retry-After"] == "5"
    return error["message"]


def test_database_away_is_503_with_a_reason_and_back_when_it_returns(
    database_proxy: TcpProxy,
) -> None:
    api = client()
    job_id = api.post("/v1/jobs", json=SPEC).json()["id"]
    assert api.get(f"/v1/jobs/{job_id}").status_code == 200
    database_proxy.cut()
    for method, path, body in [
        ("GET", "/v1/jobs", None),
        ("POST", "/v1/jobs", SPEC),
        ("GET", f"/v1/jobs/{job_id}", None),
        ("GET", f"/v1/jobs/{job_id}/metrics", None),
        ("POST", f"/v1/jobs/{job_id}/cancel", None),
    ]:
        message = assert_unavailable(api.request(method, path, json=body), "database_unavailable")
        assert message.startswith("the database did not answer: ")
    ready = api.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["broker"] == "ok"
    database_proxy.restore()
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    assert api.post("/v1/jobs", json=SPEC).status_code == 201
    assert api.get("/readyz").status_code == 200


def test_broker_away_is_503_on_submit_while_reads_go_on(broker_proxy: TcpProxy) -> None:
    api = client()
    accepted = api.post("/v1/jobs", json=SPEC).json()["id"]
    broker_proxy.cut()
    message = assert_unavailable(api.post("/v1/jobs", json=SPEC), "broker_unavailable")
    assert message.startswith("the job could not be queued: ")
    listed = api.get("/v1/jobs", params={"limit": 2})  # the ledger does not need Redis
    assert listed.status_code == 200
    refused, earlier = listed.json()["data"]
    assert earlier["id"] == accepted and earlier["status"] == "queued"
    # The refused one is not left for a worker to find: the client was told to send it again.
    assert refused["status"] == "failed" and refused["error"].startswith("not queued: ")
    assert api.get("/readyz").status_code == 503
    broker_proxy.restore()
    assert api.post("/v1/jobs", json=SPEC).status_code == 201
