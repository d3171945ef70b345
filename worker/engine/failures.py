"""What a failed job tells its user, and cleaning up after one, for the errors a user can act on.

CUDA out of memory is the common one: the job ends `failed` with one line naming the step, the
allocation and what was free, and what to change; the cached blocks are then given back so the
worker's next job starts on an empty device.
"""

import gc
import re
import traceback

import torch

from worker.engine.sink import MetricSink, first_line

OOM_DETAIL = re.compile(
    r"Tried to allocate [\d.]+ \w+|total capacity of [\d.]+ \w+ of which [\d.]+ \w+ is free"
)


def describe_failure(exc: Exception, sink: MetricSink) -> str:
    """The job's error: one readable line for what a user can fix, the exception otherwise."""
    step = sink.position[0]
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        details = [m.group(0) for m in OOM_DETAIL.finditer(str(exc))]
        detail = f" ({'; '.join(details)})" if details else ""
        return (
            f"CUDA out of memory after step {step}{detail}. Lower data.batch_size or the model's "
            "size, or use precision bf16/fp16."
        )
    if isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc):
        return (
            f"out of memory on the CPU after step {step} ({first_line(exc)}). Lower "
            "data.batch_size or the model's size."
        )
    error = f"{type(exc).__name__}: {exc}"
    if not str(exc):
        error += "\n" + traceback.format_exc(limit=3)
    return error


def release_device_memory() -> None:
    """After a job (an out-of-memory one above all), give its cached GPU memory back so the next
    job starts from an empty device."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()
