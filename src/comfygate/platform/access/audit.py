"""The audit log: who (actor, user, key) did what (action, target, details), when, from where.

``record`` adds the entry to the caller's session, so it commits (or rolls back) with the change it records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfygate.platform.access.rights import Access
from comfygate.platform.errors import NotFound, Unprocessable
from comfygate.platform.models import AuditEntry, Project

__all__ = ["Actor", "CLI", "record", "list_entries", "MAX_LIMIT", "DEFAULT_LIMIT"]

MAX_LIMIT = 500
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class Actor:
    name: str  # "user:alice", "key:ci (3f2a9c01d4e5)", "cli", "anonymous"
    user_id: int | None = None
    api_key_id: int | None = None
    address: str | None = None  # the client's address; None for the command line

    @classmethod
    def of(cls, access: Access, address: str | None) -> Actor:
        return cls(access.actor, access.user_id, access.api_key_id, address)


# Commands run on the server's machine by the operator.
CLI = Actor("cli")


def record(session: Session, actor: Actor, action: str, *, project_id: int | None = None,
           target: str | None = None, details: dict[str, Any] | None = None) -> None:
    session.add(AuditEntry(actor=actor.name[:160], user_id=actor.user_id, api_key_id=actor.api_key_id,
                           action=action, project_id=project_id, target=None if target is None else target[:255],
                           details=details, address=actor.address))


def _entry_to_dict(entry: AuditEntry, names: dict[int, str]) -> dict[str, Any]:
    return {"id": entry.id, "at": entry.created_at.isoformat() + "Z", "actor": entry.actor,
            "user_id": entry.user_id, "api_key_id": entry.api_key_id, "action": entry.action,
            "project": names.get(entry.project_id) if entry.project_id is not None else None,
            "target": entry.target, "details": entry.details, "address": entry.address}


def list_entries(session: Session, access: Access, *, action: str | None = None, project: str | None = None,
                 limit: int = DEFAULT_LIMIT, before: int | None = None) -> list[dict[str, Any]]:
    """Newest first. Server admins read every entry; project admins those of the projects they administer
    (entries about no project, like logins, are the server admins')."""
    if not 1 <= limit <= MAX_LIMIT:
        raise Unprocessable(f"limit must be 1 to {MAX_LIMIT}, got {limit}", details={"field": "limit"})
    names = dict(session.execute(select(Project.id, Project.name)).all())
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    admin_of = access.project_ids_with("admin")
    if not access.server_admin:
        query = query.where(AuditEntry.project_id.is_not(None) if admin_of is None
                            else AuditEntry.project_id.in_(sorted(admin_of)))
    if project is not None:
        project_id = next((i for i, n in names.items() if n == project), None)
        if project_id is None or not (access.server_admin or admin_of is None or project_id in admin_of):
            raise NotFound(f"no project named {project!r}", details={"field": "project"})
        query = query.where(AuditEntry.project_id == project_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    return [_entry_to_dict(entry, names) for entry in session.scalars(query)]
