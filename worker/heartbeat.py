"""The lease of a running job, renewed from a thread while the worker process is alive.

Metric flushes renew the lease too, but they happen between steps: a long evaluation, one slow
step, a data download before the first step, or a database that refuses flushes for a while
would let the lease run out under a live worker and the job be handed to another. The heartbeat
renews every third of the lease whatever the training thread is doing (torch releases the GIL in
its kernels), so only a dead or frozen process loses its job.

The renewal is fenced like every other write: once the job has been requeued and claimed again
(or canceled) it matches no row, `lost` is set and the training loop stops at its next flush.
"""

import logging
import threading
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.engine import Engine

from models.db import session_scope
from models.queries import renew_lease

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, *, job_id: str, attempt: int, lease_seconds: float) -> None:
        self.job_id, self.attempt, self.lease_seconds = job_id, attempt, lease_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{job_id[:8]}", daemon=True
        )

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def beat(self) -> bool:
        """One renewal; False when the job is no longer this attempt's."""
        with session_scope() as session:
            return renew_lease(
                session=session,
                job_id=self.job_id,
                attempt=self.attempt,
                lease_seconds=self.lease_seconds,
            )

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                owned = self.beat()
            except Exception as exc:  # noqa: BLE001 - the database may be away: try again
                log.warning("lease of job %s not renewed: %s", self.job_id, exc)
                continue
            if not owned:
                log.warning("job %s attempt %d was fenced off", self.job_id, self.attempt)
                self.lost.set()
                return


def end_stalled_transactions(seconds: float) -> Callable[[], None]:
    """Have PostgreSQL end this process's sessions that sit inside a transaction for `seconds`.

    A worker frozen mid-flush (SIGSTOP, a paused VM, a stuck file system) holds its job's row
    lock; the reaper's UPDATE would wait on it for as long as the freeze lasts, and the job would
    never be requeued. The worker's own transactions last milliseconds, so ending idle ones after
    half a lease costs nothing; the frozen worker finds its connection gone when it wakes, and is
    fenced at its next write. Returns the function that removes the rule (for tests).
    """
    milliseconds = int(seconds * 1000)

    @event.listens_for(Engine, "connect")
    def _limit_idle_transactions(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        if not type(dbapi_connection).__module__.startswith("psycopg"):
            return
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}")
        dbapi_connection.commit()  # SET is transactional: keep it past the pool's rollback

    return lambda: event.remove(Engine, "connect", _limit_idle_transactions)
