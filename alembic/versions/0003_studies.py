"""studies: studies and their trial jobs; per-series summaries and rollups kept at each flush;
metrics without its foreign key to jobs (a per-row check that halved the ingest rate)

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# models/series.py ROLLUP_WIDTHS as of this revision.
ROLLUP_WIDTHS = tuple(64 * 4**k for k in range(10))


def upgrade() -> None:
    # metrics loses its foreign key to jobs (see models.tables.Metric for the measurement).
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("metrics_job_id_fkey", "metrics", type_="foreignkey")
    else:
        with op.batch_alter_table(
            "metrics", naming_convention={"fk": "fk_%(table_name)s_%(column_0_name)s"}
        ) as batch_op:
            batch_op.drop_constraint("fk_metrics_job_id", type_="foreignkey")

    op.create_table(
        "studies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("preset", sa.String(length=64), nullable=True),
        sa.Column("base_spec", sa.JSON(), nullable=False),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("sampler", sa.JSON(), nullable=False),
        sa.Column("objective", sa.JSON(), nullable=False),
        sa.Column("pruner", sa.JSON(), nullable=True),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("reference", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sampler_state", sa.JSON(), nullable=False),
        sa.Column("driver_token", sa.String(length=36), nullable=True),
        sa.Column("driver_beat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_studies_owner"), ["owner"], unique=False)
        batch_op.create_index(batch_op.f("ix_studies_status"), ["status"], unique=False)

    op.create_table(
        "study_trials",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("system_attrs", sa.JSON(), nullable=False),
        sa.Column("pruned", sa.Boolean(), nullable=False),
        sa.Column("enqueued", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )
    with op.batch_alter_table("study_trials", schema=None) as batch_op:
        batch_op.create_index(
            "ix_study_trials_study", ["study_id", "number", "seed"], unique=True
        )

    op.create_table(
        "metric_summaries",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_step", sa.Integer(), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        sa.Column("last_value", sa.Float(), nullable=False),
        sa.Column("last_wall", sa.Float(), nullable=False),
        sa.Column("min_step", sa.Integer(), nullable=False),
        sa.Column("min_value", sa.Float(), nullable=False),
        sa.Column("max_step", sa.Integer(), nullable=False),
        sa.Column("max_value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "name"),
    )

    op.create_table(
        "metric_rollups",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("min_step", sa.Integer(), nullable=False),
        sa.Column("min_value", sa.Float(), nullable=False),
        sa.Column("min_epoch", sa.Float(), nullable=True),
        sa.Column("min_wall", sa.Float(), nullable=False),
        sa.Column("max_step", sa.Integer(), nullable=False),
        sa.Column("max_value", sa.Float(), nullable=False),
        sa.Column("max_epoch", sa.Float(), nullable=True),
        sa.Column("max_wall", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "name", "width", "bucket"),
    )

    # Series that existed before this revision get their summaries and rollups from the rows.
    op.execute(
        """
        INSERT INTO metric_summaries (job_id, name, count, first_step, last_step, last_value,
            last_wall, min_step, min_value, max_step, max_value)
        SELECT m.job_id, m.name, a.n, a.first_step, a.last_step,
            (SELECT value FROM metrics l WHERE l.job_id = m.job_id AND l.name = m.name
                AND l.step = a.last_step),
            (SELECT wall_time FROM metrics l WHERE l.job_id = m.job_id AND l.name = m.name
                AND l.step = a.last_step),
            (SELECT step FROM metrics l WHERE l.job_id = m.job_id AND l.name = m.name
                ORDER BY value, step LIMIT 1),
            a.min_value,
            (SELECT step FROM metrics l WHERE l.job_id = m.job_id AND l.name = m.name
                ORDER BY value DESC, step LIMIT 1),
            a.max_value
        FROM (SELECT DISTINCT job_id, name FROM metrics) m
        JOIN (SELECT job_id, name, count(*) AS n, min(step) AS first_step,
                max(step) AS last_step, min(value) AS min_value, max(value) AS max_value
              FROM metrics GROUP BY job_id, name) a
          ON a.job_id = m.job_id AND a.name = m.name
        """
    )
    for width in ROLLUP_WIDTHS:
        op.execute(
            f"""
            WITH ranked AS (
                SELECT job_id, name, step, value, epoch, wall_time, step / {width} AS bucket,
                    row_number() OVER (PARTITION BY job_id, name, step / {width}
                                       ORDER BY value, step) AS lowest,
                    row_number() OVER (PARTITION BY job_id, name, step / {width}
                                       ORDER BY value DESC, step) AS highest
                FROM metrics
            )
            INSERT INTO metric_rollups (job_id, name, width, bucket, min_step, min_value,
                min_epoch, min_wall, max_step, max_value, max_epoch, max_wall)
            SELECT lo.job_id, lo.name, {width}, lo.bucket, lo.step, lo.value, lo.epoch,
                lo.wall_time, hi.step, hi.value, hi.epoch, hi.wall_time
            FROM ranked lo JOIN ranked hi
              ON hi.job_id = lo.job_id AND hi.name = lo.name AND hi.bucket = lo.bucket
            WHERE lo.lowest = 1 AND hi.highest = 1
            """
        )


def downgrade() -> None:
    with op.batch_alter_table("metrics") as batch_op:
        batch_op.create_foreign_key(
            "metrics_job_id_fkey", "jobs", ["job_id"], ["id"], ondelete="CASCADE"
        )
    op.drop_table("metric_rollups")
    op.drop_table("metric_summaries")
    with op.batch_alter_table("study_trials", schema=None) as batch_op:
        batch_op.drop_index("ix_study_trials_study")
    op.drop_table("study_trials")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_studies_status"))
        batch_op.drop_index(batch_op.f("ix_studies_owner"))
    op.drop_table("studies")
