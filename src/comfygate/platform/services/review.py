"""The review queue: outputs the sentinel withheld, and the decisions people make about them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from comfygate.platform.errors import Conflict, NotFound, Unprocessable
from comfygate.platform.models import ReviewDecision, Run, RunOutput, RunStatus
from comfygate.platform.services.runs import output_url

__all__ = ["pending_outputs", "review_item", "get_output", "decide", "DECISIONS"]

DECISIONS = ("approve", "reject")


def pending_outputs(session: Session, limit: int = 100) -> list[RunOutput]:
    return list(session.scalars(
        select(RunOutput).where(RunOutput.review_state == "pending")
        .options(joinedload(RunOutput.run).joinedload(Run.version))
        .order_by(RunOutput.created_at, RunOutput.id).limit(limit)
    ))


def review_item(output: RunOutput) -> dict[str, Any]:
    run = output.run
    return {
        "output_id": output.id,
        "run_id": run.id,
        "index": output.index,
        "workflow": run.version.workflow.name,
        "version": run.version.number,
        "graph": run.version.graph,
        "inputs": run.inputs,
        "verdict": output.verdict,
        "reasons": output.verdict.get("reasons", []),
        "scores": output.verdict.get("scores", {}),
        "image_url": f"/v1/review/{output.id}/image",
        "output_url": output_url(run.id, output.index),
        "created_at": output.created_at.isoformat() + "Z",
    }


def get_output(session: Session, output_id: int) -> RunOutput:
    """Any output, withheld or not: reviewers see what the gate held back."""
    output = session.get(RunOutput, output_id)
    if output is None:
        raise NotFound(f"no output with id {output_id}")
    return output


def decide(session: Session, output_id: int, decision: Any, decided_by: str, note: str | None = None
           ) -> RunOutput:
    if decision not in DECISIONS:
        raise Unprocessable(f"decision must be one of {list(DECISIONS)}, got {decision!r}",
                            details={"field": "decision"})
    output = get_output(session, output_id)
    # Conditional update: two reviewers clicking at once cannot both decide.
    state = "approved" if decision == "approve" else "rejected"
    changed = session.execute(
        update(RunOutput).where(RunOutput.id == output_id, RunOutput.review_state == "pending")
        .values(review_state=state, released=decision == "approve")
    ).rowcount
    if not changed:
        raise Conflict(f"output {output_id} is not waiting for review (state: {output.review_state})")
    session.add(ReviewDecision(output_id=output_id, decision=decision, decided_by=decided_by, note=note))
    session.flush()
    # Lock the run row, then read its outputs afresh: two reviewers approving the last two withheld outputs
    # of one run at once are serialised here, and the second one sees the first one's release.
    session.execute(select(Run.id).where(Run.id == output.run_id).with_for_update())
    released = session.scalars(select(RunOutput.released).where(RunOutput.run_id == output.run_id)).all()
    if decision == "approve" and all(released):
        session.execute(update(Run).where(Run.id == output.run_id, Run.status == RunStatus.REJECTED)
                        .values(status=RunStatus.SUCCEEDED))
    session.refresh(output)
    session.refresh(output.run)
    return output
