"""Projects: a team's space. The first start (or the first upload) makes one named ``default``."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from comfygate.platform.access.audit import Actor, record
from comfygate.platform.errors import Conflict, NotFound, Unprocessable
from comfygate.platform.models import Project

__all__ = ["DEFAULT_PROJECT", "PROJECT_NAME", "default_project", "check_project_name", "create_project",
           "project_named", "project_to_dict"]

DEFAULT_PROJECT = "default"
# Like workflow names, within the column's 64 characters.
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def default_project(session: Session) -> Project:
    """The ``default`` project, made when it does not exist yet."""
    project = session.scalars(select(Project).where(Project.name == DEFAULT_PROJECT)).one_or_none()
    if project is not None:
        return project
    try:
        with session.begin_nested():
            project = Project(name=DEFAULT_PROJECT)
            session.add(project)
    except IntegrityError:  # another process made it at the same moment
        project = session.scalars(select(Project).where(Project.name == DEFAULT_PROJECT)).one()
    return project


def check_project_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not PROJECT_NAME.fullmatch(name):
        raise Unprocessable(f"{field} must be a project name: 1-64 characters of a-z, 0-9, '.', '_', '-', "
                            f"starting with a letter or digit; got {str(name)[:70]!r}", details={"field": field})
    return name


def project_named(session: Session, name: str, field: str = "project") -> Project:
    project = session.scalars(select(Project).where(Project.name == name)).one_or_none()
    if project is None:
        raise NotFound(f"no project named {name!r}", details={"field": field})
    return project


def create_project(session: Session, name: Any, actor: Actor) -> Project:
    name = check_project_name(name)
    if session.scalars(select(Project.id).where(Project.name == name)).first() is not None:
        raise Conflict(f"project {name!r} exists already", details={"field": "name"})
    project = Project(name=name)
    try:
        with session.begin_nested():
            session.add(project)
    except IntegrityError as exc:  # made by another request between our look and our insert
        raise Conflict(f"project {name!r} exists already", details={"field": "name"}) from exc
    record(session, actor, "project.create", project_id=project.id, target=name)
    return project


def project_to_dict(project: Project) -> dict[str, Any]:
    return {"project": project.name, "created_at": project.created_at.isoformat() + "Z"}
