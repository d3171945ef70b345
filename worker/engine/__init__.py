"""The training engine: runs one JobSpec, with or without Celery and a database."""

from worker.engine.loop import Outcome, train

__all__ = ["Outcome", "train"]
