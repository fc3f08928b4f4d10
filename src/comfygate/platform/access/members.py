"""Users and their roles in projects. Callers decide who may change them (server admins for users, project
admins for their projects' members, the operator on the command line); every change is audited."""

from __future__ import annotations

import re
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfygate.platform.access.audit import Actor, record
from comfygate.platform.access.projects import project_named
from comfygate.platform.access.rights import ROLES
from comfygate.platform.errors import Conflict, NotFound, Unprocessable
from comfygate.platform.models import Membership, Project, User
from comfygate.platform.services.accounts import create_user

__all__ = ["add_user", "list_users", "user_named", "user_to_dict", "set_role", "remove_role", "check_role",
           "MIN_PASSWORD_LENGTH"]

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def check_role(role: Any, field: str = "role") -> str:
    if role not in ROLES:
        raise Unprocessable(f"{field} must be one of {list(ROLES)}, got {str(role)[:64]!r}", details={"field": field})
    return str(role)


def user_named(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        raise NotFound(f"no user named {username!r}", details={"field": "username"})
    return user


def _roles_of(session: Session, user_id: int) -> dict[str, str]:
    rows = session.execute(select(Project.name, Membership.role).join(Project, Project.id == Membership.project_id)
                           .where(Membership.user_id == user_id).order_by(Project.name))
    return dict(rows.all())


def user_to_dict(session: Session, user: User) -> dict[str, Any]:
    return {"username": user.username, "admin": user.is_admin, "projects": _roles_of(session, user.id),
            "created_at": user.created_at.isoformat() + "Z"}


def list_users(session: Session) -> list[dict[str, Any]]:
    return [user_to_dict(session, u) for u in session.scalars(select(User).order_by(User.username))]


def _check_roles(session: Session, projects: Any) -> list[tuple[Project, str]]:
    if projects is None:
        return []
    if not isinstance(projects, dict):
        raise Unprocessable("projects must be an object mapping project names to roles", details={"field": "projects"})
    wanted = []
    for name, role in projects.items():
        field = f"projects.{name}"
        role = check_role(role, field)
        project = session.scalars(select(Project).where(Project.name == name)).one_or_none()
        if project is None:
            raise Unprocessable(f"no project named {name!r}", details={"field": field})
        wanted.append((project, role))
    return wanted


def add_user(session: Session, actor: Actor, username: Any, password: Any = None, *, admin: Any = False,
             projects: Any = None) -> tuple[User, str | None]:
    """A new user with roles in projects; the generated password (when none was given) is returned to be
    shown once."""
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise Unprocessable("username must be 1-64 characters of letters, digits, '.', '_', '@', '-', starting "
                            "with a letter or digit", details={"field": "username"})
    if not isinstance(admin, bool):
        raise Unprocessable("admin must be true or false", details={"field": "admin"})
    generated = None
    if password is None:
        password = generated = secrets.token_urlsafe(12)
    if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise Unprocessable(f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
                            details={"field": "password"})
    roles = _check_roles(session, projects)
    if session.scalars(select(User.id).where(User.username == username)).first() is not None:
        raise Conflict(f"user {username!r} exists already", details={"field": "username"})
    user = create_user(session, username, password, is_admin=admin)
    record(session, actor, "user.create", target=username, details={"admin": admin})
    for project, role in roles:
        _write_role(session, actor, project, user, role)
    return user, generated


def _write_role(session: Session, actor: Actor, project: Project, user: User, role: str) -> None:
    membership = session.get(Membership, (user.id, project.id))
    before = membership.role if membership is not None else None
    if membership is None:
        session.add(Membership(user_id=user.id, project_id=project.id, role=role))
    else:
        membership.role = role
    session.flush()
    record(session, actor, "membership.set", project_id=project.id, target=user.username,
           details={"role": role, "before": before})


def set_role(session: Session, actor: Actor, project_name: str, username: str, role: Any) -> dict[str, Any]:
    role = check_role(role)
    project = project_named(session, project_name)
    user = user_named(session, username)
    _write_role(session, actor, project, user, role)
    return {"project": project.name, "username": user.username, "role": role}


def remove_role(session: Session, actor: Actor, project_name: str, username: str) -> dict[str, Any]:
    project = project_named(session, project_name)
    user = user_named(session, username)
    membership = session.get(Membership, (user.id, project.id))
    if membership is None:
        raise NotFound(f"user {username!r} has no role in project {project.name!r}", details={"field": "username"})
    before = membership.role
    session.delete(membership)
    record(session, actor, "membership.remove", project_id=project.id, target=user.username,
           details={"before": before})
    return {"project": project.name, "username": user.username, "role": None}
