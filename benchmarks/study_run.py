"""Run a study preset to the end in this process and write its report.

The same code paths as the service, without a broker: the study is resolved and stored
(models/studies.py), the driver's rounds (worker/studies.py) ask for configurations, and each
queued job runs through worker.tasks.execute_job (claim → engine → finish) on a local SQLite
ledger. The markdown summary, with published numbers where the preset has them, goes to
benchmarks/results/<preset>.md.

    python benchmarks/study_run.py mnist_showdown [--seeds 3] [--override epochs=1 ...]
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("preset")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--override", action="append", default=[], help="path=json value")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("DESCENT_DATA_DIR") or tempfile.mkdtemp(prefix="study-"))
    os.environ.setdefault("DESCENT_DATA_DIR", str(data_dir))
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)

    from sqlalchemy import select

    from models import studies
    from models.db import session_scope
    from models.migrate import upgrade
    from models.tables import Job, JobStatus, Study, StudyTrial
    from worker import studies as driver
    from worker.tasks import execute_job

    upgrade()
    request: dict = {"preset": args.preset}
    if args.seeds:
        request["seeds"] = args.seeds
    if args.override:
        request["overrides"] = {
            path: json.loads(value) for path, value in (o.split("=", 1) for o in args.override)
        }
    definition = studies.resolve(studies.StudyCreate.model_validate(request))
    with session_scope() as session:
        study = studies.create_study(session=session, definition=definition, owner="local")
        study_id, token = study.id, study.driver_token
    assert token is not None
    started = time.perf_counter()
    ran = 0
    while True:
        result = driver.drive_round(study_id, token)
        if result.next_in is None:
            break
        with session_scope() as session:
            queued = session.scalars(
                select(Job.id)
                .join(StudyTrial, StudyTrial.job_id == Job.id)
                .where(StudyTrial.study_id == study_id, Job.status == JobStatus.queued)
                .order_by(StudyTrial.number, StudyTrial.seed)
            ).all()
        for job_id in queued:
            status = execute_job(job_id, worker="study_run")
            ran += 1
            print(f"job {ran}: {status} ({time.perf_counter() - started:.0f} s)", flush=True)
    with session_scope() as session:
        study = session.get(Study, study_id)
        assert study is not None
        summary = studies.summarize(session=session, study=study)
        title = f"{args.preset} ({study.status}, {len(study.seeds)} seeds)"
        table = studies.render_markdown(summary, title=title)
        first_job = session.scalars(
            select(Job)
            .join(StudyTrial, StudyTrial.job_id == Job.id)
            .where(StudyTrial.study_id == study_id)
        ).first()
        provenance = (first_job.summary or {}) if first_job else {}
    notes = [
        "",
        f"Ran in {time.perf_counter() - started:.0f} s on {os.cpu_count()} CPU cores "
        f"(device {provenance.get('device')}), Python {platform.python_version()}, torch "
        f"{provenance.get('versions', {}).get('torch')}; data: {provenance.get('data_source')}.",
        f"Command: python benchmarks/study_run.py {' '.join(sys.argv[1:])}",
    ]
    report = table + "\n".join(notes) + "\n"
    print(report)
    out = Path(args.out or ROOT / f"benchmarks/results/{args.preset}.md")
    out.write_text(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
