"""API keys, ownership and per-key limits, in-process with auth switched on.

The ownership test walks every route of the app whose path takes an id, so a route added later is
checked too (or fails here until its id has a factory in ID_FACTORIES).
"""

import functools
import hashlib
import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, update
from sse_starlette import EventSourceResponse

from models.db import session_scope
from models.keys import create_key, revoke_key
from models.queries import claim_job
from models.tables import ApiKey, Job, KeyRole, utcnow

MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}
# An MLP on the 8×8 digits with four hidden layers of 65,536: 12.9 billion parameters.
HUGE = {**MINIMAL, "model": {"name": "mlp", "args": {"hidden": [65_536] * 4}}, "max_steps": 1}
# Served without a key: probes, Prometheus, the API's documents and the dashboard's page (which
# asks for a key in the browser). Every other route is checked for 401 below.
PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def new_key(owner: str, role: KeyRole = KeyRole.user, **limits: int) -> str:
    with session_scope() as session:
        _, secret = create_key(session=session, owner=owner, role=role, **limits)
    return secret


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Jobs sent to the broker (none is, really); a study's driver is not started."""
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "api.routes.jobs.enqueue", lambda job_id, queue: sent.append((job_id, queue))
    )
    monkeypatch.setattr("api.routes.studies.send_driver", lambda study_id, token: None)
    return sent


@pytest.fixture
def auth_on(monkeypatch: pytest.MonkeyPatch, embedded_db: dict) -> Iterator[None]:
    from models.settings import get_settings

    monkeypatch.setenv("DESCENT_AUTH", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def client(auth_on: None, queued: list) -> TestClient:
    from api.main import create_app

    return TestClient(create_app())


@pytest.fixture
def keys(client: TestClient) -> dict[str, str]:
    return {
        "alice": new_key("alice"),
        "bob": new_key("bob"),
        "admin": new_key("ops", KeyRole.admin),
    }


def submit(client: TestClient, secret: str, spec: dict | None = None) -> str:
    response = client.post("/v1/jobs", json=spec or MINIMAL, headers=bearer(secret))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def create_study(client: TestClient, secret: str) -> str:
    body = {"base": MINIMAL, "space": {"optimizer.lr": [0.1]}, "objective": {"metric": "val_acc"}}
    response = client.post("/v1/studies", json=body, headers=bearer(secret))
    assert response.status_code == 201, response.text
    return response.json()["id"]


# Each path parameter that names a resource, and how to make one owned by a key. A new route
# whose id is not here fails test_every_route_with_an_id_is_covered.
ID_FACTORIES: dict[str, Callable[[TestClient, str], str]] = {
    "job_id": submit,
    "study_id": create_study,
}


@functools.cache
def openapi_paths() -> dict:
    from api.main import create_app

    return create_app().openapi()["paths"]  # seconds to build: once per test session


def operations(client: TestClient) -> list[tuple[str, str, dict]]:
    """(method, path, operation) of every operation in the app's OpenAPI document."""
    paths = openapi_paths()
    return [
        (method.upper(), path, operation)
        for path, methods in paths.items()
        for method, operation in methods.items()
    ]


def api_routes(routes: list | None = None, prefix: str = "") -> Iterator[tuple[str, str, APIRoute]]:
    """(method, path, route) of every route of the app, those left out of OpenAPI too."""
    if routes is None:
        from api.main import create_app

        routes = create_app().router.routes
    for route in routes:
        if isinstance(route, APIRoute):
            for method in sorted(route.methods):
                yield method, prefix + route.path, route
        elif hasattr(route, "original_router"):  # FastAPI ≥ 0.16x keeps included routers whole
            yield from api_routes(
                route.original_router.routes, prefix + route.include_context.prefix
            )


@functools.cache
def route_table() -> tuple[tuple[str, str, APIRoute], ...]:
    return tuple(api_routes())


def id_routes(client: TestClient) -> list[tuple[str, str, list[str]]]:
    """(method, path, id parameters) of every route that takes an id in its path."""
    found = []
    for method, path, _ in route_table():
        params = re.findall(r"{(\w+)}", path)
        if params:
            found.append((method, path, params))
    return found


def streams(path: str) -> bool:
    """A route that answers with an endless event stream while the job runs."""
    return any(
        p == path and route.response_class is EventSourceResponse for _, p, route in route_table()
    )


def protected_routes(client: TestClient) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in route_table() if path not in PUBLIC_PATHS]


def test_every_route_but_health_declares_bearer_auth(client: TestClient) -> None:
    documented = operations(client)
    for method, path, operation in documented:
        if path not in PUBLIC_PATHS:
            assert operation.get("security") == [{"HTTPBearer": []}], (method, path)
    assert {(m, p) for m, p, _ in documented} <= {(m, p) for m, p, _ in route_table()}


def test_every_route_with_an_id_is_covered(client: TestClient) -> None:
    routes = id_routes(client)
    assert any(path == "/v1/jobs/{job_id}" for _, path, _ in routes)
    missing = {(m, p, name) for m, p, names in routes for name in names if name not in ID_FACTORIES}
    assert not missing, f"add an ownership factory to ID_FACTORIES for {sorted(missing)}"


def test_another_keys_resource_is_404_on_every_route_with_an_id(
    client: TestClient, keys: dict[str, str]
) -> None:
    routes = id_routes(client)
    checked = 0
    for method, path, names in routes:
        ids = {name: ID_FACTORIES[name](client, keys["alice"]) for name in names}
        url = path.format(**ids)
        as_bob = client.request(method, url, headers=bearer(keys["bob"]))
        assert as_bob.status_code == 404, (method, path, as_bob.text)
        assert as_bob.json()["error"]["code"] == "not_found"
        # the same answer as for an id that does not exist: nothing to learn by probing
        missing = client.request(
            method, path.format(**dict.fromkeys(names, "0" * 36)), headers=bearer(keys["bob"])
        )
        assert missing.status_code == 404
        if not streams(path):  # the owner's stream would not end: its 404 test suffices
            as_alice = client.request(method, url, headers=bearer(keys["alice"]))
            assert as_alice.status_code not in (401, 403, 404), (method, path, as_alice.text)
        checked += 1
    assert checked >= 3  # read, cancel, metrics at least
    with session_scope() as session:  # bob changed nothing, created nothing
        assert {job.owner for job in session.scalars(select(Job))} <= {"alice"}


def test_ids_in_queries_and_bodies_are_checked_too(client: TestClient, keys: dict) -> None:
    """Routes that take job ids outside their path: compare (query), ensembles (body)."""
    job_id = submit(client, keys["alice"])
    compared = client.get("/v1/compare", params={"jobs": job_id}, headers=bearer(keys["bob"]))
    assert compared.status_code == 404 and job_id in compared.json()["error"]["message"]
    own = client.get("/v1/compare", params={"jobs": job_id}, headers=bearer(keys["alice"]))
    assert own.status_code == 200

    def ensemble(ids: list[str], secret: str) -> str:
        response = client.post("/v1/ensembles", json={"jobs": ids}, headers=bearer(secret))
        assert response.status_code == 422
        return response.json()["error"]["message"]

    # bob learns nothing: alice's jobs read exactly like jobs that do not exist
    pair = [job_id, submit(client, keys["alice"])]
    as_bob = ensemble(pair, keys["bob"])
    assert as_bob == f"no job {pair[0]}; no job {pair[1]}"
    assert ensemble(["0" * 36, "1" * 36], keys["bob"]) == f"no job {'0' * 36}; no job {'1' * 36}"
    assert "queued, not succeeded" in ensemble(pair, keys["alice"])


def test_bobs_cancel_leaves_alices_job_running(client: TestClient, keys: dict[str, str]) -> None:
    job_id = submit(client, keys["alice"])
    with session_scope() as session:
        claim_job(session=session, job_id=job_id, worker="w", lease_seconds=60)
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(keys["bob"])).status_code == 404
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(keys["alice"])).json()
    assert job["status"] == "running" and job["cancel_requested"] is False


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer dsk_not-a-key"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "dsk_without_scheme"},
    ],
    ids=["missing", "unknown", "empty", "basic", "no-scheme"],
)
def test_missing_or_invalid_key_is_401_on_every_protected_route(
    client: TestClient, keys: dict[str, str], queued: list, headers: dict[str, str]
) -> None:
    job_id = submit(client, keys["alice"])
    for method, path in protected_routes(client):
        url = re.sub(r"{\w+}", job_id, path)
        response = client.request(method, url, headers=headers, json=MINIMAL)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert len(queued) == 1
    for path in ("/healthz", "/openapi.json"):
        assert client.get(path, headers=headers).status_code == 200


def test_revoked_key_is_401(client: TestClient, keys: dict[str, str]) -> None:
    job_id = submit(client, keys["alice"])  # this process now trusts the key for a few seconds
    with session_scope() as session:  # revoked here: refused at once, cache or not
        key = session.scalars(select(ApiKey).where(ApiKey.owner == "alice")).one()
        assert revoke_key(session=session, key_id=key.prefix) is not None
    response = client.get(f"/v1/jobs/{job_id}", headers=bearer(keys["alice"]))
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]
    # another key of the same owner still works: revoking is per key
    other = new_key("alice")
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(other)).status_code == 200


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The key cache on a clock the test moves."""
    from models import keys as key_module

    now = [1000.0]
    monkeypatch.setattr(key_module, "key_cache", key_module.KeyCache(clock=lambda: now[0]))
    return now


def test_a_key_revoked_by_another_process_is_refused_within_the_cache_ttl(
    client: TestClient, keys: dict[str, str], clock: list[float]
) -> None:
    """`descent keys revoke` runs in its own process: an API process that verified the key in the
    last KEY_CACHE_SECONDS serves it until then, and reads the key again after."""
    from models.keys import KEY_CACHE_SECONDS

    job_id = submit(client, keys["alice"])
    with session_scope() as session:  # what the CLI's revoke_key does, in another process
        session.execute(update(ApiKey).where(ApiKey.owner == "alice").values(revoked_at=utcnow()))
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(keys["alice"])).status_code == 200
    clock[0] += KEY_CACHE_SECONDS - 0.1
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(keys["alice"])).status_code == 200
    clock[0] += 0.1
    refused = client.get(f"/v1/jobs/{job_id}", headers=bearer(keys["alice"]))
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    # refused from then on: a revoked or unknown key is never cached, it is read every time
    clock[0] += 1000
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(keys["alice"])).status_code == 401


def test_the_key_cache_keeps_live_keys_only_and_copies_them(
    client: TestClient, keys: dict[str, str], clock: list[float]
) -> None:
    from models import keys as key_module

    cache = key_module.key_cache
    for guess in ("dsk_" + "x" * 43, "dsk_" + "y" * 43):
        assert client.get("/v1/jobs", headers=bearer(guess)).status_code == 401
    assert cache.get(key_module.hash_key("dsk_" + "x" * 43)) is None
    job_id = submit(client, keys["bob"])
    cached = key_module.cached_key(keys["bob"])
    assert cached is not None and cached.owner == "bob"
    assert inspect(cached).transient  # a copy that belongs to no session
    # the owner and the limits a request uses come from the cache: no read of the key's row
    with session_scope() as session:
        session.execute(update(ApiKey).where(ApiKey.owner == "bob").values(owner="mallory"))
    listed = client.get("/v1/jobs", headers=bearer(keys["bob"])).json()["data"]
    assert [job["id"] for job in listed] == [job_id]
    assert key_module.cached_key(keys["bob"]).owner == "bob"  # type: ignore[union-attr]


def test_only_the_hash_of_a_key_is_stored(client: TestClient) -> None:
    secret = new_key("carol")
    with session_scope() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.owner == "carol")).one()
        stored = [str(getattr(key, column.key)) for column in ApiKey.__table__.columns]
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(key.prefix) and len(secret) >= 40
    assert not any(secret in value for value in stored)


def test_user_lists_own_jobs_and_admin_lists_all(client: TestClient, keys: dict[str, str]) -> None:
    alices = {submit(client, keys["alice"]) for _ in range(2)}
    bobs = {submit(client, keys["bob"])}

    def listed(secret: str) -> set[str]:
        body = client.get("/v1/jobs", headers=bearer(secret)).json()
        return {job["id"] for job in body["data"]}

    assert listed(keys["alice"]) == alices
    assert listed(keys["bob"]) == bobs
    assert listed(keys["admin"]) == alices | bobs
    bob_job = bobs.pop()
    assert client.get(f"/v1/jobs/{bob_job}", headers=bearer(keys["admin"])).status_code == 200
    canceled = client.post(f"/v1/jobs/{bob_job}/cancel", headers=bearer(keys["admin"]))
    assert canceled.json()["status"] == "canceled"
    # the admin's own submissions are stored under its own owner
    admin_job = submit(client, keys["admin"])
    assert (
        client.get(f"/v1/jobs/{admin_job}", headers=bearer(keys["admin"])).json()["owner"] == "ops"
    )
    assert client.get(f"/v1/jobs/{admin_job}", headers=bearer(keys["bob"])).status_code == 404


def test_too_many_active_jobs_is_429_with_the_limit(client: TestClient, queued: list) -> None:
    secret = new_key("dave", max_active_jobs=2)
    first = submit(client, secret)
    submit(client, secret)
    refused = client.post("/v1/jobs", json=MINIMAL, headers=bearer(secret))
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "too_many_active_jobs" and "limit is 2 active jobs" in error["message"]
    assert len(queued) == 2
    client.post(f"/v1/jobs/{first}/cancel", headers=bearer(secret))  # a finished job frees a place
    submit(client, secret)
    # other owners are not counted against dave
    submit(client, new_key("erin", max_active_jobs=1))


def test_ten_billion_parameter_net_is_refused_at_submit(
    client: TestClient, keys: dict[str, str], queued: list
) -> None:
    response = client.post("/v1/jobs", json=HUGE, headers=bearer(keys["alice"]))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "job_too_large"
    assert "12,890,013,706 parameters" in error["message"]  # exact: see test_sizes.py
    assert "limit is 1,000,000,000 parameters per job" in error["message"]
    assert queued == []
    assert client.get("/v1/jobs", headers=bearer(keys["alice"])).json()["count"] == 0


def test_steps_times_parameters_over_the_keys_limit_is_refused(
    client: TestClient, queued: list
) -> None:
    secret = new_key("frank", max_job_size=1_000_000)
    # mlp [128] on digits: 64·128+128 + 128·10+10 = 9,610 parameters
    ok = {**MINIMAL, "max_steps": 104}  # 999,440
    too_long = {**MINIMAL, "max_steps": 105}  # 1,009,050
    submit(client, secret, ok)
    response = client.post("/v1/jobs", json=too_long, headers=bearer(secret))
    assert response.status_code == 403
    message = response.json()["error"]["message"]
    assert (
        "105 steps × 9,610 parameters" in message and "limit is 1e+06 steps × parameters" in message
    )
    assert len(queued) == 1


def test_rate_limit_is_429_with_retry_after_per_key(client: TestClient, keys: dict) -> None:
    limited = new_key("gina", requests_per_minute=3)
    for _ in range(3):
        assert client.get("/v1/jobs", headers=bearer(limited)).status_code == 200
    refused = client.get("/v1/jobs", headers=bearer(limited))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "3 requests per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one request per 20 s
    assert client.get("/v1/jobs", headers=bearer(keys["alice"])).status_code == 200


def test_local_rate_limiter_refills_at_the_rate() -> None:
    from api.limits import LocalRateLimiter

    now = [1000.0]
    limiter = LocalRateLimiter(clock=lambda: now[0])
    assert all(limiter.acquire("k", 6) is None for _ in range(6))  # a minute's worth at once
    wait = limiter.acquire("k", 6)
    assert wait == pytest.approx(10.0)
    now[0] += 9.9
    assert limiter.acquire("k", 6) == pytest.approx(0.1)
    now[0] += 0.1
    assert limiter.acquire("k", 6) is None
    assert limiter.acquire("k", 6) == pytest.approx(10.0)
    assert limiter.acquire("other", 6) is None


@pytest.mark.services
def test_redis_rate_limiter_is_shared_between_processes(redis_queue: str) -> None:
    from api.limits import RedisRateLimiter
    from tests.conftest import REDIS_URL

    # two limiters stand for two API processes: they share one budget per key
    first, second = (RedisRateLimiter(REDIS_URL, redis_queue) for _ in range(2))
    assert first.acquire("k1", 4) is None and second.acquire("k1", 4) is None
    assert first.acquire("k1", 4) is None and second.acquire("k1", 4) is None
    wait = first.acquire("k1", 4)
    assert wait is not None and 14.0 < wait <= 15.0  # one request per 15 s
    assert second.acquire("k2", 4) is None


def test_redis_rate_limiter_lets_requests_through_when_redis_is_down() -> None:
    from api.limits import RedisRateLimiter
    from tests.conftest import free_port

    limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", "down")
    assert limiter.acquire("k", 1) is None


@pytest.mark.services
def test_limits_and_ownership_on_postgresql_and_redis(
    services_env: dict, queued: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Services mode: auth is on by default, the key row is locked at submit, the rate limit
    lives in Redis."""
    from api.main import create_app
    from models.settings import get_settings

    assert get_settings().auth_enabled
    client = TestClient(create_app())
    assert client.get("/v1/jobs").status_code == 401
    alice, bob = new_key("alice", max_active_jobs=1, requests_per_minute=5), new_key("bob")
    job_id = submit(client, alice)
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(bob)).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/metrics", headers=bearer(bob)).status_code == 404
    assert client.post("/v1/jobs", json=MINIMAL, headers=bearer(alice)).status_code == 429
    statuses = [client.get("/v1/jobs", headers=bearer(alice)).status_code for _ in range(4)]
    assert (
        statuses[-1] == 429
        and "retry-after" in client.get("/v1/jobs", headers=bearer(alice)).headers
    )
    assert client.post("/v1/jobs", json=HUGE, headers=bearer(bob)).status_code == 403


def test_specs_name_registered_components_only(client: TestClient, keys: dict) -> None:
    for path in ("torch.optim.SGD", "os.system", "__import__('os')"):
        spec = {**MINIMAL, "optimizer": {"name": path}}
        response = client.post("/v1/jobs", json=spec, headers=bearer(keys["alice"]))
        assert response.status_code == 422
        detail = response.json()["error"]["details"][0]
        assert detail["field"] == "optimizer.name" and "valid choices" in detail["message"]


def test_auth_defaults_on_in_services_mode_and_off_embedded(
    monkeypatch: pytest.MonkeyPatch, settings_env: dict
) -> None:
    from models.settings import Settings

    assert Settings().auth_enabled is False
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://x@127.0.0.1/x")
    assert Settings().auth_enabled is True
    monkeypatch.setenv("DESCENT_AUTH", "0")
    assert Settings().auth_enabled is False
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("DESCENT_AUTH", "1")
    assert Settings().auth_enabled is True


def test_without_auth_the_server_binds_loopback_only(
    monkeypatch: pytest.MonkeyPatch, settings_env: dict
) -> None:
    from client.serve import UnsafeBind, refuse_open_bind_without_auth
    from models.settings import get_settings

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        refuse_open_bind_without_auth(host)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(UnsafeBind, match="authentication is off"):
            refuse_open_bind_without_auth(host)
    monkeypatch.setenv("DESCENT_AUTH", "1")
    get_settings.cache_clear()
    refuse_open_bind_without_auth("0.0.0.0")


def test_auth_off_acts_as_the_local_owner(embedded_db: dict, queued: list) -> None:
    from api.main import create_app

    client = TestClient(create_app())
    job = client.post("/v1/jobs", json=MINIMAL).json()
    assert job["owner"] == "local"
    # a big net is refused in single-user mode too (the server's default limits)
    assert client.post("/v1/jobs", json=HUGE).status_code == 403
