"""Projects: a team's space. The first start (or the first upload) makes one named ``default``."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from comfygate.platform.models import Project

__all__ = ["DEFAULT_PROJECT", "default_project"]

DEFAULT_PROJECT = "default"


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
