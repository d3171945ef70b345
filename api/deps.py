"""Dependencies as Annotated aliases (the FastAPI template's habit): the session, and who calls.

Every route that reads or changes a job depends on `current_key`: with auth on (services mode by
default, models.settings), the request must carry `Authorization: Bearer <key>` with a live key
(401 otherwise) and stay under the key's request rate (429 with Retry-After). A key acts for its
owner: it sees and cancels that owner's jobs only, and another owner's job answers 404, exactly as
a job that does not exist (a 403 would confirm that the id exists). An admin key also lists, reads
and cancels every owner's jobs.

With auth off (the embedded single-user mode, which binds 127.0.0.1 only: client/serve.py) every
request acts as the owner `local`, under the server's default limits and no rate limit.
"""

import math
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from api.limits import RateLimiter, make_rate_limiter, rate_limited
from models import keys
from models.db import get_sessionmaker
from models.settings import get_settings
from models.tables import ApiKey, KeyRole

LOCAL_OWNER = "local"

bearer = HTTPBearer(
    auto_error=False,
    description="An API key: `descent keys create --owner NAME` prints one.",
)


def get_session() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def local_key() -> ApiKey:
    """The caller in single-user mode: not stored, server-default limits."""
    return ApiKey(id="", owner=LOCAL_OWNER, role=KeyRole.user, prefix="", key_hash="")


def rate_limiter(request: Request) -> RateLimiter:
    """One limiter per app, made on first use from the settings of that moment."""
    state = request.app.state
    if getattr(state, "rate_limiter", None) is None:
        state.rate_limiter = make_rate_limiter(get_settings())
    limiter: RateLimiter = state.rate_limiter
    return limiter


def lookup_key(secret: str) -> ApiKey | None:
    """The live key with this value, read from the database (in a worker thread)."""
    with get_sessionmaker()() as session:
        return keys.verify_key(session=session, key=secret)


async def current_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    """On the event loop: a key this process verified in the last few seconds is not read again
    (models.keys.KeyCache; revocation takes effect within KEY_CACHE_SECONDS), and the rate
    limiter is one Redis round trip, so a request pays no worker thread for its key."""
    settings = get_settings()
    if not settings.auth_enabled:
        return local_key()
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send `Authorization: Bearer <key>` "
            "(an operator creates keys with `descent keys create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = keys.cached_key(credentials.credentials)
    if key is None:
        key = await run_in_threadpool(lookup_key, credentials.credentials)
    if key is None:
        raise ApiError(
            401,
            "unauthorized",
            "invalid or revoked API key",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    per_minute = keys.limits_of(key, settings).requests_per_minute
    wait = await rate_limiter(request).acquire_async(key.id, per_minute)
    if wait is not None:
        raise rate_limited(math.ceil(wait), per_minute)
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]


async def current_owner(key: CurrentKey) -> str:
    """The owner new jobs are stored under, and whose jobs a user key sees."""
    return key.owner


async def visible_owner(key: CurrentKey) -> str | None:
    """Whose jobs this key may read and cancel: its owner's, or everyone's (None) for an admin."""
    return None if key.role == KeyRole.admin else key.owner


OwnerDep = Annotated[str, Depends(current_owner)]
VisibleOwnerDep = Annotated[str | None, Depends(visible_owner)]
# The largest step a query may name: metrics.step is a 32-bit column.
MAX_STEP = 2**31 - 1
# Ids are uuids; the pattern keeps bytes a database would choke on (NUL) out of every query.
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
