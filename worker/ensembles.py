"""Deep ensembles over seeds (Lakshminarayanan et al. 2017, https://arxiv.org/abs/1612.01474).

Every succeeded training job keeps its final weights (the net's state_dict, tensors only) under
`$DESCENT_DATA_DIR/weights/<job_id>.pt`; they are read back with `torch.load(weights_only=True)`,
so no pickled code ever runs. A `task: ensemble` job (POST /v1/ensembles creates one) rebuilds each
member's net from its stored spec, loads its weights, and averages the members' predictive
distributions on their shared validation rows: p̄(y|x) = (1/M) Σ_m p_m(y|x).

Metrics, step = number of members averaged so far (so the curve shows what each added member
buys): val_acc, val_nll, val_ece, val_entropy of p̄; val_mutual_information, the members'
disagreement H(p̄) − (1/M) Σ_m H(p_m); and member_val_acc / member_val_nll / member_val_ece of
member m alone at step m. With several workers, DESCENT_DATA_DIR must be storage they share.
"""

import os
import platform
import time
from pathlib import Path

import torch

from models.db import session_scope
from models.ensembles import ensemble_problems
from models.queries import get_job
from models.spec import JobSpec
from models.tables import JobStatus
from worker.datasets import load_data
from worker.engine.loop import VERSION, Outcome
from worker.engine.setup import resolve_device
from worker.engine.sink import MetricSink
from worker.engine.uncertainty import Calibration, entropy
from worker.nets import build_net


def weights_path(data_root: Path, job_id: str) -> Path:
    return Path(data_root) / "weights" / f"{job_id}.pt"


def keep_weights(outcome: Outcome, data_root: Path, job_id: str) -> None:
    """Save a succeeded training job's final weights (written whole, then renamed into place)."""
    if outcome.net is None or outcome.status != JobStatus.succeeded:
        return
    path = weights_path(data_root, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: value.detach().cpu() for name, value in outcome.net.state_dict().items()}
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    outcome.summary["weights"] = str(path.relative_to(data_root))


@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    net.eval()
    return torch.cat(
        [net(x[i : i + batch_size]).float().softmax(dim=1) for i in range(0, len(x), batch_size)]
    )


def load_members(spec: JobSpec, job_id: str) -> list[tuple[str, JobSpec]]:
    """The members' stored specs, after the same checks the API made (re-read: the ledger
    decides, and a job submitted straight to /v1/jobs was never checked)."""
    assert spec.ensemble is not None
    ids = spec.ensemble.jobs
    with session_scope() as session:
        me = get_job(session=session, job_id=job_id)
        owner = me.owner if me is not None else None
        members = [get_job(session=session, job_id=member) for member in ids]
        problems = ensemble_problems(members, ids, owner)
        if problems:
            raise ValueError("; ".join(problems))
        return [(m.id, JobSpec.model_validate(m.resolved_spec)) for m in members if m]


def run_ensemble(
    spec: JobSpec,
    sink: MetricSink,
    *,
    job_id: str,
    data_root: Path,
    device: torch.device | None = None,
) -> Outcome:
    started = time.perf_counter()
    device = device or resolve_device(spec.device)
    members = load_members(spec, job_id)
    first = members[0][1]
    assert first.data is not None and first.model is not None
    bundle = load_data(first.data, seed=first.seed, data_root=data_root)
    x, y = bundle.x_val.to(device), bundle.y_val.to(device)
    total = len(members)
    sink.set_totals(total, 1.0)
    mean = torch.zeros((len(x), bundle.num_outputs), device=device)
    mean_entropy = torch.zeros(len(x), device=device)
    status = JobStatus.succeeded
    for size, (member_id, member) in enumerate(members, start=1):
        path = weights_path(data_root, member_id)
        if not path.exists():
            raise FileNotFoundError(
                f"no saved weights for job {member_id} at {path} (jobs keep their weights from "
                "this version on; with several workers DESCENT_DATA_DIR must be shared)"
            )
        net = build_net(member.model, bundle.input_shape, bundle.num_outputs)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        probs = predict(net.to(device), x)
        alone = Calibration(device)
        alone.update_probs(probs, y)
        for name, value in alone.compute(prefix="member_val_").items():
            if name != "member_val_entropy":
                sink.log(name, size, value, None)
        sink.log("member_val_acc", size, (probs.argmax(dim=1) == y).float().mean(), None)
        mean += (probs - mean) / size  # running average of the members' distributions
        mean_entropy += (entropy(probs) - mean_entropy) / size
        together = Calibration(device)
        together.update_probs(mean, y)
        for name, value in together.compute().items():
            sink.log(name, size, value, None)
        sink.log("val_acc", size, (mean.argmax(dim=1) == y).float().mean(), None)
        sink.log("val_mutual_information", size, (entropy(mean) - mean_entropy).mean(), None)
        if sink.flush(size, size / total):
            status = JobStatus.canceled
            break
    summary = sink.summary()
    summary.update(
        task="ensemble",
        members=[member_id for member_id, _ in members],
        seeds=[member.seed for _, member in members],
        steps=total,
        data_source=bundle.source,
        validation_rows=len(x),
        wall_time_s=round(time.perf_counter() - started, 3),
        device=str(device),
        spec_hash=spec.spec_hash(),
        versions={
            "descent": VERSION,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )
    return Outcome(status, summary)
