"""The node schemas a pool's uploads and runs are checked against: what its workers reported, or, until they
have, this API server's own registry (and the answer says so).

A reported ``object_info`` (a few hundred KB from a real ComfyUI) is parsed once per pool and digest and kept
in this process; each later call costs one small query for the row's digest.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfygate.comfy_runtime import NodeRegistry, NodeSchema, NodeSchemaError, NodeSchemas
from comfygate.platform.models import PoolCapabilities

__all__ = ["PoolSchemas", "schemas_for_pool", "registry_schemas"]

log = logging.getLogger(__name__)

# Parsed schemas kept per (pool, digest): a handful of pools, each a few MB parsed at most.
CACHE_ENTRIES = 16
BUILTIN_ENGINE = "builtin"


@dataclass(frozen=True)
class PoolSchemas:
    pool: str | None  # None: a version uploaded before pools (checked against this server's nodes)
    schemas: NodeSchemas
    reported: bool  # False: nothing reported for the pool; this API server's registry stands in
    registry: NodeRegistry  # this API server's: its nodes' VALIDATE_INPUTS hooks (see hooks)
    engine: str | None = None
    reported_by: str | None = None
    reported_at: datetime | None = None

    @property
    def hooks(self) -> NodeRegistry | None:
        """Node classes whose VALIDATE_INPUTS run in validation: this server's, when the pool's workers run the
        same built-in nodes (or when the registry is what is checked); a ComfyUI pool's schemas have none."""
        return self.registry if not self.reported or self.engine == BUILTIN_ENGINE else None

    def note(self) -> str | None:
        if self.reported:
            return None
        if self.pool is None:
            return "version uploaded before pools; checked against this API server's own nodes"
        return (f"pool {self.pool!r} has not reported its nodes yet; checked against this API server's own "
                "nodes")

    def checked_against(self) -> dict[str, Any]:
        """What an answer says the workflow was checked against."""
        body: dict[str, Any] = {"pool": self.pool, "source": "pool" if self.reported else "api",
                                "node_types": len(self.schemas)}
        if self.reported:
            body.update(engine=self.engine, reported_by=self.reported_by,
                        reported_at=self.reported_at.isoformat() + "Z" if self.reported_at else None)
        else:
            body["note"] = self.note()
        return body


_cache: OrderedDict[tuple[str, str], NodeSchemas] = OrderedDict()
_cache_lock = threading.Lock()


def _parse(pool: str, object_info: Any) -> NodeSchemas:
    """Every readable entry: one malformed node (a custom node's odd declaration) must not make the whole
    pool unusable; it is left out, so a workflow using it is told that node type is missing."""
    schemas: dict[str, NodeSchema] = {}
    unreadable: list[str] = []
    for class_type, entry in (object_info.items() if isinstance(object_info, dict) else ()):
        try:
            schemas[class_type] = NodeSchema.from_object_info(class_type, entry)
        except NodeSchemaError:
            unreadable.append(class_type)
    if unreadable:
        log.warning("pool %s reported %d node schemas that cannot be read, left out: %s",
                    pool, len(unreadable), ", ".join(sorted(unreadable)[:20]))
    return NodeSchemas(schemas, source=f"pool {pool!r}")


def _cached(pool: str, digest: str, load: Any) -> NodeSchemas | None:
    key = (pool, digest)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    object_info = load()
    if object_info is None:
        return None
    schemas = _parse(pool, object_info)
    with _cache_lock:
        _cache[key] = schemas
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return schemas


def registry_schemas(registry: NodeRegistry, pool: str | None) -> PoolSchemas:
    return PoolSchemas(pool, registry.schemas(), reported=False, registry=registry)


def schemas_for_pool(session: Session, registry: NodeRegistry, pool: str | None) -> PoolSchemas:
    """``pool``'s reported schemas, or the registry's (``reported`` False) while it has reported nothing.
    ``pool`` None: a version uploaded before pools, which was checked against the registry."""
    if pool is None:
        return registry_schemas(registry, None)
    for _ in range(3):
        head = session.execute(
            select(PoolCapabilities.digest, PoolCapabilities.engine, PoolCapabilities.worker,
                   PoolCapabilities.reported_at).where(PoolCapabilities.pool == pool)).one_or_none()
        if head is None:
            return registry_schemas(registry, pool)

        def load(digest: str = head.digest) -> Any:
            return session.scalar(select(PoolCapabilities.object_info)
                                  .where(PoolCapabilities.pool == pool, PoolCapabilities.digest == digest))

        schemas = _cached(pool, head.digest, load)
        if schemas is not None:
            return PoolSchemas(pool, schemas, reported=True, registry=registry, engine=head.engine,
                               reported_by=head.worker, reported_at=head.reported_at)
        # A worker rewrote the row between the two reads: read its new digest.
    raise RuntimeError(f"the capabilities of pool {pool!r} keep changing while being read")
