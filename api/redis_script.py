"""One Lua script, run with EVALSHA over one pipelined Redis connection per event loop: the rate
limiter's round trip on every request (api/limits.py).

redis-py's asyncio client spends about 0.1 ms of CPU on a command (its connection pool, retry and
timeout layers, a parser for every kind of reply); this spends about 15 µs, which is a tenth of
what the whole GET /v1/jobs/{id} may cost at its target rate (benchmarks/job_read_load.py).
Commands are written as they come and Redis answers in order, so concurrent requests share the
one connection without waiting for each other's round trips. The replies are integers (what the
script returns) or errors; on NOSCRIPT (a restarted or flushed Redis) the script is sent in full
with EVAL, which also caches it again.

Only `redis://` URLs (TCP, optional username, password and database) are spoken here: `supports`
says whether a URL is one; the limiter uses redis-py for the others (rediss://, unix://).
"""

import asyncio
import hashlib
from collections import deque
from urllib.parse import urlparse

from redis.connection import parse_url


class RedisUnavailable(ConnectionError):
    """No connection, a lost one, or an answer that is not a reply to the script."""


class ReplyError(Exception):
    """Redis answered with an error (`-ERR …`, `-NOSCRIPT …`)."""


def command(*parts: bytes) -> bytes:
    """A command in RESP, the protocol's request form: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def supports(url: str) -> bool:
    return urlparse(url).scheme == "redis"


class _Protocol(asyncio.Protocol):
    """Replies matched to requests in order (Redis answers every command, in order)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future] = deque()
        self.buffer = bytearray()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\r\n", start)) >= 0:
            kind, value = buffer[start], bytes(buffer[start + 1 : end])
            start = end + 2
            if not self.pending or kind not in b":+-":  # not a reply this client can be sent
                self.close()
                return
            future = self.pending.popleft()
            if future.done():  # its caller gave up waiting
                continue
            if kind == ord(":"):
                future.set_result(int(value))
            elif kind == ord("+"):
                future.set_result(value)
            else:
                future.set_exception(ReplyError(value.decode(errors="replace")))
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(RedisUnavailable(f"connection lost: {exc or 'closed'}"))

    def request(self, data: bytes) -> asyncio.Future:
        if self.lost or self.transport is None:
            raise RedisUnavailable("connection lost")
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        self.transport.write(data)
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # connection_lost fails what is pending
        self.lost = True


class RedisScript:
    """`await script(key, *args)`: the script's integer reply. Raises RedisUnavailable,
    ReplyError, or TimeoutError after `timeout` seconds (then the connection is dropped, and the
    next call opens a new one)."""

    def __init__(self, url: str, script: str, timeout: float = 1.0) -> None:
        if not supports(url):
            raise ValueError(f"not a redis:// URL: {url}")
        options = parse_url(url)
        self.address = (options.get("host") or "127.0.0.1", int(options.get("port") or 6379))
        self.timeout = timeout
        self._handshake = []
        if options.get("password"):
            credentials = [options.get("username"), options["password"]]
            self._handshake.append(command(b"AUTH", *(c.encode() for c in credentials if c)))
        if options.get("db"):
            self._handshake.append(command(b"SELECT", str(options["db"]).encode()))
        self._script = script.encode()
        self._sha = hashlib.sha1(self._script).hexdigest().encode()
        # Transports belong to one event loop: a server has one; a test client may run each
        # request on a new one, and then this reconnects.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task | None = None

    async def __call__(self, key: str, *args: int) -> int:
        tail = (b"1", key.encode(), *(str(a).encode() for a in args))
        protocol = None
        try:
            async with asyncio.timeout(self.timeout):
                protocol = await self._connection()
                try:
                    return int(await protocol.request(command(b"EVALSHA", self._sha, *tail)))
                except ReplyError as exc:
                    if not str(exc).startswith("NOSCRIPT"):
                        raise
                return int(await protocol.request(command(b"EVAL", self._script, *tail)))
        except TimeoutError:
            if protocol is not None:
                protocol.close()
            raise

    async def _connection(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._protocol, self._connecting = loop, None, None
        if self._protocol is not None and not self._protocol.lost:
            return self._protocol
        if self._connecting is None:
            self._connecting = loop.create_task(self._connect())
            # its error reaches every caller still waiting; retrieved here for those that left
            self._connecting.add_done_callback(lambda t: t.cancelled() or t.exception())
        # shielded: one caller's timeout must not cancel the connection the others wait for
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol = None
        try:
            _, protocol = await loop.create_connection(_Protocol, *self.address)
            for data in self._handshake:
                await protocol.request(data)
        except (OSError, ReplyError) as exc:
            if protocol is not None:
                protocol.close()
            raise RedisUnavailable(f"{self.address[0]}:{self.address[1]}: {exc}") from exc
        finally:
            self._connecting = None
        self._protocol = protocol
        return protocol
