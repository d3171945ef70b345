"""The PostgreSQL engine's pool: a connection idle for a while is pinged before use, one used a
moment ago is not (models/db.py: a round trip saved on every request under load)."""

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from models.db import make_engine, ping_idle_connections
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def proxied_url(postgres_url: str) -> Iterator[tuple[str, TcpProxy]]:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(False), proxy
    proxy.cut()


def select_one(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT 1")).scalar_one())


@pytest.mark.services
def test_an_idle_connection_that_was_lost_is_replaced_before_use(
    proxied_url: tuple[str, TcpProxy],
) -> None:
    url, proxy = proxied_url
    engine = create_engine(url, pool_size=1)
    ping_idle_connections(engine, after=0.0)  # every connection counts as idle
    try:
        assert select_one(engine) == 1
        proxy.cut()  # the database restarts: the pooled connection is dead
        proxy.restore()
        assert select_one(engine) == 1  # pinged, found dead, replaced
    finally:
        engine.dispose()


@pytest.mark.services
def test_a_connection_used_a_moment_ago_is_not_pinged(
    proxied_url: tuple[str, TcpProxy],
) -> None:
    url, proxy = proxied_url
    engine = create_engine(url, pool_size=1)
    ping_idle_connections(engine, after=3600.0)
    try:
        assert select_one(engine) == 1
        proxy.cut()
        proxy.restore()
        with pytest.raises(OperationalError):  # no ping: the request that finds it dead fails
            select_one(engine)
        assert select_one(engine) == 1  # and the pool has replaced it for the next one
    finally:
        engine.dispose()


@pytest.mark.services
def test_the_services_engine_does_not_ping_connections_in_steady_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(postgres_url)
    pings: list[object] = []
    do_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or do_ping(c))
    try:
        assert [select_one(engine) for _ in range(5)] == [1] * 5
        assert pings == []  # pool_pre_ping would have pinged 5 times
    finally:
        engine.dispose()
