"""ORM models: the run table is the source of truth, not the broker.

Timestamps are naive UTC (``utcnow()``): SQLite has no time zones, and one convention on both databases
keeps the watchdog's comparisons simple.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "Project",
    "Membership",
    "User",
    "ApiKey",
    "AuditEntry",
    "WebSession",
    "Workflow",
    "WorkflowVersion",
    "Run",
    "RunOutput",
    "ReviewDecision",
    "WebhookDelivery",
    "PoolCapabilities",
    "RunStatus",
    "utcnow",
    "new_id",
]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class RunStatus:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELED = "canceled"
    # An output fell in a review band: withheld until a person decides. Terminal for waiting callers (the
    # worker is done); a reviewer's decision later turns it into succeeded or rejected.
    HELD = "held"
    TERMINAL = frozenset({SUCCEEDED, REJECTED, FAILED, CANCELED, HELD})
    # Ended for good when they are written: a webhook can go out at once (rejected/held wait for review).
    ENDED_WITHOUT_REVIEW = frozenset({SUCCEEDED, FAILED, CANCELED})


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    """A team's space: workflows, their runs, outputs, webhooks and review items belong to one project."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Membership(Base):
    """A user's role in a project: admin, developer, reviewer or caller (see platform/access)."""

    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    # A server admin: every right in every project (the account the first start makes).
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    # The public part of the key, used to find the row; the secret part is only stored as a hash.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # The user the key acts for: it can never do more than that user's roles allow.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True,
                                                index=True)
    # What the key may do within its user's rights: {"projects": [names] | null, "workflows": [names] | null,
    # "actions": [...] | null}; null (or a null entry) narrows nothing.
    scopes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Per-key overrides of the operator's rate limits and quotas ({"runs_per_minute": 30, ...}; 0: none).
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AuditEntry(Base):
    """Append-only: who did what, when, from where (publishes, policy changes, keys, reviews, logins)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(160))  # "user:alice", "key:ci (3f2a9c01d4e5)", "cli"
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    api_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(48), index=True)  # "workflow.publish", "policy.change", ...
    project_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the client's IP address


class WebSession(Base):
    __tablename__ = "web_sessions"
    # sha256 of the cookie value: a leaked database does not leak live sessions.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    user: Mapped[User] = relationship(lazy="joined")


class Workflow(Base):
    __tablename__ = "workflows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    versions: Mapped[list[WorkflowVersion]] = relationship(
        back_populates="workflow", order_by="WorkflowVersion.number"
    )


class WorkflowVersion(Base):
    """Immutable but for its gate policy. ``content_hash`` covers graph, exposed inputs and the policy as
    uploaded: same content, same version.

    The hash covers the API-format graph, not the uploaded document: a UI export whose nodes were only moved
    converts to the same graph and so is the same version (which keeps the document first uploaded). The
    policy can be edited later (``policy_revision`` counts the edits; workers key their caches on it); the hash
    keeps identifying what was uploaded.
    """

    __tablename__ = "workflow_versions"
    __table_args__ = (
        UniqueConstraint("workflow_id", "number"),
        UniqueConstraint("workflow_id", "content_hash"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    graph: Mapped[dict[str, Any]] = mapped_column(JSON)  # API format: what runs
    # The document as uploaded ("api" or "ui" format); a UI export is kept whole so it can be opened again.
    source_format: Mapped[str] = mapped_column(String(8), default="api", server_default="api")
    source: Mapped[Any] = mapped_column(JSON, nullable=True)
    inputs_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    policy_revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    policy_updated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The worker pool whose queue (pool.<name>) runs it, and whose reported node schemas it was checked against.
    # NULL for versions uploaded before pools existed: they go to the API server's pool (COMFYGATE_POOL).
    pool: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A run attempt past this is interrupted on its engine and fails with error type "timeout".
    timeout_seconds: Mapped[float] = mapped_column(Float, default=600.0, server_default="600")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    workflow: Mapped[Workflow] = relationship(back_populates="versions", lazy="joined")


class Run(Base):
    __tablename__ = "runs"
    # Per-key quotas count a key's runs in flight and of the last day.
    __table_args__ = (Index("ix_runs_api_key_queued", "api_key_id", "queued_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    version_id: Mapped[int] = mapped_column(ForeignKey("workflow_versions.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=RunStatus.QUEUED)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The workflow with the caller's inputs bound: what the worker executes.
    prompt: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    queued_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # When a task for this run was last handed to the broker (the watchdog re-sends lost ones).
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    # Denormalised from the version's workflow: who may see the run is decided without a join.
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    # Where run.ended / run.reviewed are POSTed (through the webhook_deliveries outbox).
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    # The gate loop: every generation attempt with its seeds and verdicts, which one was chosen, and why
    # retrying stopped (see platform/gate_loop.py).
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The version's policy revision this run was gated with.
    policy_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The engine that ran the latest attempt ("builtin" or "comfyui"): all the platform knows of engines.
    engine: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Where a running run is: {"node", "value", "max", "nodes_done"}; written with the heartbeat.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    version: Mapped[WorkflowVersion] = relationship(lazy="joined")
    outputs: Mapped[list[RunOutput]] = relationship(
        back_populates="run", order_by="RunOutput.index", lazy="selectin"
    )


class RunOutput(Base):
    __tablename__ = "run_outputs"
    __table_args__ = (UniqueConstraint("run_id", "index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    # Denormalised from the run's version: the gate reads an endpoint's recent outputs (duplicates,
    # percentile thresholds) and calibration its labels, without joining runs and versions.
    workflow_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    index: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    storage_key: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[dict[str, Any]] = mapped_column(JSON)
    passed: Mapped[bool] = mapped_column(Boolean)
    released: Mapped[bool] = mapped_column(Boolean, index=True)
    # pending (waits for a reviewer) | approved | rejected; None when the sentinel passed it (and it was not
    # sampled for audit).
    review_state: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    # sha256 of the stored bytes and the 64-bit perceptual hash (16 hex digits): the duplicate check's history.
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    phash: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Identifies the request (hash of the bound prompt): a repeated request may repeat its image.
    request_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A passing output also sent to review to measure what the gate misses (it stays released).
    sampled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # Which generation attempt of the run's gate loop made it.
    gate_attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    run: Mapped[Run] = relationship(back_populates="outputs")


class ReviewDecision(Base):
    """Every decision is kept (also rejections): they are the labels for calibrating the gate later."""

    __tablename__ = "review_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("run_outputs.id", ondelete="CASCADE"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    decided_by: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WebhookDelivery(Base):
    """The webhook outbox: a row is written in the same transaction as the run change it announces, and the
    API servers' senders deliver it (at least once) from here."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    event: Mapped[str] = mapped_column(String(32))  # run.ended | run.reviewed
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the JSON body sent, as written
    state: Mapped[str] = mapped_column(String(16), index=True, default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class PoolCapabilities(Base):
    """What the engine of a pool's workers offers, as the latest reporting worker saw it: uploads for the pool
    are converted and validated against these node schemas and model files."""

    __tablename__ = "pool_capabilities"
    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    engine: Mapped[str] = mapped_column(String(32))
    worker: Mapped[str] = mapped_column(String(255))
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of object_info + models: unchanged reports skip
    object_info: Mapped[dict[str, Any]] = mapped_column(JSON)  # GET /object_info as the engine answered it
    models: Mapped[dict[str, Any]] = mapped_column(JSON)  # {folder: [file names]}
    reported_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
