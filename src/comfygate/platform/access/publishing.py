"""Who may publish where: the project of an upload, the right to publish there, and the audit entries of a
publish (and of the policy change it may carry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfygate.platform.access.audit import Actor, record
from comfygate.platform.access.projects import DEFAULT_PROJECT, check_project_name, default_project
from comfygate.platform.access.rights import Access
from comfygate.platform.errors import Conflict, Forbidden, NotFound, Unprocessable
from comfygate.platform.models import Project, Workflow, WorkflowVersion

__all__ = ["PublishTarget", "publish_target", "audit_publish", "audit_policy_change"]


@dataclass(frozen=True)
class PublishTarget:
    project_id: int
    previous_policy: dict[str, Any] | None  # the latest version's, to tell whether an upload changes it


def _latest_policy(session: Session, workflow_id: int) -> dict[str, Any] | None:
    return session.scalars(select(WorkflowVersion.policy).where(WorkflowVersion.workflow_id == workflow_id)
                           .order_by(WorkflowVersion.number.desc()).limit(1)).first()


def _new_workflow_project(session: Session, access: Access, requested: Any) -> int:
    if requested is not None:
        name = check_project_name(requested, "project")
        project = session.scalars(select(Project).where(Project.name == name)).one_or_none()
        if project is None or not access.actions_in(project.id):
            raise NotFound(f"no project named {name!r}", details={"field": "project"})
        access.require("publish", project.id)
        return project.id
    allowed = access.project_ids_with("publish")
    if allowed is not None and len(allowed) == 1:
        return next(iter(allowed))
    default_id = session.scalars(select(Project.id).where(Project.name == DEFAULT_PROJECT)).first()
    if default_id is not None and access.can("publish", default_id):
        return default_id
    if allowed is None and default_id is None:  # a server admin before the default project exists
        return default_project(session).id
    choices = sorted(access.name_of(p) for p in allowed or ())
    raise Unprocessable(f"'project' is required: the project to publish the new workflow in (one of {choices})"
                        if choices else "this caller may not publish workflows in any project",
                        details={"field": "project", "choices": choices})


def publish_target(session: Session, access: Access, name: Any, requested_project: Any) -> PublishTarget:
    """Where an upload of workflow ``name`` goes, once the caller may publish there: an existing workflow
    stays in its project; a new one goes to ``requested_project`` or the caller's only (else the default)
    project. A name taken in a project the caller cannot see is a conflict that does not name it."""
    existing = session.scalars(select(Workflow).where(Workflow.name == name)).one_or_none() \
        if isinstance(name, str) else None
    if existing is None:
        if isinstance(name, str) and not access.covers_workflow(name):
            raise Forbidden(f"workflow {name!r} is outside this key's workflow scope",
                            details={"action": "publish", "field": "name"})
        return PublishTarget(_new_workflow_project(session, access, requested_project), None)
    if not access.sees_workflow(existing.project_id, existing.name):
        raise Conflict(f"workflow name taken: {name!r} belongs to a project you cannot see; choose another name",
                       details={"field": "name"})
    if requested_project is not None and requested_project != access.name_of(existing.project_id):
        raise Unprocessable(f"workflow {name!r} belongs to project {access.name_of(existing.project_id)!r}; "
                            "a workflow stays in its project", details={"field": "project"})
    access.require("publish", existing.project_id, existing.name)
    return PublishTarget(existing.project_id, _latest_policy(session, existing.id))


def audit_publish(session: Session, actor: Actor, target: PublishTarget, version: WorkflowVersion) -> None:
    """A new version was stored: record the publish, and the policy change when its policy differs from the
    version that was latest before it."""
    where = f"{version.workflow.name} v{version.number}"
    record(session, actor, "workflow.publish", project_id=target.project_id, target=where,
           details={"workflow": version.workflow.name, "version": version.number, "pool": version.pool})
    if target.previous_policy is not None and target.previous_policy != version.policy:
        audit_policy_change(session, actor, target.project_id, version, target.previous_policy, "upload")


def audit_policy_change(session: Session, actor: Actor, project_id: int, version: WorkflowVersion,
                        before: dict[str, Any], how: str) -> None:
    record(session, actor, "policy.change", project_id=project_id,
           target=f"{version.workflow.name} v{version.number}",
           details={"workflow": version.workflow.name, "version": version.number, "by": how, "before": before,
                    "after": version.policy, "revision": version.policy_revision})
