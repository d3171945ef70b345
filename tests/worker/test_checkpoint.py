"""Checkpoints: a run stopped at an arbitrary step and resumed gives, bitwise on the CPU, the
metric series of the same run uninterrupted, with no step missing or written twice; files are
written atomically, fenced, and read without unpickling code."""

from pathlib import Path

import pytest
import torch

from models.spec import JobSpec
from worker.engine import train
from worker.engine.checkpoint import Checkpointer, checkpoint_name, list_checkpoints
from worker.engine.sink import MemorySink

CPU = torch.device("cpu")
BASE = {
    "model": {"name": "mlp", "args": {"hidden": [32], "dropout": 0.2}},
    "data": {"name": "synthetic_classification", "args": {"n_samples": 256}, "batch_size": 32},
    "optimizer": {"name": "sgd", "lr": 0.05, "args": {"momentum": 0.9, "nesterov": True}},
    "schedule": {"name": "cosine", "warmup_steps": 4},
    "clipping": {"mode": "norm", "max_norm": 0.5},
    "eval": {"every_steps": 3},
    "max_steps": 40,  # 7 steps per epoch: the crash and the checkpoints fall mid-epoch
}
CONFIGS = {
    "sgd-dropout-cosine-clip": BASE,
    "adam-fp16-scaler": {
        **BASE,
        "optimizer": {"name": "adam", "lr": 0.01},
        "precision": "fp16",
        "regularization": {"weight_decay": 0.01},
    },
    "adamw-bf16": {**BASE, "optimizer": {"name": "adamw", "lr": 0.01}, "precision": "bf16"},
}
# These are logged at flushes, whose steps depend on when flushes happen; their values are
# compared where both runs have one.
FLUSH_TIMED = {"loss_scale", "clip_fraction", "skipped_steps"}


class Killed(BaseException):
    """Stands in for SIGKILL: the run stops mid-step and nothing more reaches the store."""


class DiesAt(MemorySink):
    def __init__(self, step: int, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.die_at, self.dead = step, False

    def log(self, name, step, value, epoch):  # type: ignore[no-untyped-def]
        if step == self.die_at:
            self.dead = True
            raise Killed
        super().log(name, step, value, epoch)

    def write(self, points, *, step, epoch, totals):  # type: ignore[no-untyped-def]
        return False if self.dead else super().write(points, step=step, epoch=epoch, totals=totals)


def as_table(points: list[dict]) -> dict[tuple[str, int], float]:
    """What the metrics table keeps: the first write of each (name, step)."""
    table: dict[tuple[str, int], float] = {}
    for point in points:
        table.setdefault((point["name"], point["step"]), point["value"])
    return table


def deterministic(table: dict[tuple[str, int], float]) -> dict[tuple[str, int], float]:
    return {key: value for key, value in table.items() if key[0] not in FLUSH_TIMED}


def reference(spec: dict, tmp_path: Path) -> MemorySink:
    sink = MemorySink(flush_seconds=3600)
    outcome = train(JobSpec.model_validate(spec), sink, data_root=tmp_path, device=CPU)
    assert outcome.status == "succeeded"
    return sink


def killed_then_resumed(
    spec: dict, tmp_path: Path, die_at: int, every: int, flush_seconds: float = 3600
) -> tuple[MemorySink, MemorySink, Checkpointer, object]:
    job = JobSpec.model_validate(spec)
    directory = tmp_path / "checkpoints"
    first = DiesAt(die_at, flush_seconds=flush_seconds)
    with pytest.raises(Killed):
        train(
            job,
            first,
            data_root=tmp_path,
            device=CPU,
            checkpoints=Checkpointer(directory=directory, every_steps=every, attempt=1),
        )
    second = MemorySink(flush_seconds=flush_seconds)
    keeper = Checkpointer(directory=directory, every_steps=every, attempt=2)
    outcome = train(job, second, data_root=tmp_path, device=CPU, checkpoints=keeper)
    return first, second, keeper, outcome


@pytest.mark.parametrize("config", list(CONFIGS))
def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path: Path, config: str) -> None:
    spec = CONFIGS[config]
    expected = reference(spec, tmp_path)
    first, second, keeper, outcome = killed_then_resumed(spec, tmp_path, die_at=26, every=5)
    assert keeper.resumed_from == 25  # the last checkpoint before the kill
    assert outcome.status == "succeeded"  # type: ignore[attr-defined]
    assert min(p["step"] for p in second.points) == 26  # resumed, not restarted
    merged = as_table(first.points + second.points)
    wanted = as_table(expected.points)
    assert deterministic(merged) == deterministic(wanted)  # bitwise: == on floats
    for key in merged.keys() & wanted.keys():
        assert merged[key] == wanted[key], key
    steps = sorted(step for name, step in merged if name == "train_loss")
    assert steps == list(range(1, 41))  # no step missing; the table's key makes none double
    summary = outcome.summary  # type: ignore[attr-defined]
    assert summary["final"] == expected.summary()["final"]
    assert summary["best"] == expected.summary()["best"]  # best over both attempts


def test_steps_recomputed_after_the_checkpoint_are_bitwise_the_same(tmp_path: Path) -> None:
    """Flushing every step, the killed run wrote steps past its checkpoint; the resumed run
    writes them again (the table ignores the repeats) and they are identical."""
    first, second, keeper, _ = killed_then_resumed(
        BASE, tmp_path, die_at=23, every=6, flush_seconds=0
    )
    assert keeper.resumed_from == 18
    written_twice = as_table(first.points).keys() & as_table(second.points).keys()
    assert written_twice  # the overlap is real
    before, after = as_table(first.points), as_table(second.points)
    assert all(before[key] == after[key] for key in written_twice)


def test_resume_at_an_epoch_boundary(tmp_path: Path) -> None:
    expected = as_table(reference(BASE, tmp_path).points)
    first, second, keeper, _ = killed_then_resumed(BASE, tmp_path, die_at=16, every=7)
    assert keeper.resumed_from == 14  # exactly two epochs of 7 steps
    assert deterministic(as_table(first.points + second.points)) == deterministic(expected)


def test_without_resume_the_series_would_differ(tmp_path: Path) -> None:
    """The check above can fail: restarting the data order or the RNGs changes the curve."""
    expected = as_table(reference(BASE, tmp_path).points)
    job = JobSpec.model_validate(BASE)
    directory = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        train(
            job,
            DiesAt(26, flush_seconds=3600),
            data_root=tmp_path,
            device=CPU,
            checkpoints=Checkpointer(directory=directory, every_steps=5),
        )

    class ForgetsTheDataOrder(Checkpointer):
        def resume(self, run, sink):  # type: ignore[no-untyped-def]
            step = super().resume(run, sink)
            self._resume_data = None  # start a fresh epoch instead of the interrupted one
            return step

    second = MemorySink(flush_seconds=3600)
    train(
        job,
        second,
        data_root=tmp_path,
        device=CPU,
        checkpoints=ForgetsTheDataOrder(directory=directory, every_steps=5),
    )
    resumed = as_table(second.points)
    assert any(resumed[key] != expected[key] for key in resumed if key[0] == "train_loss")


def test_graceful_stop_checkpoints_and_hands_the_job_back(tmp_path: Path) -> None:
    job = JobSpec.model_validate(BASE)
    directory = tmp_path / "checkpoints"
    sigterm = {"received": False}

    class SigtermDuringStep11(MemorySink):
        def log(self, name, step, value, epoch):  # type: ignore[no-untyped-def]
            sigterm["received"] |= step == 11
            super().log(name, step, value, epoch)

    first = SigtermDuringStep11(flush_seconds=3600)
    stopped = train(
        job,
        first,
        data_root=tmp_path,
        device=CPU,
        checkpoints=Checkpointer(directory=directory, stop_requested=lambda: sigterm["received"]),
    )
    assert stopped.status == "requeued"
    assert stopped.error == "worker shutting down (checkpoint at step 11)"
    assert [step for step, _, _ in list_checkpoints(directory)] == [11]
    second = MemorySink(flush_seconds=3600)
    done = train(
        job, second, data_root=tmp_path, device=CPU, checkpoints=Checkpointer(directory=directory)
    )
    assert done.status == "succeeded"
    assert deterministic(as_table(first.points + second.points)) == deterministic(
        as_table(reference(BASE, tmp_path).points)
    )


def test_files_are_atomic_pruned_and_fenced(tmp_path: Path) -> None:
    job = JobSpec.model_validate({**BASE, "max_steps": 30})
    directory = tmp_path / "checkpoints"
    train(
        job,
        MemorySink(flush_seconds=3600),
        data_root=tmp_path,
        device=CPU,
        checkpoints=Checkpointer(directory=directory, every_steps=4, attempt=3, keep=2),
    )
    assert [p.name for *_, p in list_checkpoints(directory)] == [
        checkpoint_name(28, 3),
        checkpoint_name(24, 3),
    ]
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]

    fenced = tmp_path / "fenced"
    train(
        job,
        MemorySink(flush_seconds=3600),
        data_root=tmp_path,
        device=CPU,
        checkpoints=Checkpointer(directory=fenced, every_steps=4, may_write=lambda: False),
    )
    assert list_checkpoints(fenced) == []  # nothing renamed in, no temporary left behind
    assert not list(fenced.iterdir())


def test_a_damaged_or_foreign_newest_file_falls_back_to_an_older_one(tmp_path: Path) -> None:
    job = JobSpec.model_validate(BASE)
    directory = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        train(
            job,
            DiesAt(23, flush_seconds=3600),
            data_root=tmp_path,
            device=CPU,
            checkpoints=Checkpointer(directory=directory, every_steps=5, keep=5, attempt=1),
        )
    (directory / checkpoint_name(30, 1)).write_bytes(b"torn write")
    # A file that would run code when unpickled: weights_only refuses it.
    torch.save({"format": 1, "evil": Path("/")}, directory / checkpoint_name(29, 1))
    other = directory / checkpoint_name(20, 1)
    state = torch.load(other, weights_only=True)
    state["spec_hash"] = "another spec"
    torch.save(state, directory / checkpoint_name(26, 1))
    keeper = Checkpointer(directory=directory, every_steps=5, attempt=2)
    sink = MemorySink(flush_seconds=3600)
    train(job, sink, data_root=tmp_path, device=CPU, checkpoints=keeper)
    assert keeper.resumed_from == 20


def test_no_directory_means_no_files_and_a_plain_run(tmp_path: Path) -> None:
    keeper = Checkpointer()
    assert not keeper.enabled and not keeper.due(1000)
    sink = MemorySink(flush_seconds=3600)
    outcome = train(
        JobSpec.model_validate(BASE), sink, data_root=tmp_path, device=CPU, checkpoints=keeper
    )
    assert outcome.status == "succeeded" and keeper.resumed_from is None
