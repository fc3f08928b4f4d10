"""engines and pools: a version names its pool and its run timeout, a run records its engine and progress,
and each pool's workers report what their engine offers (node schemas, model files)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_versions") as batch:
        # NULL for versions uploaded before pools: they keep going to the API server's pool (COMFYGATE_POOL).
        batch.add_column(sa.Column("pool", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("timeout_seconds", sa.Float(), server_default="600", nullable=False))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("engine", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))
    op.create_table(
        "pool_capabilities",
        sa.Column("pool", sa.String(length=64), primary_key=True),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("object_info", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("reported_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pool_capabilities")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("progress")
        batch.drop_column("engine")
    with op.batch_alter_table("workflow_versions") as batch:
        batch.drop_column("timeout_seconds")
        batch.drop_column("pool")
