"""A worker's report, for its pool, of what its engine offers: node schemas (``/object_info``) and model files.

One ``pool_capabilities`` row per pool, written at the worker's start and whenever what it offers changes
(a model file added, ComfyUI restarted with other custom nodes). Uploads for the pool are converted and
validated against it (see schemas.py). Several workers of a pool share the row: the latest to change it wins,
and each writes only when its own capabilities change, so two that differ do not take turns rewriting it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from comfygate.platform.db import session_scope
from comfygate.platform.models import PoolCapabilities, utcnow

if TYPE_CHECKING:
    from comfygate.platform.engines.base import Capabilities

__all__ = ["CapabilityReporter", "capabilities_digest", "publish_capabilities"]

log = logging.getLogger(__name__)


def _storable(value: Any) -> Any:
    """JSON every database takes: tuples as lists, non-finite floats (a node's ``max: inf``) as null, which
    the schemas read as no bound. PostgreSQL's JSON type refuses Infinity and NaN."""
    if isinstance(value, dict):
        return {str(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def capabilities_digest(object_info: Any, models: Any) -> str:
    """sha256 of the canonical JSON of both: equal capabilities, equal digest, whatever the key order."""
    canonical = json.dumps({"object_info": object_info, "models": models}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def publish_capabilities(session_factory: sessionmaker[Session], pool: str, engine_name: str, worker_name: str,
                         caps: Capabilities) -> bool:
    """Write ``caps`` as ``pool``'s capabilities unless the row already holds the same; True when written."""
    object_info, models = _storable(caps.object_info), _storable(caps.models)
    digest = capabilities_digest(object_info, models)
    values = {"engine": engine_name, "worker": worker_name, "digest": digest, "object_info": object_info,
              "models": models}
    for attempt in range(2):
        try:
            with session_scope(session_factory) as session:
                # The digest alone: the stored object_info can be hundreds of KB.
                stored = session.scalar(select(PoolCapabilities.digest).where(PoolCapabilities.pool == pool))
                if stored == digest:
                    return False
                if stored is None:
                    session.add(PoolCapabilities(pool=pool, reported_at=utcnow(), **values))
                    session.flush()
                else:
                    session.execute(update(PoolCapabilities).where(PoolCapabilities.pool == pool)
                                    .values(reported_at=utcnow(), **values))
            return True
        except IntegrityError:
            if attempt:
                raise
            # Another worker of the pool wrote its first row at the same moment: update that row instead.
    raise AssertionError("unreachable")


class CapabilityReporter:
    """Asks the engine for its capabilities at start and then every ``interval`` seconds, and publishes them
    for ``pool`` when they changed. A failing call (the engine restarting) or database error is logged and
    tried again at the next tick; the thread ends only at :meth:`stop`."""

    def __init__(self, session_factory: sessionmaker[Session], pool: str, engine_name: str, worker_name: str,
                 capabilities: Callable[[], Capabilities], interval: float) -> None:
        self.session_factory = session_factory
        self.pool = pool
        self.engine_name = engine_name
        self.worker_name = worker_name
        self.capabilities = capabilities
        self.interval = interval
        self._published: str | None = None  # digest of what this worker last published (or found stored)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"capabilities-{pool}", daemon=True)

    def start(self) -> CapabilityReporter:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def report_once(self) -> bool:
        """One tick: True when this call wrote the pool's row. Raises what the engine or the database raised."""
        caps = self.capabilities()
        object_info, models = _storable(caps.object_info), _storable(caps.models)
        digest = capabilities_digest(object_info, models)
        if digest == self._published:
            return False
        written = publish_capabilities(self.session_factory, self.pool, self.engine_name, self.worker_name, caps)
        self._published = digest
        if written:
            log.info("reported %d node types and %d model files for pool %s", len(object_info),
                     sum(len(names) for names in models.values() if isinstance(names, list)), self.pool)
        return written

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.report_once()
            except Exception as exc:  # the engine restarting, a database blip: the next tick tries again
                log.warning("could not report capabilities of pool %s (retrying in %g s): %s: %s",
                            self.pool, self.interval, type(exc).__name__, exc)
            self._stop.wait(self.interval)
