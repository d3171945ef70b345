"""Faults on a CUDA device, in process (the engine alone, no services):

1. A real CUDA out-of-memory error inside a job (an allocation far larger than the device, made by
   the caching allocator at step 3): the error a user reads, the device memory after the worker's
   clean-up, and a next job on the same device and process that succeeds.
2. Exact resume on CUDA: a job killed at step 26 and resumed from its step-25 checkpoint, against
   the same job uninterrupted, per configuration: equal bitwise, or the largest difference.
3. fp16 on CUDA with every gradient infinite from step 10: the job ends `diverged` by the
   consecutive skipped-steps rule.
4. Checkpoint cost: seconds to save and to load a checkpoint of nets of growing size.

    python benchmarks/gpu_faults.py     (on a machine with a CUDA device)

Results: benchmarks/results/gpu_faults.json.
"""

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import worker.engine.loop as loop  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from worker.engine import train  # noqa: E402
from worker.engine.checkpoint import Checkpointer, list_checkpoints  # noqa: E402
from worker.engine.failures import describe_failure, release_device_memory  # noqa: E402
from worker.engine.setup import build_run  # noqa: E402
from worker.engine.sink import MemorySink  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.device("cuda")
BASE = {
    "model": {"name": "mlp", "args": {"hidden": [256, 256], "dropout": 0.2}},
    "data": {"name": "synthetic_classification", "args": {"n_samples": 4096}, "batch_size": 64},
    "optimizer": {"name": "sgd", "lr": 0.05, "args": {"momentum": 0.9, "nesterov": True}},
    "schedule": {"name": "cosine", "warmup_steps": 4},
    "clipping": {"mode": "norm", "max_norm": 0.5},
    "eval": {"every_steps": 10},
    "max_steps": 60,
    "device": "cuda",
}
CONFIGS = {
    "sgd-dropout-cosine-clip": BASE,
    "adam-fp16-scaler": {**BASE, "optimizer": {"name": "adam", "lr": 0.003}, "precision": "fp16"},
    "adamw-bf16": {**BASE, "optimizer": {"name": "adamw", "lr": 0.003}, "precision": "bf16"},
}
DETERMINISTIC = ("train_loss", "lr", "grad_norm", "val_loss", "val_acc")


class Killed(BaseException):
    pass


class DiesAt(MemorySink):
    def __init__(self, step: int) -> None:
        super().__init__(flush_seconds=3600)
        self.die_at, self.dead = step, False

    def log(self, name, step, value, epoch):  # type: ignore[no-untyped-def]
        if step == self.die_at:
            self.dead = True
            raise Killed
        super().log(name, step, value, epoch)

    def write(self, points, *, step, epoch, totals):  # type: ignore[no-untyped-def]
        return False if self.dead else super().write(points, step=step, epoch=epoch, totals=totals)


def table(points: list[dict]) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    for p in points:
        if p["name"] in DETERMINISTIC:
            out.setdefault((p["name"], p["step"]), p["value"])
    return out


def out_of_memory(root: Path) -> dict:
    real_build = loop.build_run

    def build_with_a_huge_allocation(*args, **kwargs):  # type: ignore[no-untyped-def]
        run = real_build(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, inputs):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 3:
                torch.empty(2**40, dtype=torch.uint8, device=CUDA)  # 1 TiB

        run.net.register_forward_pre_hook(hook)
        return run

    loop.build_run = build_with_a_huge_allocation
    sink = MemorySink(flush_seconds=0)
    try:
        train(JobSpec.model_validate(BASE), sink, data_root=root)
        raise AssertionError("no out-of-memory error")
    except torch.cuda.OutOfMemoryError as exc:
        message = describe_failure(exc, sink)
        raw = str(exc).splitlines()[0][:300]
    finally:
        loop.build_run = real_build
    before = torch.cuda.memory_reserved()
    release_device_memory()
    after = torch.cuda.memory_reserved()
    nxt = MemorySink(flush_seconds=3600)
    outcome = train(JobSpec.model_validate(BASE), nxt, data_root=root)
    return {
        "error_shown": message,
        "torch_message": raw,
        "reserved_bytes_before_cleanup": before,
        "reserved_bytes_after_cleanup": after,
        "next_job": outcome.status,
    }


def resume(root: Path) -> dict:
    results = {}
    for name, spec in CONFIGS.items():
        job = JobSpec.model_validate(spec)
        reference = MemorySink(flush_seconds=3600)
        train(job, reference, data_root=root)
        directory = Path(tempfile.mkdtemp(dir=root))
        first = DiesAt(26)
        with contextlib.suppress(Killed):
            train(
                job,
                first,
                data_root=root,
                checkpoints=Checkpointer(directory=directory, every_steps=5, attempt=1),
            )
        second = MemorySink(flush_seconds=3600)
        keeper = Checkpointer(directory=directory, every_steps=5, attempt=2)
        outcome = train(job, second, data_root=root, checkpoints=keeper)
        merged, wanted = table(first.points + second.points), table(reference.points)
        diffs = [abs(merged[k] - wanted[k]) for k in wanted if k in merged]
        results[name] = {
            "status": outcome.status,
            "resumed_from": keeper.resumed_from,
            "complete": merged.keys() == wanted.keys(),
            "bitwise_equal": merged == wanted,
            "max_abs_diff": max(diffs) if diffs else None,
        }
    return results


def skipped_steps(root: Path) -> dict:
    real_build = loop.build_run

    def overflowing(*args, **kwargs):  # type: ignore[no-untyped-def]
        run = real_build(*args, **kwargs)
        calls = {"n": 0}

        def poison(grad: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            return grad * float("inf") if calls["n"] >= 10 else grad

        next(run.net.parameters()).register_hook(poison)
        return run

    loop.build_run = overflowing
    try:
        spec = {**CONFIGS["adam-fp16-scaler"], "max_steps": 500, "stop": {"max_skipped_steps": 8}}
        outcome = train(JobSpec.model_validate(spec), MemorySink(flush_seconds=0), data_root=root)
    finally:
        loop.build_run = real_build
    return {"status": outcome.status, "steps": outcome.summary["steps"], "error": outcome.error}


def checkpoint_cost(root: Path) -> list[dict]:
    rows = []
    for hidden in ([256], [2048, 2048], [4096, 4096, 4096]):
        spec = JobSpec.model_validate(
            {
                **BASE,
                "model": {"name": "mlp", "args": {"hidden": hidden}},
                "optimizer": {"name": "adam"},
            }
        )
        run = build_run(spec, data_root=root)
        for p in run.net.parameters():  # give Adam its state
            p.grad = torch.zeros_like(p)
        run.optimizer.step()
        keeper = Checkpointer(directory=Path(tempfile.mkdtemp(dir=root)), attempt=1)
        sink = MemorySink()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        keeper.save(run, sink, 1)
        saved = time.perf_counter() - t0
        size = list_checkpoints(keeper.directory)[0][2].stat().st_size
        t0 = time.perf_counter()
        assert Checkpointer(directory=keeper.directory).load_latest(build_run(spec, data_root=root))
        loaded = time.perf_counter() - t0
        rows.append(
            {
                "parameters": sum(p.numel() for p in run.net.parameters()),
                "bytes": size,
                "save_s": round(saved, 3),
                "load_s": round(loaded, 3),
            }
        )
    return rows


def main() -> None:
    assert torch.cuda.is_available(), "needs a CUDA device"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        report = {
            "benchmark": "gpu_faults",
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "out_of_memory": out_of_memory(root),
            "exact_resume_cuda": resume(root),
            "fp16_skipped_steps": skipped_steps(root),
            "checkpoint_cost": checkpoint_cost(root),
        }
    print(json.dumps(report, indent=2))
    (ROOT / "benchmarks" / "results" / "gpu_faults.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
