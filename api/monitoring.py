"""Prometheus at `/metrics`: request counts and latency (prometheus-fastapi-instrumentator), and
the ledger's state read at scrape time — jobs by status, jobs waiting per queue, studies by
status, and the broker's queue lengths when it is Redis.

The ledger gauges are a collector (run when Prometheus scrapes), not counters kept by each
request: every API process reports the same numbers, so several processes behind a load
balancer agree. The request metrics are per process (prometheus_client's multiprocess mode, with
PROMETHEUS_MULTIPROC_DIR set, merges them when uvicorn runs several workers).
"""

import logging
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator
from sqlalchemy import func, select

from models.db import get_sessionmaker
from models.settings import get_settings
from models.tables import CLAIMABLE, Job, JobStatus, Study, StudyStatus

log = logging.getLogger(__name__)


class LedgerCollector(Collector):
    def describe(self) -> list[GaugeMetricFamily]:
        # Registration calls describe() instead of collect(): no query at import time.
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("descent_jobs", "Jobs in the ledger by status", labels=["status"])
        waiting = GaugeMetricFamily(
            "descent_jobs_waiting",
            "Jobs queued or requeued (not yet claimed), by queue",
            labels=["queue"],
        )
        studies = GaugeMetricFamily("descent_studies", "Studies by status", labels=["status"])
        try:
            with get_sessionmaker()() as session:
                by_status = dict(
                    (status, count)
                    for status, count in session.execute(
                        select(Job.status, func.count()).group_by(Job.status)
                    )
                )
                by_queue = dict(
                    (queue, count)
                    for queue, count in session.execute(
                        select(Job.queue, func.count())
                        .where(Job.status.in_(list(CLAIMABLE)))
                        .group_by(Job.queue)
                    )
                )
                study_status = dict(
                    (status, count)
                    for status, count in session.execute(
                        select(Study.status, func.count()).group_by(Study.status)
                    )
                )
        except Exception:  # noqa: BLE001 - a scrape reports what it can
            log.warning("ledger gauges unavailable", exc_info=True)
            return
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        for queue in ("any", "cpu", "gpu"):
            waiting.add_metric([queue], by_queue.get(queue, 0))
        for study in StudyStatus:
            studies.add_metric([study.value], study_status.get(study.value, 0))
        yield jobs
        yield waiting
        yield studies
        depth = self._broker_depth()
        if depth is not None:
            yield depth

    def _broker_depth(self) -> GaugeMetricFamily | None:
        settings = get_settings()
        if settings.redis_url is None:
            return None  # the embedded broker: descent_jobs_waiting says the same
        try:
            import redis

            client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1)
            names = [f"{settings.queue_prefix}.{q}" for q in ("any", "cpu", "gpu")]
            with client.pipeline() as pipe:
                for name in names:
                    pipe.llen(name)
                lengths = pipe.execute()
            client.close()
        except Exception:  # noqa: BLE001 - a scrape reports what it can
            log.warning("broker queue depth unavailable", exc_info=True)
            return None
        depth = GaugeMetricFamily(
            "descent_queue_depth", "Messages waiting in the broker, by queue", labels=["queue"]
        )
        for name, length in zip(names, lengths, strict=True):
            depth.add_metric([name], length)
        return depth


_collector: LedgerCollector | None = None


def install_metrics(app: FastAPI) -> None:
    global _collector
    if _collector is None:
        _collector = LedgerCollector()
        REGISTRY.register(_collector)
    Instrumentator(
        excluded_handlers=["/metrics", "/healthz", "/readyz"],
        should_group_status_codes=False,
    ).instrument(app).expose(app, include_in_schema=False)
