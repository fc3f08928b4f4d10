"""What a caller may do: actions, the roles that grant them, and ``Access``, the rights of one key or web
session computed once per request (or per key-cache entry) from its user's memberships and the key's scopes.

Pure: no database here (``access.build`` reads the rows), so every rule can be read in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfygate.platform.errors import Forbidden, NotFound

__all__ = ["ACTIONS", "ROLES", "ROLE_ACTIONS", "Access", "run_not_found"]

# run: start and cancel runs; read: runs, outputs, webhook deliveries; publish: upload versions, edit
# policies; review: the review queue, decisions, calibration; admin: members, others' keys, the audit log.
ACTIONS = ("run", "read", "publish", "review", "admin")
ROLE_ACTIONS: Mapping[str, frozenset[str]] = {
    "admin": frozenset(ACTIONS),
    "developer": frozenset({"run", "read", "publish"}),
    "reviewer": frozenset({"read", "review"}),
    # A caller's read covers only the runs of its own key(s): see Access.own_runs_only.
    "caller": frozenset({"run", "read"}),
}
ROLES = tuple(ROLE_ACTIONS)


def run_not_found(run_id: str) -> NotFound:
    """The answer for a run that does not exist and for one the caller may not see: the same, so ids of
    other projects' runs cannot be probed."""
    return NotFound(f"no run with id {run_id!r}")


@dataclass(frozen=True)
class Access:
    """The rights of one caller. ``projects`` maps project ids to the actions there (the user's role
    narrowed by the key's scopes); ``everywhere`` are the actions in projects not listed (a server admin's
    unscoped key also acts in projects made after this was computed)."""

    actor: str  # for the audit log: "user:alice", "key:ci (3f2a9c01d4e5)"
    user_id: int | None
    username: str | None
    server_admin: bool  # may manage projects, users and node packs, and sees the whole audit log
    projects: Mapping[int, frozenset[str]]
    project_names: Mapping[int, str]
    roles: Mapping[int, str] = field(default_factory=dict)  # the user's own role per project (for /v1/me)
    everywhere: frozenset[str] = frozenset()
    own_runs_only: frozenset[int] = frozenset()  # projects where read covers only the runs of own_key_ids
    own_key_ids: frozenset[int] = frozenset()
    workflows: frozenset[str] | None = None  # the key's workflow scope; None: every workflow
    api_key_id: int | None = None
    scopes: Mapping[str, Any] | None = None  # the key's scopes as stored (shown by /v1/me)

    # --- questions ------------------------------------------------------------------------------------

    def actions_in(self, project_id: int) -> frozenset[str]:
        return self.projects.get(project_id, self.everywhere)

    def can(self, action: str, project_id: int, workflow: str | None = None) -> bool:
        return action in self.actions_in(project_id) and self.covers_workflow(workflow)

    def covers_workflow(self, workflow: str | None) -> bool:
        return workflow is None or self.workflows is None or workflow in self.workflows

    def sees_workflow(self, project_id: int, workflow: str) -> bool:
        """Any role in the project (and the workflow in the key's scope) makes its workflows visible."""
        return bool(self.actions_in(project_id)) and self.covers_workflow(workflow)

    def sees_run(self, project_id: int, workflow: str, api_key_id: int | None) -> bool:
        if not self.can("read", project_id, workflow):
            return False
        return project_id not in self.own_runs_only or (api_key_id is not None and api_key_id in self.own_key_ids)

    def project_ids_with(self, action: str) -> frozenset[int] | None:
        """The projects where ``action`` is allowed, for filtering lists; None: every project."""
        if action in self.everywhere:
            return None
        return frozenset(p for p, actions in self.projects.items() if action in actions)

    def name_of(self, project_id: int) -> str:
        return self.project_names.get(project_id, str(project_id))

    # --- checks that raise ------------------------------------------------------------------------------

    def require(self, action: str, project_id: int, workflow: str | None = None) -> None:
        """403 naming the missing action and project (for a thing the caller can see)."""
        if not self.can(action, project_id, workflow):
            where = f"project {self.name_of(project_id)!r}"
            if workflow is not None and not self.covers_workflow(workflow):
                where += f" (workflow {workflow!r} is outside this key's scope)"
            raise Forbidden(f"this needs the {action!r} right in {where}",
                            details={"action": action, "project": self.name_of(project_id)})

    def require_server_admin(self) -> None:
        if not self.server_admin:
            raise Forbidden("this needs a server admin (an admin user's unscoped admin key or web session)",
                            details={"action": "admin", "project": None})

    def require_workflow_visible(self, project_id: int, workflow: str) -> None:
        if not self.sees_workflow(project_id, workflow):
            raise NotFound(f"no workflow named {workflow!r}")

    def require_run_visible(self, run_id: str, project_id: int, workflow: str, api_key_id: int | None) -> None:
        if not self.sees_run(project_id, workflow, api_key_id):
            raise run_not_found(run_id)
