"""projects and trust: projects with members and roles, keys owned by users with scopes and limits,
workflows and runs in a project, an audit log

Revision ID: 0005
Revises: 0004

Existing data moves into one project named "default": every workflow and run, every user as a member (server
admins as project admins, others as developers). Existing keys are given to the first server admin (else the
first user); their scopes keep what they could do before: an admin key everything, another key run, read and
publish.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_index("ix_audit_log_project_id", "audit_log", ["project_id"])

    bind = op.get_bind()
    bind.execute(sa.text("INSERT INTO projects (name, created_at) VALUES ('default', CURRENT_TIMESTAMP)"))
    default_id = bind.execute(sa.text("SELECT id FROM projects WHERE name = 'default'")).scalar_one()
    bind.execute(sa.text(
        "INSERT INTO memberships (user_id, project_id, role, created_at) SELECT id, :project, "
        "CASE WHEN is_admin THEN 'admin' ELSE 'developer' END, CURRENT_TIMESTAMP FROM users"),
        {"project": default_id})

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("limits", sa.JSON(), nullable=True))
        batch.create_foreign_key("fk_api_keys_user_id_users", "users", ["user_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_api_keys_user_id", ["user_id"])
    owner = bind.execute(sa.text("SELECT id FROM users ORDER BY is_admin DESC, id LIMIT 1")).scalar()
    if owner is not None:
        bind.execute(sa.text("UPDATE api_keys SET user_id = :owner"), {"owner": owner})
    bind.execute(sa.text("UPDATE api_keys SET scopes = :scopes WHERE NOT is_admin"),
                 {"scopes": '{"projects": null, "workflows": null, "actions": ["run", "read", "publish"]}'})

    with op.batch_alter_table("workflows") as batch:
        batch.add_column(sa.Column("project_id", sa.Integer(), nullable=True))
    bind.execute(sa.text("UPDATE workflows SET project_id = :project"), {"project": default_id})
    with op.batch_alter_table("workflows") as batch:
        batch.alter_column("project_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key("fk_workflows_project_id_projects", "projects", ["project_id"], ["id"])
        batch.create_index("ix_workflows_project_id", ["project_id"])

    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("project_id", sa.Integer(), nullable=True))
    bind.execute(sa.text("UPDATE runs SET project_id = :project"), {"project": default_id})
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("project_id", existing_type=sa.Integer(), nullable=False)
        batch.create_index("ix_runs_project_id", ["project_id"])
        batch.create_index("ix_runs_api_key_queued", ["api_key_id", "queued_at"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_api_key_queued")
        batch.drop_index("ix_runs_project_id")
        batch.drop_column("project_id")
    with op.batch_alter_table("workflows") as batch:
        batch.drop_index("ix_workflows_project_id")
        batch.drop_constraint("fk_workflows_project_id_projects", type_="foreignkey")
        batch.drop_column("project_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_user_id")
        batch.drop_constraint("fk_api_keys_user_id_users", type_="foreignkey")
        batch.drop_column("limits")
        batch.drop_column("scopes")
        batch.drop_column("user_id")
    op.drop_index("ix_audit_log_project_id", table_name="audit_log")
    op.drop_index("ix_audit_log_action", table_name="audit_log")
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("memberships")
    op.drop_table("projects")
