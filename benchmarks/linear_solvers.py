"""Direct vs iterative linear least squares, as real `task: solve` jobs.

Each measurement is a job in a fresh embedded ledger (SQLite), run by the worker's own
`execute_job` (claim → solver runner → DatabaseSink → finish), and read back from the job's
summary, so the numbers are what the API would serve.

1. 002's "practical comparison": the 1000×100 random problem with known weights and noise 0.1,
   seed 42 (002's own np.random.seed(42), drawn in the same order), every method. Errors are
   deterministic; times are the median over --repeats jobs.
2. Condition sweep: the `conditioned` problem (200×20, singular values geometric from 1 to 1/κ,
   true weights the exact least-squares solution) for κ = 10¹ … 10¹², with a consistent right-hand
   side (residual 0) and with 10% of y outside X's range (residual 0.1).

BLAS threads are limited to --threads (default 1): on a small shared machine OpenBLAS's threads
spin against each other and a 1000×100 QR took 0.3–0.8 s instead of ~10 ms.

    python benchmarks/linear_solvers.py [--repeats 5] [--threads 1] [--device cpu]
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

TABLE_METHODS: list[Any] = [
    "normal_inverse",
    "normal_lu",
    "qr_householder",
    {"name": "qr_householder", "label": "qr_householder_scipy", "args": {"backend": "scipy"}},
    {"name": "qr_householder", "label": "qr_householder_torch", "args": {"backend": "torch"}},
    "gram_schmidt_classical",
    "gram_schmidt_modified",
    "svd_pinv",
    {"name": "ridge", "args": {"lam": 1.0}},
    "gradient_descent",
    {
        "name": "gradient_descent",
        "label": "gradient_descent_002",  # 002's code: lr 0.01 on the mean gradient, 1000 steps
        "args": {"lr": 0.01, "average": True, "max_iter": 1000, "tol": 0.0},
    },
    "conjugate_gradient",
    "jacobi",
    "newton",
]
SWEEP_METHODS = [
    "normal_inverse",
    "normal_lu",
    "qr_householder",
    "svd_pinv",
    "gram_schmidt_classical",
    "gram_schmidt_modified",
    {"name": "conjugate_gradient", "args": {"tol": 1e-14, "max_iter": 2000}},
]
KAPPAS = [10.0**k for k in range(1, 13)]


IN_PROCESS = False  # --in-process: the runner with an in-memory sink, no ledger (GPU machine)


def run_job(spec: dict) -> dict:
    """One job through the worker's own path; returns the stored job (summary included)."""
    if IN_PROCESS:
        from models.spec import JobSpec
        from worker.engine.sink import MemorySink
        from worker.solvers import run_solve

        outcome = run_solve(JobSpec.model_validate(spec), MemorySink(flush_seconds=3600))
        assert outcome.status == "succeeded", outcome
        return {"id": None, "summary": outcome.summary}
    from models.db import session_scope
    from models.queries import create_job, get_job
    from models.spec import JobSpec
    from worker.tasks import execute_job

    parsed = JobSpec.model_validate(spec)
    with session_scope() as session:
        job_id = create_job(session=session, spec=parsed, submitted=spec, owner="bench").id
    status = execute_job(job_id, worker="bench")
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        assert job is not None
        assert status == "succeeded", (status, job.error)
        return {"id": job.id, "summary": job.summary}


def solve_spec(problem: dict, methods: list, device: str, name: str) -> dict:
    return {
        "name": name,
        "task": "solve",
        "seed": 42,
        "device": device,
        "solve": {"problem": problem, "methods": methods},
    }


def practical_table(repeats: int, device: str) -> dict:
    problem = {"name": "random_regression", "args": {"n_samples": 1000, "n_features": 100}}
    runs = [
        run_job(solve_spec(problem, TABLE_METHODS, device, f"bench-1000x100-{i}"))
        for i in range(repeats)
    ]
    first = runs[0]["summary"]
    rows = {}
    for label, row in first["methods"].items():
        times = [run["summary"]["methods"][label].get("time_s") for run in runs]
        rows[label] = {
            "coef_error": row.get("coef_error"),
            "residual": row.get("residual"),
            "lstsq_gap": row.get("lstsq_gap"),
            "iterations": row.get("iterations"),
            "converged": row.get("converged"),
            "time_s_median": statistics.median(t for t in times if t is not None),
            "time_s_min": min(t for t in times if t is not None),
        }
    return {
        "problem": problem,
        "condition_number": first["condition_number"],
        "repeats": repeats,
        "job_ids": [run["id"] for run in runs],
        "methods": rows,
    }


def condition_sweep(residual: float, device: str) -> dict:
    rows = []
    for kappa in KAPPAS:
        problem = {
            "name": "conditioned",
            "args": {
                "n_samples": 200,
                "n_features": 20,
                "condition_number": kappa,
                "residual": residual,
            },
        }
        job = run_job(solve_spec(problem, SWEEP_METHODS, device, f"bench-kappa-{kappa:.0e}"))
        summary = job["summary"]
        rows.append(
            {
                "kappa": kappa,
                "measured_kappa": summary["condition_number"],
                "job_id": job["id"],
                **{
                    metric: {
                        label: row.get(metric, row.get("failed"))
                        for label, row in summary["methods"].items()
                    }
                    for metric in ("coef_error", "lstsq_gap")
                },
            }
        )
    return {"residual": residual, "rows": rows}


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return "fails: " + value.split(":", 1)[-1].strip()[:24]
    return f"{value:.2e}"


def markdown(results: dict) -> str:
    table = results["practical"]
    lines = [
        "# Linear least squares: direct vs iterative (benchmarks/linear_solvers.py)",
        "",
        f"Machine: {results['machine']}; GPU: {results['gpu']}; mode: {results['mode']}; "
        f"torch backend device: {results['device']}; BLAS threads: {results['threads']}; "
        f"numpy {results['versions']['numpy']}, scipy {results['versions']['scipy']}, "
        f"torch {results['versions']['torch']}.",
        "",
        f"## 002's 1000×100 problem (seed 42, noise 0.1; κ(X) = {table['condition_number']:.3f})",
        "",
        f"coef_error = ‖w − w_true‖₂, residual = ‖Xw − y‖₂, lstsq_gap = ‖w − w_lstsq‖/‖w_lstsq‖; "
        f"time: median (min) of {table['repeats']} jobs.",
        "",
        "| method | coef_error | residual | lstsq_gap | iterations | time (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in table["methods"].items():
        iterations = row["iterations"] if row["iterations"] is not None else "direct"
        if row["converged"] is False:
            iterations = f"{iterations} (not converged)"
        lines.append(
            f"| {label} | {row['coef_error']:.6f} | {row['residual']:.4f} | "
            f"{row['lstsq_gap']:.1e} | {iterations} | "
            f"{1000 * row['time_s_median']:.2f} ({1000 * row['time_s_min']:.2f}) |"
        )
    for sweep in results["sweeps"]:
        labels = list(sweep["rows"][0]["coef_error"])
        metrics = ["coef_error"] + (["lstsq_gap"] if sweep["residual"] else [])
        for metric in metrics:
            lines += [
                "",
                f"## Condition sweep: 200×20, residual {sweep['residual']} — {metric} vs κ(X)",
                "",
                "| κ | " + " | ".join(labels) + " |",
                "|---" * (len(labels) + 1) + "|",
            ]
            for row in sweep["rows"]:
                cells = " | ".join(fmt(row[metric][label]) for label in labels)
                lines.append(f"| 1e{round(math.log10(row['kappa']))} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--out", default=str(RESULTS / "linear_solvers"))
    parser.add_argument(
        "--in-process", action="store_true", help="run_solve with a memory sink, no database"
    )
    options = parser.parse_args()
    global IN_PROCESS
    IN_PROCESS = options.in_process

    data_dir = tempfile.mkdtemp(prefix="descent-bench-solvers-")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ["DESCENT_DATA_DIR"] = data_dir
    import numpy
    import scipy
    import scipy.linalg  # noqa: F401 - load every BLAS before limiting its threads
    import torch
    from threadpoolctl import threadpool_limits

    import worker.solvers  # noqa: F401 - the solvers and everything they load, likewise

    if not IN_PROCESS:
        import worker.tasks  # noqa: F401
        from models.migrate import upgrade

        upgrade()
    torch.set_num_threads(options.threads)
    with threadpool_limits(limits=options.threads):
        results = {
            "machine": f"{platform.machine()} {platform.processor() or ''} "
            f"{os.cpu_count()} CPUs".strip(),
            "threads": options.threads,
            "device": options.device,
            "mode": "in-process runner" if IN_PROCESS else "jobs through execute_job (SQLite)",
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "versions": {
                "numpy": numpy.__version__,
                "scipy": scipy.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "practical": practical_table(options.repeats, options.device),
            "sweeps": [condition_sweep(r, options.device) for r in (0.0, 0.1)],
        }
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
