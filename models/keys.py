"""API keys: create, verify, revoke, list; and the per-key limits they carry.

A key is `dsk_` + 43 url-safe characters from `secrets.token_urlsafe(32)`: 256 random bits. Only
its SHA-256 is stored. A slow password hash (bcrypt, argon2) defends low-entropy secrets against
guessing; a 256-bit random key cannot be guessed, so a plain SHA-256 loses nothing, and it lets a
request find its key with one indexed equality lookup instead of trying every stored hash.

An API process remembers a key it verified for `KEY_CACHE_SECONDS` (KeyCache), so that a busy
client's requests do not each read the key's row. A key revoked with `revoke_key` is refused at
once by the process that revoked it, and by every other API process within KEY_CACHE_SECONDS:
`descent keys revoke` runs in a process of its own, so a revoked key may be served for up to
5 seconds more. A change of a key's row (its limits) takes effect within the same time.
"""

import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event, func, or_, select
from sqlalchemy.orm import Session

from models.settings import Settings
from models.tables import CLAIMABLE, ApiKey, Job, JobStatus, KeyRole, utcnow

KEY_PREFIX = "dsk_"
SHOWN_CHARS = 12  # `dsk_` and 8 random characters: enough to tell keys apart in a listing
ACTIVE = frozenset({*CLAIMABLE, JobStatus.running})


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    *,
    session: Session,
    owner: str,
    role: KeyRole = KeyRole.user,
    name: str | None = None,
    max_active_jobs: int | None = None,
    max_parameters: int | None = None,
    max_job_size: int | None = None,
    requests_per_minute: int | None = None,
) -> tuple[ApiKey, str]:
    """The stored key and the key itself, which is not kept anywhere: show it once."""
    if not owner or len(owner) > 64:
        raise ValueError("owner must be 1 to 64 characters")
    for label, value in (
        ("max_active_jobs", max_active_jobs),
        ("max_parameters", max_parameters),
        ("max_job_size", max_job_size),
        ("requests_per_minute", requests_per_minute),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{label} must be at least 1, got {value}")
    secret = generate_key()
    key = ApiKey(
        id=str(uuid.uuid4()),
        owner=owner,
        name=name,
        key_hash=hash_key(secret),
        prefix=secret[:SHOWN_CHARS],
        role=KeyRole(role),
        max_active_jobs=max_active_jobs,
        max_parameters=max_parameters,
        max_job_size=max_job_size,
        requests_per_minute=requests_per_minute,
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return key, secret


def verify_key(*, session: Session, key: str) -> ApiKey | None:
    """The live key with this value, or None (unknown or revoked)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    found = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first()
    if found is None or found.revoked_at is not None:
        return None
    key_cache.put(found)
    return found


# How long an API process trusts a key it verified: revocation elsewhere takes effect after this.
KEY_CACHE_SECONDS = 5.0


class KeyCache:
    """Live keys verified in the last `ttl` seconds, by the SHA-256 of the key. Only live keys
    are kept (an unknown key is looked up every time: no one can fill the cache with guesses),
    as detached copies: a cached key belongs to no session."""

    def __init__(
        self,
        ttl: float = KEY_CACHE_SECONDS,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl, self.max_keys, self._clock = ttl, max_keys, clock
        self._keys: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> ApiKey | None:
        entry = self._keys.get(key_hash)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            with self._lock:
                self._keys.pop(key_hash, None)
            return None
        return entry[1]

    def put(self, key: ApiKey) -> None:
        if self.ttl <= 0:
            return
        copy = ApiKey(**{c.key: getattr(key, c.key) for c in ApiKey.__table__.columns})
        with self._lock:
            if len(self._keys) >= self.max_keys:
                now = self._clock()
                self._keys = {h: e for h, e in self._keys.items() if e[0] > now}
                if len(self._keys) >= self.max_keys:
                    self._keys.clear()
            self._keys[key.key_hash] = (self._clock() + self.ttl, copy)

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self._keys.pop(key_hash, None)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


key_cache = KeyCache()


def cached_key(key: str) -> ApiKey | None:
    """The live key with this value if this process verified it in the last KEY_CACHE_SECONDS,
    else None (then `verify_key` decides)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    return key_cache.get(hash_key(key))


def revoke_key(*, session: Session, key_id: str) -> ApiKey | None:
    """Revoke by id or by the displayed prefix (when exactly one live key has it). This process
    forgets the key at once; other API processes within KEY_CACHE_SECONDS."""
    matches = list(
        session.scalars(
            select(ApiKey).where(or_(ApiKey.id == key_id, ApiKey.prefix == key_id)).limit(2)
        )
    )
    if len(matches) != 1:
        return None
    key = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    key_hash = key.key_hash
    key_cache.forget(key_hash)
    # and again once committed: a request of this process that read the row in between must not
    # keep the key for another KEY_CACHE_SECONDS
    event.listen(session, "after_commit", lambda _: key_cache.forget(key_hash), once=True)
    return key


def list_keys(
    *, session: Session, owner: str | None = None, include_revoked: bool = False
) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if owner is not None:
        query = query.where(ApiKey.owner == owner)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


@dataclass(frozen=True)
class Limits:
    max_active_jobs: int
    max_parameters: int
    max_job_size: int  # steps × parameters
    requests_per_minute: int


def limits_of(key: ApiKey, settings: Settings) -> Limits:
    """The key's own limits where set, the server's defaults elsewhere."""
    return Limits(
        max_active_jobs=key.max_active_jobs or settings.max_active_jobs,
        max_parameters=key.max_parameters or settings.max_parameters,
        max_job_size=key.max_job_size or settings.max_job_size,
        requests_per_minute=key.requests_per_minute or settings.requests_per_minute,
    )


def lock_key(*, session: Session, key: ApiKey) -> None:
    """Hold the key's row until the transaction ends, so that two submissions with the same key
    cannot both pass the active-job count (PostgreSQL; SQLite serializes writers anyway)."""
    if key.id and session.get_bind().dialect.name == "postgresql":
        session.execute(select(ApiKey.id).where(ApiKey.id == key.id).with_for_update())


def count_active_jobs(*, session: Session, owner: str) -> int:
    """Queued, requeued and running jobs of one owner (index ix_jobs_owner_status)."""
    query = select(func.count()).where(Job.owner == owner, Job.status.in_(list(ACTIVE)))
    return int(session.scalar(query) or 0)
