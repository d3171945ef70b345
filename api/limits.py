"""Limits: request body size, request rate per key, and what one job may ask for (size, count).

The body size is enforced on the bytes actually received (not only Content-Length).
"""

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError
from api.redis_script import RedisScript, RedisUnavailable, ReplyError, supports
from models.catalog.sizes import estimate_job
from models.keys import count_active_jobs, limits_of, lock_key
from models.settings import Settings
from models.spec import JobSpec
from models.tables import ApiKey

log = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body over {max_bytes} bytes")


class BodySizeLimit:
    """Answers 413 before reading a body whose declared length is too large, and stops reading
    one that turns out too large (chunked uploads declare no length)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            scope = {**scope, "descent.body_too_large": True}
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if scope.get("descent.body_too_large"):
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


# --- request rate per key -------------------------------------------------------------------
#
# GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp per key): a key may
# send `per_minute` requests in a burst, then one every 60/per_minute seconds; a refused request
# learns exactly how long to wait (Retry-After).
#
# In services mode the state lives in Redis, which is already there: every API process and every
# replica behind a load balancer shares one budget per key, where an in-process bucket would give
# each process its own (N processes, N times the limit). One Lua script per request does the
# read-compute-write atomically on Redis's own clock (so API hosts' clocks may differ), about one
# round trip. If Redis does not answer, the request is let through (and logged): the ledger reads
# do not depend on Redis, and a rate limit is not worth an outage.
#
# Embedded mode (no Redis, one API process) keeps the timestamps in this process.

BURST_SECONDS = 60.0

_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst - now
if wait > 0 then return wait end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return 0
"""


class RateLimiter(Protocol):
    def acquire(self, bucket: str, per_minute: int) -> float | None:
        """None when the request may go ahead, else the seconds to wait."""

    async def acquire_async(self, bucket: str, per_minute: int) -> float | None:
        """`acquire` for the event loop (what every request uses): no thread."""


class LocalRateLimiter:
    """GCRA in this process (embedded mode: a single API process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, bucket: str, per_minute: int) -> float | None:
        interval = 60.0 / per_minute
        with self._lock:
            now = self._clock()
            new_tat = max(self._tat.get(bucket, now), now) + interval
            wait = new_tat - BURST_SECONDS - now
            if wait > 0:
                return wait
            self._tat[bucket] = new_tat
            if len(self._tat) > 10_000:  # forget buckets that are full again
                self._tat = {b: t for b, t in self._tat.items() if t > now}
            return None

    async def acquire_async(self, bucket: str, per_minute: int) -> float | None:
        return self.acquire(bucket, per_minute)


class RedisRateLimiter:
    """GCRA in Redis, shared by every API process (services mode). Requests call
    `acquire_async`: one EVALSHA on the event loop (api.redis_script), no worker thread."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._script = self._client.register_script(_GCRA_LUA)
        self._async_script = RedisScript(url, _GCRA_LUA, timeout=1) if supports(url) else None
        self._prefix = prefix

    def _args(self, per_minute: int) -> tuple[int, int]:
        return round(60e6 / per_minute), int(BURST_SECONDS * 1e6)

    def acquire(self, bucket: str, per_minute: int) -> float | None:
        try:
            wait_us = int(
                self._script(
                    keys=[f"{self._prefix}:ratelimit:{bucket}"], args=list(self._args(per_minute))
                )
            )
        except self._errors as exc:
            log.warning("rate limit not applied, Redis did not answer: %s", exc)
            return None
        return wait_us / 1e6 if wait_us > 0 else None

    async def acquire_async(self, bucket: str, per_minute: int) -> float | None:
        if self._async_script is None:  # rediss://, unix://: redis-py in a worker thread
            return await run_in_threadpool(self.acquire, bucket, per_minute)
        try:
            wait_us = await self._async_script(
                f"{self._prefix}:ratelimit:{bucket}", *self._args(per_minute)
            )
        except (RedisUnavailable, ReplyError, TimeoutError) as exc:
            log.warning("rate limit not applied, Redis did not answer: %s", exc)
            return None
        return wait_us / 1e6 if wait_us > 0 else None


def make_rate_limiter(settings: Settings) -> RateLimiter:
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, settings.queue_prefix)
    return LocalRateLimiter()


def rate_limited(seconds: float, per_minute: int) -> ApiError:
    wait = max(math.ceil(seconds), 1)
    return ApiError(
        429,
        "rate_limited",
        f"over this key's limit of {per_minute} requests per minute; retry in {wait} s",
        headers={"Retry-After": str(wait)},
    )


# --- what one job may ask for -----------------------------------------------------------------


def check_job_limits(*, session: Session, key: ApiKey, spec: JobSpec, settings: Settings) -> None:
    """Refuse, before anything is stored, a job over the key's limits: a net with too many
    parameters (403), too many steps × parameters (403), or too many jobs of the key's owner
    already queued or running (429: one may submit again once a job ends)."""
    limits = limits_of(key, settings)
    size = estimate_job(spec)
    guess = " (a high guess: no estimator)" if size.estimated_by == "fallback" else ""
    if size.parameters > limits.max_parameters:
        raise ApiError(
            403,
            "job_too_large",
            f"model {spec.model.name!r} would have {size.parameters:,} parameters{guess}; "
            f"this key's limit is {limits.max_parameters:,} parameters per job",
        )
    if size.work > limits.max_job_size:
        raise ApiError(
            403,
            "job_too_large",
            f"{size.steps:,} steps × {size.parameters:,} parameters{guess} = {size.work:.3g}; "
            f"this key's limit is {limits.max_job_size:.3g} steps × parameters per job",
        )
    lock_key(session=session, key=key)
    active = count_active_jobs(session=session, owner=key.owner)
    if active >= limits.max_active_jobs:
        raise ApiError(
            429,
            "too_many_active_jobs",
            f"{active} jobs of {key.owner!r} are queued or running; this key's limit is "
            f"{limits.max_active_jobs} active jobs: wait for one to end, or cancel one",
        )
