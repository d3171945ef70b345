"""The reaper: finds jobs whose worker is gone, or whose message is gone, and sends them again.

- A `running` job whose lease ran out lost its worker (SIGKILL, OOM killer, preempted machine,
  lost network): it becomes `requeued` and its message is sent again; the next worker claims it
  (attempt + 1, which fences off the old one) and resumes from its last checkpoint. After
  `max_restarts` such losses it is `failed`, with the reason, instead: a job that kills its
  worker every time must not take the fleet down one worker after another.
- A `queued` or `requeued` job that no worker claimed within `lost_after_seconds`, while its
  queue in the broker is empty, lost its message (Redis restarted without persistence, a send
  that failed after the commit): it is sent again. A queue that still holds messages is left
  alone, since the job's message may be among them; a duplicate would be harmless anyway (the
  claim is a conditional UPDATE).

It runs as a daemon thread inside every worker process, not as a Celery beat process: nothing more
to deploy or keep alive (the embedded mode runs one worker and no beat), and no single process
whose death stops recovery. Several reapers at once are safe: each change is a conditional UPDATE
on the row as it was read, so exactly one reaper wins each job and sends its message. Leases are
compared with the machines' clocks (NTP keeps them well inside a lease of tens of seconds).
"""

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from models.db import session_scope
from models.queries import mark_resent, reap_expired_leases, unclaimed_jobs
from models.settings import Settings, get_settings
from models.tables import JobStatus

log = logging.getLogger(__name__)

Send = Callable[[str, str], None]  # (job id, queue suffix)
QueueSize = Callable[[str], int | None]  # queue suffix → messages waiting (None: unknown)


@dataclass
class Reaped:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)


class Reaper:
    def __init__(
        self, *, send: Send, queue_size: QueueSize, settings: Settings | None = None
    ) -> None:
        self.send, self.queue_size = send, queue_size
        self.settings = settings or get_settings()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reap_once(self) -> Reaped:
        settings, report = self.settings, Reaped()
        with session_scope() as session:
            expired = reap_expired_leases(
                session=session,
                max_restarts=settings.max_restarts,
                claim_within=settings.lost_after_seconds,
            )
        for job in expired:
            if job.status == JobStatus.requeued:
                log.warning(
                    "job %s: worker %s lost at step %d (lease expired); requeued, restart %d of %d",
                    job.job_id,
                    job.worker,
                    job.step,
                    job.restarts,
                    settings.max_restarts,
                )
                self._send(job.job_id, job.queue)
                report.requeued.append(job.job_id)
            else:
                log.warning("job %s: worker %s lost; %s", job.job_id, job.worker, job.status)
                shutil.rmtree(settings.checkpoint_dir / job.job_id, ignore_errors=True)
                (report.failed if job.status == JobStatus.failed else report.canceled).append(
                    job.job_id
                )
        report.resent = self._resend_lost_messages()
        return report

    def _resend_lost_messages(self) -> list[str]:
        claim_within = self.settings.lost_after_seconds
        with session_scope() as session:
            overdue = unclaimed_jobs(session=session, claim_within=claim_within)
        sizes: dict[str, int | None] = {}
        resent = []
        for job_id, queue in overdue:
            if queue not in sizes:
                sizes[queue] = self.queue_size(queue)
            if sizes[queue] != 0:
                continue  # messages are waiting (or the broker did not say): not lost
            with session_scope() as session:
                won = mark_resent(session=session, job_id=job_id, claim_within=claim_within)
            if won:
                log.warning(
                    "job %s was not claimed in %.0f s: message sent again", job_id, claim_within
                )
                self._send(job_id, queue)
                resent.append(job_id)
        return resent

    def _send(self, job_id: str, queue: str) -> None:
        try:
            self.send(job_id, queue)
        except Exception as exc:  # noqa: BLE001 - the broker is away: the next pass resends
            log.warning("job %s could not be sent (%s); will be sent again later", job_id, exc)

    # The thread ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                self.reap_once()
            except Exception:  # noqa: BLE001 - the database or broker may be away; next tick
                log.exception(
                    "reaper pass failed; trying again in %.1f s", self.settings.reap_seconds
                )
            if self._stop.wait(self.settings.reap_seconds):
                return
