"""The review queue: outputs the sentinel withheld or held, passing outputs sampled for audit, and the
decisions people make about them (every one kept as a label for calibration).

Deciding on a withheld output releases it (approve) or keeps it withheld (reject). Once a run has no
withheld output left waiting, it takes its final status (succeeded when every output is released, else
rejected) and its held-back webhook is queued as ``run.reviewed``, in the decision's transaction. A sampled
output was released by the gate already: a decision on it is recorded as a label and changes nothing else.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from comfygate.platform.errors import Conflict, NotFound, Unprocessable
from comfygate.platform.models import ReviewDecision, Run, RunOutput, RunStatus, Workflow, WorkflowVersion
from comfygate.platform.services import webhooks
from comfygate.platform.services.runs import announce, gate_summary, output_url

__all__ = ["pending_outputs", "review_item", "get_output", "decide", "DECISIONS"]

DECISIONS = ("approve", "reject")


def pending_outputs(session: Session, limit: int = 100, project_ids: Collection[int] | None = None,
                    workflows: Collection[str] | None = None) -> list[RunOutput]:
    """Outputs waiting for review; only those of ``project_ids`` and ``workflows`` when given (what a
    reviewer may see)."""
    query = (select(RunOutput).where(RunOutput.review_state == "pending")
             .options(joinedload(RunOutput.run).joinedload(Run.version)))
    if project_ids is not None or workflows is not None:
        query = query.join(Run, Run.id == RunOutput.run_id)
    if project_ids is not None:
        query = query.where(Run.project_id.in_(sorted(project_ids)))
    if workflows is not None:
        query = (query.join(WorkflowVersion, WorkflowVersion.id == Run.version_id)
                 .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
                 .where(Workflow.name.in_(sorted(workflows))))
    # Withheld outputs first: audit samples are already released and must not crowd them out.
    return list(session.scalars(query.order_by(RunOutput.sampled, RunOutput.created_at, RunOutput.id).limit(limit)))


def review_item(output: RunOutput) -> dict[str, Any]:
    run = output.run
    verdict = output.verdict
    gate = gate_summary(run)
    return {
        "output_id": output.id,
        "run_id": run.id,
        "index": output.index,
        "workflow": run.version.workflow.name,
        "version": run.version.number,
        "graph": run.version.graph,
        "inputs": run.inputs,
        "verdict": verdict,
        "decision": verdict.get("decision"),
        "reason_codes": verdict.get("reason_codes", []),
        "reasons": verdict.get("reasons", []),
        "flags": verdict.get("flags", []),
        "scores": verdict.get("scores", {}),
        "sampled": output.sampled,
        "released": output.released,
        "run_status": run.status,
        "gate_attempt": output.gate_attempt,
        "attempts": gate["attempts"] if gate else [],
        "retry_stopped": gate["retry_stopped"] if gate else None,
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
    # Conditional update: two reviewers clicking at once cannot both decide. A sampled output is released
    # already and stays so: the decision on it is a label only.
    state = "approved" if decision == "approve" else "rejected"
    values: dict[str, Any] = {"review_state": state}
    if not output.sampled:
        values["released"] = decision == "approve"
    changed = session.execute(
        update(RunOutput).where(RunOutput.id == output_id, RunOutput.review_state == "pending").values(**values)
    ).rowcount
    if not changed:
        raise Conflict(f"output {output_id} is not waiting for review (state: {output.review_state})")
    session.add(ReviewDecision(output_id=output_id, decision=decision, decided_by=decided_by, note=note))
    session.flush()
    if not output.sampled:
        _settle_run(session, output.run_id)
    session.refresh(output)
    session.refresh(output.run)
    return output


def _settle_run(session: Session, run_id: str) -> None:
    """Give the run its final status and queue its webhook once no withheld output waits for review."""
    # Lock the run row, then read its outputs afresh: two reviewers deciding the last two withheld outputs
    # of one run at once are serialised here, and the second one sees the first one's decision.
    session.execute(select(Run.id).where(Run.id == run_id).with_for_update())
    outputs = session.execute(select(RunOutput.released, RunOutput.review_state, RunOutput.sampled)
                              .where(RunOutput.run_id == run_id)).all()
    if any(state == "pending" and not sampled for _, state, sampled in outputs):
        return
    final = RunStatus.SUCCEEDED if all(released for released, _, _ in outputs) else RunStatus.REJECTED
    settled = session.execute(
        update(Run).where(Run.id == run_id, Run.status.in_([RunStatus.REJECTED, RunStatus.HELD]))
        .values(status=final)
    ).rowcount
    if settled:
        announce(session, run_id, webhooks.EVENT_REVIEWED)
