"""Chaos on the real services: SIGKILL worker processes at random moments while jobs train.

Two phases, on PostgreSQL + Redis with `--workers` worker processes (a killed worker is replaced
at once, as a supervisor would):

1. Recovery time (`--recovery-trials`): one long job on an otherwise idle fleet; SIGKILL the
   worker running it; time until the job is `running` again on another worker (a new attempt
   claimed it) and until that attempt's first flush (training resumed). Measured against the
   lease (`--lease`): the reaper requeues a job once its lease has run out.
2. Chaos (`--kills` over `--jobs`): jobs with different seeds and optimizers train while a
   worker running one of them is killed every U(`--min-gap`, `--max-gap`) seconds. At the end
   every job must be `succeeded`, its `train_loss` series must have every step exactly once,
   and `train_loss`, `lr`, `val_loss`, `val_acc` must equal, bitwise, an uninterrupted run of the
   same spec in this process.

    python benchmarks/chaos.py --lease 30 --recovery-trials 3 --kills 0
    python benchmarks/chaos.py --lease 5 --recovery-trials 3 --jobs 6 --kills 12

Results: benchmarks/results/chaos_lease<lease>.json.
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._services import (  # noqa: E402
    REDIS_URL,
    ROOT,
    free_port,
    scratch_postgres,
    start,
    stop,
    wait_until,
)

SERIES = ("train_loss", "lr", "val_loss", "val_acc")
OPTIMIZERS = [
    {"name": "adam", "lr": 0.003},
    {"name": "sgd", "lr": 0.05, "args": {"momentum": 0.9, "nesterov": True}},
    {"name": "adamw", "lr": 0.003},
    {"name": "rmsprop", "lr": 0.001},
]


def job_spec(index: int, steps: int) -> dict:
    return {
        "name": f"chaos-{index}",
        "model": {"name": "mlp", "args": {"hidden": [64, 32], "dropout": 0.1}},
        "data": {"name": "synthetic_classification", "args": {"n_samples": 2048}, "batch_size": 32},
        "optimizer": OPTIMIZERS[index % len(OPTIMIZERS)],
        "schedule": {"name": "cosine", "warmup_steps": 50},
        "clipping": {"mode": "norm", "max_norm": 1.0},
        "eval": {"every_steps": 250},
        "max_steps": steps,
        "seed": index,
        "checkpoint_every": 100,
        "device": "cpu",
    }


def reference_series(spec: dict, root: Path) -> dict[str, list[float]]:
    import torch

    from models.spec import JobSpec
    from worker.engine import train
    from worker.engine.sink import MemorySink

    sink = MemorySink(flush_seconds=3600)
    train(JobSpec.model_validate(spec), sink, data_root=root, device=torch.device("cpu"))
    return {name: sink.series(name) for name in SERIES}


class Fleet:
    """Worker processes, replaced when killed."""

    def __init__(self, env: dict[str, str], logs: Path, size: int) -> None:
        self.env, self.logs, self.started = env, logs, 0
        self.workers: dict[int, subprocess.Popen] = {}
        for _ in range(size):
            self.spawn()
        self.wait_ready()

    def spawn(self) -> subprocess.Popen:
        self.started += 1
        log = self.logs / f"worker-{self.started}.log"
        process = start(["worker", "--loglevel", "info"], self.env, log)
        process.log = log  # type: ignore[attr-defined]
        self.workers[process.pid] = process
        return process

    def wait_ready(self) -> None:
        for process in self.workers.values():
            wait_until(
                lambda p=process: " ready." in p.log.read_text(),
                timeout=120,
                what=f"worker {process.pid} ready",
            )

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        self.workers.pop(pid).wait()

    def stop(self) -> None:
        for process in self.workers.values():
            stop(process)


class Watcher(threading.Thread):
    """Polls the jobs it is given; keeps (time, attempt, status, step, worker) per change."""

    def __init__(self, http: httpx.Client) -> None:
        super().__init__(daemon=True)
        self.http, self.jobs, self.history = http, [], {}
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def watch(self, job_id: str) -> None:
        with self.lock:
            self.jobs.append(job_id)
            self.history[job_id] = []

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            with self.lock:
                jobs = list(self.jobs)
            for job_id in jobs:
                try:
                    job = self.http.get(f"/v1/jobs/{job_id}").json()
                except httpx.HTTPError:
                    continue
                state = (job["attempt"], job["status"], job["progress"]["step"], job["worker"])
                history = self.history[job_id]
                if not history or history[-1][1:] != state:
                    history.append((time.monotonic(), *state))

    def latest(self, job_id: str) -> tuple:
        with self.lock:
            history = self.history[job_id]
            return history[-1] if history else (0, 0, "queued", 0, None)

    def recovery(self, job_id: str, killed_at: float, attempt: int) -> dict | None:
        """Seconds from the kill until a later attempt was running, and until it flushed."""
        running = flushed = None
        step_at_claim = None
        for t, att, status, step, _ in self.history[job_id]:
            if t < killed_at or att <= attempt:
                continue
            if running is None and status in ("running", "succeeded"):
                running, step_at_claim = t - killed_at, step
            elif running is not None and flushed is None and step != step_at_claim:
                flushed = t - killed_at
        if running is None:
            return None
        return {
            "running_again_s": round(running, 2),
            "first_flush_s": round(flushed, 2) if flushed else None,
        }


def pid_of(worker: str | None) -> int | None:
    if not worker:
        return None
    return int(worker.split("@")[0].removeprefix("descent-"))


def recovery_trials(http: httpx.Client, fleet: Fleet, watcher: Watcher, trials: int) -> list:
    results = []
    for trial in range(trials):
        results.append(recovery_trial(http, fleet, watcher, trial))
        print(f"trial {trial}: {results[-1]}", flush=True)
        fleet.spawn()
        fleet.wait_ready()
    return results


def recovery_trial(http: httpx.Client, fleet: Fleet, watcher: Watcher, trial: int) -> dict:
    spec = {**job_spec(trial, 10_000_000), "name": f"recovery-{trial}"}
    job_id = http.post("/v1/jobs", json=spec).json()["id"]
    watcher.watch(job_id)
    wait_until(
        lambda: watcher.latest(job_id)[3] >= 150 and watcher.latest(job_id)[2] == "running",
        timeout=120,
        what="recovery job past step 150",
    )
    _, attempt, _, step, worker = watcher.latest(job_id)
    killed_at = time.monotonic()
    fleet.kill(pid_of(worker))  # type: ignore[arg-type]
    wait_until(
        lambda: watcher.latest(job_id)[1] > attempt and watcher.latest(job_id)[3] != step,
        timeout=300,
        what="job resumed",
    )
    time.sleep(0.3)
    measured = watcher.recovery(job_id, killed_at, attempt)
    http.post(f"/v1/jobs/{job_id}/cancel")
    wait_until(
        lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled",
        timeout=60,
        what="recovery job canceled",
    )
    return {
        **(measured or {}),
        "killed_at_step": step,
        "resumed_from_step": resumed_from(http, job_id),
    }


def resumed_from(http: httpx.Client, job_id: str) -> int | None:
    summary = http.get(f"/v1/jobs/{job_id}").json()["summary"] or {}
    return summary.get("resumed_from_step")


def chaos(http: httpx.Client, fleet: Fleet, watcher: Watcher, args, references) -> dict:  # type: ignore[no-untyped-def]
    rng = random.Random(args.seed)
    ids = []
    for index in range(args.jobs):
        job_id = http.post("/v1/jobs", json=job_spec(index, args.steps)).json()["id"]
        watcher.watch(job_id)
        ids.append(job_id)
    kills = []
    started = time.monotonic()
    while len(kills) < args.kills:
        time.sleep(rng.uniform(args.min_gap, args.max_gap))
        busy = [(job_id, watcher.latest(job_id)) for job_id in ids]
        busy = [(j, s) for j, s in busy if s[2] == "running" and pid_of(s[4]) in fleet.workers]
        if not busy:
            if all(watcher.latest(j)[2] in ("succeeded", "failed") for j in ids):
                break
            continue
        job_id, (_, attempt, _, step, worker) = rng.choice(busy)
        killed_at = time.monotonic()
        fleet.kill(pid_of(worker))  # type: ignore[arg-type]
        kills.append(
            {
                "job": ids.index(job_id),
                "job_id": job_id,
                "attempt": attempt,
                "step_seen": step,
                "at_s": round(killed_at - started, 2),
                "killed_at": killed_at,
            }
        )
        print(
            f"kill {len(kills)}: worker {pid_of(worker)} running job {ids.index(job_id)} "
            f"at step ~{step}",
            flush=True,
        )
        fleet.spawn()
    deadline = time.monotonic() + args.timeout
    while not all(watcher.latest(j)[2] in ("succeeded", "failed", "canceled") for j in ids):
        assert time.monotonic() < deadline, "jobs did not finish"
        time.sleep(0.5)
    finished_in = time.monotonic() - started
    time.sleep(0.3)
    for kill in kills:
        kill.update(
            watcher.recovery(kill["job_id"], kill.pop("killed_at"), kill["attempt"])
            or {"running_again_s": None}
        )
    checks = [check_job(http, job_id, references[i], args.steps) for i, job_id in enumerate(ids)]
    return {"kills": kills, "jobs": checks, "wall_time_s": round(finished_in, 1)}


def check_job(http: httpx.Client, job_id: str, reference: dict, steps: int) -> dict:
    job = http.get(f"/v1/jobs/{job_id}").json()
    series = http.get(f"/v1/jobs/{job_id}/metrics", params={"names": ",".join(SERIES)}).json()[
        "series"
    ]
    train_steps = series["train_loss"]["steps"]
    equal = {name: series[name]["values"] == reference[name] for name in SERIES}
    return {
        "status": job["status"],
        "error": job["error"],
        "attempts": job["attempt"],
        "restarts": job["restarts"],
        "resumed_from_step": (job["summary"] or {}).get("resumed_from_step"),
        "steps_complete_and_unique": train_steps == list(range(1, steps + 1)),
        "rows": len(train_steps),
        "equal_to_reference": equal,
    }


def summarize(values: list[float]) -> dict:
    if not values:
        return {}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--recovery-trials", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--min-gap", type=float, default=2.0)
    parser.add_argument("--max-gap", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with scratch_postgres() as database, tempfile.TemporaryDirectory() as tmp:
        from models.migrate import upgrade

        references = []
        if args.kills:
            print(f"reference runs: {args.jobs} jobs × {args.steps} steps", flush=True)
            references = [
                reference_series(job_spec(i, args.steps), Path(tmp)) for i in range(args.jobs)
            ]
        upgrade(database)
        port = free_port()
        env = {
            "DATABASE_URL": database,
            "REDIS_URL": REDIS_URL,
            "DESCENT_QUEUE": f"descent-chaos-{uuid.uuid4().hex[:6]}",
            "DESCENT_DATA_DIR": tmp,
            "DESCENT_AUTH": "off",
            "DESCENT_REQUESTS_PER_MINUTE": "1000000",
            "DESCENT_MAX_ACTIVE_JOBS": "10000",
            "DESCENT_FLUSH_SECONDS": "0.5",
            "DESCENT_LEASE_SECONDS": str(args.lease),
            "DESCENT_REAP_SECONDS": str(min(1.0, args.lease / 4)),
            "DESCENT_MAX_RESTARTS": "1000",
        }
        api = start(["serve", "--no-migrate", "--port", str(port)], env, Path(tmp) / "api.log")
        fleet = Fleet(env, Path(tmp), args.workers)
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        watcher = Watcher(http)
        try:
            wait_until(lambda: http.get("/readyz").status_code == 200, what="API ready")
            watcher.start()
            recovery = recovery_trials(http, fleet, watcher, args.recovery_trials)
            result = chaos(http, fleet, watcher, args, references) if args.kills else {}
        finally:
            watcher.stopped.set()
            fleet.stop()
            stop(api)

    jobs = result.get("jobs", [])
    kills = result.get("kills", [])
    report = {
        "benchmark": "chaos",
        "machine": f"{os.cpu_count()} CPUs",
        "workers": args.workers,
        "lease_s": args.lease,
        "reap_every_s": min(1.0, args.lease / 4),
        "recovery": {
            "trials": recovery,
            "running_again_s": summarize(
                [r["running_again_s"] for r in recovery if r.get("running_again_s") is not None]
            ),
            "first_flush_s": summarize(
                [r["first_flush_s"] for r in recovery if r.get("first_flush_s") is not None]
            ),
        },
        "chaos": {
            "jobs": len(jobs),
            "steps_per_job": args.steps,
            "kills": len(kills),
            "all_succeeded": all(j["status"] == "succeeded" for j in jobs),
            "all_complete_and_unique": all(j["steps_complete_and_unique"] for j in jobs),
            "all_equal_to_reference": all(all(j["equal_to_reference"].values()) for j in jobs),
            "restarts_total": sum(j["restarts"] for j in jobs),
            "running_again_s": summarize(
                [k["running_again_s"] for k in kills if k.get("running_again_s") is not None]
            ),
            "wall_time_s": result.get("wall_time_s"),
            "kill_log": kills,
            "job_checks": jobs,
        }
        if args.kills
        else None,
    }
    print(
        json.dumps(
            {k: v for k, v in report.items() if k != "chaos"}
            | {
                "chaos": {
                    k: v
                    for k, v in (report["chaos"] or {}).items()
                    if k not in ("kill_log", "job_checks")
                }
            },
            indent=2,
        )
    )
    out = ROOT / "benchmarks" / "results" / f"chaos_lease{args.lease:g}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
