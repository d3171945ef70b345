"""GET /v1/jobs/{id}, the read clients and dashboards poll (benchmarks/job_read_load.py): one
SELECT on PostgreSQL without the ORM, the rate limiter's own pipelined Redis connection
(api/redis_script.py), and the garbage collector kept off the app's long-lived objects."""

import asyncio
import gc
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from api.limits import RedisRateLimiter
from api.redis_script import RedisScript, RedisUnavailable, ReplyError
from models.db import session_scope
from models.keys import create_key
from models.queries import claim_job, finish_job
from models.tables import Job, JobStatus, KeyRole
from tests.conftest import REDIS_URL, free_port
from tests.tcp_proxy import TcpProxy

MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "adam"}}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def new_key(owner: str, role: KeyRole = KeyRole.user, **limits: int) -> str:
    with session_scope() as session:
        _, secret = create_key(session=session, owner=owner, role=role, **limits)
    return secret


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.routes.jobs.enqueue", lambda job_id, queue: None)


# --- the read on PostgreSQL -------------------------------------------------------------------


@pytest.mark.services
def test_read_on_postgresql_is_the_orm_view_of_the_job(services_env: dict, no_broker: None) -> None:
    from api.main import create_app
    from api.routes.jobs import job_public

    client = TestClient(create_app())
    alice, bob, admin = new_key("alice"), new_key("bob"), new_key("ops", KeyRole.admin)
    job_id = client.post("/v1/jobs", json=MINIMAL, headers=bearer(alice)).json()["id"]
    summary = {"final": {"val_acc": 0.9}, "steps": 10, "device": "cpu"}
    with session_scope() as session:
        claim = claim_job(session=session, job_id=job_id, worker="w", lease_seconds=60)
        assert claim is not None
        finish_job(
            session=session,
            job_id=job_id,
            attempt=claim.attempt,
            status=JobStatus.succeeded,
            summary=summary,
        )
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        expected = job_public(job).model_dump(mode="json")

    read = client.get(f"/v1/jobs/{job_id}", headers=bearer(alice))
    assert read.status_code == 200 and read.headers["content-type"] == "application/json"
    assert read.json() == expected
    assert read.json()["summary"] == summary and read.json()["finished_at"] is not None
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(admin)).json() == expected
    for secret, wanted in ((bob, job_id), (alice, str(uuid.uuid4()))):
        refused = client.get(f"/v1/jobs/{wanted}", headers=bearer(secret))
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    etag = read.headers["etag"]
    again = client.get(f"/v1/jobs/{job_id}", headers={**bearer(alice), "If-None-Match": etag})
    assert again.status_code == 304


# --- the rate limiter's Redis connection --------------------------------------------------------


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


@pytest.mark.services
def test_requests_and_the_sync_limiter_share_one_budget(redis_queue: str) -> None:
    first, second = (RedisRateLimiter(REDIS_URL, redis_queue) for _ in range(2))

    async def on_the_event_loop() -> list[float | None]:
        return [await second.acquire_async("k", 4) for _ in range(3)]

    assert first.acquire("k", 4) is None
    assert run(on_the_event_loop()) == [None, None, None]
    wait = first.acquire("k", 4)
    assert wait is not None and 14.0 < wait <= 15.0  # a fifth request in a minute of 4


@pytest.mark.services
def test_script_is_sent_in_full_when_redis_does_not_know_it(redis_queue: str) -> None:
    """NOSCRIPT (a restarted or flushed Redis): EVAL once, which caches the script again."""
    text = f"-- {uuid.uuid4()}\nredis.call('SET', KEYS[1], ARGV[1]) return tonumber(ARGV[1]) + 1"
    script, key = RedisScript(REDIS_URL, text), f"{redis_queue}:script"
    client = redis.Redis.from_url(REDIS_URL)
    assert client.script_exists(script._sha.decode()) == [False]

    async def twice() -> list[int]:
        return [await script(key, 41), await script(key, 1)]

    assert run(twice()) == [42, 2]
    assert client.script_exists(script._sha.decode()) == [True]
    assert client.get(key) == b"1"


@pytest.mark.services
def test_the_database_of_the_url_is_selected(redis_queue: str) -> None:
    url = REDIS_URL.rsplit("/", 1)[0] + "/7"
    key = f"{redis_queue}:db7"
    script = RedisScript(url, "redis.call('SET', KEYS[1], 'here') return 1")
    assert run(script(key)) == 1
    db7 = redis.Redis.from_url(url)
    try:
        assert db7.get(key) == b"here" and redis.Redis.from_url(REDIS_URL).get(key) is None
    finally:
        db7.delete(key)


@pytest.mark.services
def test_concurrent_calls_share_one_connection(redis_queue: str) -> None:
    script = RedisScript(REDIS_URL, "return redis.call('INCR', KEYS[1])")
    key = f"{redis_queue}:incr"

    async def many() -> list[int]:
        return list(await asyncio.gather(*(script(key) for _ in range(50))))

    assert sorted(run(many())) == list(range(1, 51))
    assert script._protocol is not None and not script._protocol.pending


@pytest.mark.services
def test_replies_other_than_numbers_and_errors_drop_the_connection(redis_queue: str) -> None:
    async def calls() -> list[str]:
        seen = []
        for text in ("return 'text'", "return redis.call('NOSUCHCOMMAND')", "return 3"):
            try:
                seen.append(str(await RedisScript(REDIS_URL, text)("k")))
            except (RedisUnavailable, ReplyError) as exc:
                seen.append(type(exc).__name__)
        return seen

    assert run(calls()) == ["RedisUnavailable", "ReplyError", "3"]


def test_limiter_lets_requests_through_when_redis_is_down_or_silent() -> None:
    refused = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", "down")
    assert run(refused.acquire_async("k", 1)) is None
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        limiter = RedisRateLimiter(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", "silent")
        limiter._async_script.timeout = 0.2  # type: ignore[union-attr]
        assert run(limiter.acquire_async("k", 1)) is None
        with pytest.raises(TimeoutError):
            run(limiter._async_script("k"))  # type: ignore[misc]


@pytest.fixture
def redis_through_proxy(
    services_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TcpProxy]:
    from sqlalchemy.engine import make_url

    from tests.conftest import reset_caches

    url = make_url(REDIS_URL)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 6379)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{proxy.port}/{url.database or 0}")
    reset_caches()
    yield proxy
    proxy.cut()
    reset_caches()


@pytest.mark.services
def test_reads_go_on_while_redis_is_away_and_are_limited_again_after(
    redis_through_proxy: TcpProxy, no_broker: None
) -> None:
    """One app, one event loop (a server's): the limiter's connection is reset under it, the
    requests go through unlimited, and the next connection limits them again."""
    from api.main import create_app

    secret = new_key("alice", requests_per_minute=3)
    with TestClient(create_app()) as client:
        job_id = client.post("/v1/jobs", json=MINIMAL, headers=bearer(secret)).json()["id"]
        path = f"/v1/jobs/{job_id}"
        assert client.get(path, headers=bearer(secret)).status_code == 200
        redis_through_proxy.cut()
        assert [client.get(path, headers=bearer(secret)).status_code for _ in range(3)] == [200] * 3
        redis_through_proxy.restore()
        assert client.get(path, headers=bearer(secret)).status_code == 200  # the third of 3
        assert client.get(path, headers=bearer(secret)).status_code == 429


# --- the garbage collector --------------------------------------------------------------------


def test_the_server_freezes_its_long_lived_objects_at_startup(embedded_db: dict) -> None:
    from api.main import create_app

    with TestClient(create_app()) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000
