"""``Access`` from the database: a key's (its user's roles narrowed by its scopes) or a web session's user's.

A key without a user (made by ``create_api_key`` before any account existed) acts for the operator who made
it on the server's command line: a server admin, narrowed by its scopes like any key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfygate.platform.access.rights import ACTIONS, ROLE_ACTIONS, Access
from comfygate.platform.models import ApiKey, Membership, Project, User

__all__ = ["access_for_key", "access_for_user", "key_actor"]

_ALL = frozenset(ACTIONS)


def key_actor(key: ApiKey) -> str:
    return f"key:{key.name} ({key.prefix})"


def _names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Project.id, Project.name)).all())


def _memberships(session: Session, user_id: int) -> dict[int, str]:
    rows = session.execute(select(Membership.project_id, Membership.role).where(Membership.user_id == user_id))
    return dict(rows.all())


def _scope_list(scopes: dict[str, Any] | None, entry: str) -> frozenset[str] | None:
    value = (scopes or {}).get(entry)
    return None if value is None else frozenset(str(v) for v in value)


def _compute(session: Session, *, actor: str, user: User | None, key: ApiKey | None,
             own_key_ids: Iterable[int]) -> Access:
    names = _names(session)
    roles = _memberships(session, user.id) if user is not None else {}
    owner_is_admin = user is None or user.is_admin
    scopes = key.scopes if key is not None else None
    scope_projects = _scope_list(scopes, "projects")
    scope_actions = _scope_list(scopes, "actions")
    allowed = _ALL if scope_actions is None else _ALL & scope_actions

    def in_scope(project_id: int) -> bool:
        return scope_projects is None or names.get(project_id) in scope_projects

    if owner_is_admin:
        base = {project_id: _ALL for project_id in names}
        everywhere = allowed if scope_projects is None else frozenset()
    else:
        base = {project_id: ROLE_ACTIONS.get(role, frozenset()) for project_id, role in roles.items()}
        everywhere = frozenset()
    projects = {p: actions & allowed for p, actions in base.items() if in_scope(p) and actions & allowed}
    own_only = frozenset(p for p, role in roles.items() if role == "caller" and not owner_is_admin)
    # A key's admin flag lets it use its user's server-wide rights; a web session always has them.
    server_admin = owner_is_admin and (key is None or key.is_admin) and scopes is None
    return Access(actor=actor, user_id=user.id if user is not None else None,
                  username=user.username if user is not None else None, server_admin=server_admin,
                  projects=projects, project_names=names, roles=roles, everywhere=everywhere,
                  own_runs_only=own_only, own_key_ids=frozenset(own_key_ids),
                  workflows=_scope_list(scopes, "workflows"), api_key_id=key.id if key is not None else None,
                  scopes=scopes)


def access_for_key(session: Session, key: ApiKey) -> Access:
    user = session.get(User, key.user_id) if key.user_id is not None else None
    return _compute(session, actor=key_actor(key), user=user, key=key, own_key_ids=[key.id])


def access_for_user(session: Session, user: User) -> Access:
    """A logged-in user's rights (web session): the roles, unnarrowed; own runs are those of all their keys."""
    key_ids = session.scalars(select(ApiKey.id).where(ApiKey.user_id == user.id)).all()
    return _compute(session, actor=f"user:{user.username}", user=user, key=None, own_key_ids=key_ids)
