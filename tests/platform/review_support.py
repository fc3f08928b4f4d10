"""A review item for tests: a run of the ``blank`` workflow whose one output the gate rejected, recorded as a
worker records it (claim, then finish with a failed output)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from comfygate.comfy_runtime import NodeRegistry
from comfygate.platform.db import session_scope
from comfygate.platform.models import RunStatus
from comfygate.platform.services import review
from comfygate.platform.services import runs as run_service
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.services.uploads import ImageLimits
from comfygate.platform.storage import Storage

__all__ = ["record_rejected_output"]


def record_rejected_output(sessions: sessionmaker[Session], registry: NodeRegistry, storage: Storage,
                           blank_workflow: dict[str, Any], *, storage_key: str = "runs/x/0.png") -> int:
    """The pending review item's output id."""
    with session_scope(sessions) as session:
        version = workflow_service.push_version(session, registry, name="blank", workflow=blank_workflow).version
        run_id = run_service.create_run(session, registry, storage, ImageLimits(1 << 20, 1 << 22), version,
                                        {}, {}, None).id
    with session_scope(sessions) as session:
        run_service.claim_run(session, run_id, 1, "w")
    failed = run_service.OutputRecord(index=0, node_id="2", filename="b.png", storage_key=storage_key,
                                      content_type="image/png", width=8, height=8, size_bytes=1,
                                      verdict={"decision": "reject", "passed": False, "reasons": ["blank: uniform"],
                                               "reason_codes": ["blank"], "scores": {"blank": 0.0}},
                                      decision="reject")
    with session_scope(sessions) as session:
        assert run_service.finish_run(session, run_id, 1, [failed], {}) == RunStatus.REJECTED
    with session_scope(sessions) as session:
        return review.pending_outputs(session)[0].id
