"""Which pools exist and what each offers: those whose workers reported, those versions name, and "default"."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comfygate.comfy_runtime import NodeRegistry
from comfygate.platform.models import PoolCapabilities, WorkflowVersion
from comfygate.platform.pools.names import DEFAULT_POOL
from comfygate.platform.pools.schemas import schemas_for_pool

__all__ = ["list_pools", "reported_pools"]


def reported_pools(session: Session) -> list[str]:
    return list(session.scalars(select(PoolCapabilities.pool).order_by(PoolCapabilities.pool)))


def list_pools(session: Session, registry: NodeRegistry) -> list[dict[str, Any]]:
    """One entry per pool, by name: who reported it and when, node type count, model files per folder, and
    how many workflow versions run on it. A pool that has not reported says what stands in for it."""
    versions: dict[str, int] = {pool: count for pool, count in session.execute(
        select(WorkflowVersion.pool, func.count()).where(WorkflowVersion.pool.is_not(None))
        .group_by(WorkflowVersion.pool))}
    models: dict[str, Any] = {pool: files for pool, files in session.execute(
        select(PoolCapabilities.pool, PoolCapabilities.models))}
    entries = []
    for pool in sorted({DEFAULT_POOL, *versions, *models}):
        checked = schemas_for_pool(session, registry, pool)
        entry: dict[str, Any] = {"pool": pool, "reported": checked.reported, "engine": None, "reported_by": None,
                                 "reported_at": None, "node_types": None, "model_files": None,
                                 "versions": versions.get(pool, 0)}
        if checked.reported:
            files = models.get(pool) or {}
            entry.update({key: value for key, value in checked.checked_against().items() if key in entry},
                         model_files={folder: len(names) for folder, names in sorted(files.items())
                                      if isinstance(names, list)})
        else:
            entry["note"] = (f"pool {pool!r} has not reported; uploads for it are checked against this API "
                             "server's nodes")
        entries.append(entry)
    return entries
