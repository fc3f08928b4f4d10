"""sentinel v2: editable policies (converted to the band format), the gate loop, the webhook outbox

Revision ID: 0003
Revises: 0002

Stored policies are rewritten from the v1 format (``{"enabled", "action", "threshold"}`` per check) to v2
bands: disabled → "off"; reject at T → {"reject": T}; flag at T → {"review": T}; decode/finite take "reject"
or "review". Checks v1 did not have take the v2 defaults. The conversion is written out here, not imported:
a migration must keep doing what it did when the application code moves on. ``content_hash`` is left alone:
it identifies what was uploaded.
"""

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_YES_NO_CHECKS = ("decode", "finite")
_V1_KEYS = {"enabled", "action", "threshold"}
_V1_CHECKS = ("decode", "finite", "blank", "noise", "clip_alignment")


def _v2_check(name: str, v1: dict[str, Any]) -> Any:
    if v1.get("enabled", True) is False:
        return "off"
    band = "review" if v1.get("action", "reject") == "flag" else "reject"
    if name in _YES_NO_CHECKS or "threshold" not in v1:
        return band
    return {band: v1["threshold"]}


def v2_policy(v1: Any) -> Any:
    """The v2 form of a v1 policy; anything not in the v1 shape is returned as it is."""
    if not isinstance(v1, dict) or not isinstance(v1.get("checks"), dict):
        return v1
    checks = {}
    for name, entry in v1["checks"].items():
        is_v1 = isinstance(entry, dict) and bool(set(entry) & _V1_KEYS)
        checks[name] = _v2_check(name, entry) if is_v1 else entry
    return {**v1, "checks": checks}


def _convert_policies() -> None:
    connection = op.get_bind()
    versions = sa.table("workflow_versions", sa.column("id", sa.Integer), sa.column("policy", sa.JSON))
    for version_id, policy in connection.execute(sa.select(versions.c.id, versions.c.policy)).all():
        stored = json.loads(policy) if isinstance(policy, str) else policy
        converted = v2_policy(stored)
        if converted != stored:
            connection.execute(sa.update(versions).where(versions.c.id == version_id).values(policy=converted))


def upgrade() -> None:
    with op.batch_alter_table("workflow_versions") as batch:
        batch.add_column(sa.Column("policy_revision", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("policy_updated_at", sa.DateTime(), nullable=True))
    _convert_policies()

    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("webhook_url", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("gate", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("policy_revision", sa.Integer(), nullable=True))

    with op.batch_alter_table("run_outputs") as batch:
        batch.add_column(sa.Column("workflow_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("phash", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("request_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("sampled", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("gate_attempt", sa.Integer(), server_default="1", nullable=False))
        batch.create_index(batch.f("ix_run_outputs_workflow_id"), ["workflow_id"], unique=False)
        batch.create_index(batch.f("ix_run_outputs_sha256"), ["sha256"], unique=False)
    # Outputs recorded before: their endpoint, from their run's version.
    op.execute(
        "UPDATE run_outputs SET workflow_id = (SELECT workflow_versions.workflow_id FROM runs JOIN "
        "workflow_versions ON workflow_versions.id = runs.version_id WHERE runs.id = run_outputs.run_id)"
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.create_index(batch.f("ix_webhook_deliveries_run_id"), ["run_id"], unique=False)
        batch.create_index(batch.f("ix_webhook_deliveries_state"), ["state"], unique=False)
        batch.create_index(batch.f("ix_webhook_deliveries_next_attempt_at"), ["next_attempt_at"], unique=False)


def _v1_check(entry: Any) -> dict[str, Any]:
    if entry == "off":
        return {"enabled": False}
    if isinstance(entry, str):
        return {"enabled": True, "action": "reject" if entry == "reject" else "flag"}
    band = "reject" if "reject" in entry else "review"
    threshold = entry[band]
    if isinstance(threshold, dict):  # a percentile: v1 has only fixed numbers, so its fallback
        threshold = threshold["fallback"]
    return {"enabled": True, "action": "reject" if band == "reject" else "flag", "threshold": threshold}


def v1_policy(v2: Any) -> Any:
    """The v1 form of a v2 policy, for the code before this revision: v1's checks only, their strictest band."""
    if not isinstance(v2, dict) or not isinstance(v2.get("checks"), dict):
        return v2
    checks = {name: _v1_check(entry) for name, entry in v2["checks"].items() if name in _V1_CHECKS}
    return {"checks": checks, "prompt_input": v2.get("prompt_input", "prompt")}


def downgrade() -> None:
    connection = op.get_bind()
    versions = sa.table("workflow_versions", sa.column("id", sa.Integer), sa.column("policy", sa.JSON))
    for version_id, policy in connection.execute(sa.select(versions.c.id, versions.c.policy)).all():
        stored = json.loads(policy) if isinstance(policy, str) else policy
        connection.execute(sa.update(versions).where(versions.c.id == version_id).values(policy=v1_policy(stored)))
    # The code before this revision knows no "held": those runs wait for review as rejected ones do.
    runs = sa.table("runs", sa.column("status", sa.String))
    connection.execute(sa.update(runs).where(runs.c.status == "held").values(status="rejected"))
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("run_outputs") as batch:
        batch.drop_index(batch.f("ix_run_outputs_sha256"))
        batch.drop_index(batch.f("ix_run_outputs_workflow_id"))
        for column in ("gate_attempt", "sampled", "request_key", "phash", "sha256", "workflow_id"):
            batch.drop_column(column)
    with op.batch_alter_table("runs") as batch:
        for column in ("policy_revision", "gate", "webhook_url"):
            batch.drop_column(column)
    with op.batch_alter_table("workflow_versions") as batch:
        batch.drop_column("policy_updated_at")
        batch.drop_column("policy_revision")
