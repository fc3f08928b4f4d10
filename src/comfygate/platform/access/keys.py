"""API keys through the API: scopes and limits checked, never wider than their user's rights nor than the
rights of whoever creates them; listing without secrets; revocation. Every creation and revocation is
audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfygate.platform.access.audit import Actor, record
from comfygate.platform.access.build import access_for_key, access_for_user
from comfygate.platform.access.members import user_named
from comfygate.platform.access.projects import check_project_name
from comfygate.platform.access.rights import ACTIONS, Access
from comfygate.platform.errors import Forbidden, NotFound, Unprocessable
from comfygate.platform.limits.policy import MAX_LIMIT_VALUE, is_limit_value
from comfygate.platform.models import ApiKey, Membership, User, utcnow
from comfygate.platform.services import accounts

__all__ = ["check_scopes", "check_limits", "create_key", "list_keys", "revoke_key", "key_to_dict", "LIMIT_NAMES"]

# The per-key overrides of the operator's rate limits and quotas; 0 means no limit.
LIMIT_NAMES = {"requests_per_second": float, "runs_per_minute": int, "concurrent_runs": int, "runs_per_day": int}
_SCOPE_ENTRIES = ("projects", "workflows", "actions")


def _bad(field: str, message: str) -> Unprocessable:
    return Unprocessable(f"{field}: {message}", details={"field": field})


def check_limits(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("limits", f"must be an object with any of {sorted(LIMIT_NAMES)}")
    limits: dict[str, Any] = {}
    for name, value in raw.items():
        kind = LIMIT_NAMES.get(name)
        if kind is None:
            raise _bad(f"limits.{name}", f"unknown limit; known: {sorted(LIMIT_NAMES)}")
        if not is_limit_value(value) or (kind is int and value != int(value)):
            what = "a whole number" if kind is int else "a number"
            raise _bad(f"limits.{name}", f"must be {what} from 0 to {MAX_LIMIT_VALUE} (0: no limit), "
                                         f"got {str(value)[:64]!r}")
        limits[name] = kind(value)
    return limits


def _name_list(raw: Any, field: str, check: Any) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise _bad(field, "must be a non-empty list of names, or null for no narrowing")
    for i, item in enumerate(raw):
        check(item, f"{field}[{i}]")
    return sorted(set(raw))


def _check_action(value: Any, field: str) -> None:
    if value not in ACTIONS:
        raise _bad(field, f"must be one of {list(ACTIONS)}, got {str(value)[:64]!r}")


def _check_workflow_name(value: Any, field: str) -> None:
    from comfygate.platform.services.workflows import WORKFLOW_NAME

    if not isinstance(value, str) or not WORKFLOW_NAME.fullmatch(value):
        raise _bad(field, "must be a workflow name")


def check_scopes(session: Session, raw: Any, owner: Access) -> dict[str, Any] | None:
    """The normalised scopes, each within what ``owner`` (the key's user) may do."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("scopes", 'must be {"projects": [...] | null, "workflows": [...] | null, "actions": [...] | null}')
    unknown = sorted(set(raw) - set(_SCOPE_ENTRIES))
    if unknown:
        raise _bad(f"scopes.{unknown[0]}", f"unknown scope; known: {list(_SCOPE_ENTRIES)}")
    projects = _name_list(raw.get("projects"), "scopes.projects", check_project_name)
    workflows = _name_list(raw.get("workflows"), "scopes.workflows", _check_workflow_name)
    actions = _name_list(raw.get("actions"), "scopes.actions", _check_action)
    ids = {name: pid for pid, name in owner.project_names.items()}
    for i, name in enumerate(projects or ()):
        if name not in ids:
            raise _bad(f"scopes.projects[{i}]", f"no project named {name!r}")
        if not owner.actions_in(ids[name]):
            raise _bad(f"scopes.projects[{i}]", f"the key's user has no role in project {name!r}")
    scoped = [ids[n] for n in projects] if projects is not None else list(owner.projects)
    held = set(owner.everywhere).union(*(owner.actions_in(p) for p in scoped))
    for i, action in enumerate(actions or ()):
        if action not in held:
            raise _bad(f"scopes.actions[{i}]", f"the key's user has no {action!r} right in the projects of the key")
    return {"projects": projects, "workflows": workflows, "actions": actions}


def _within_creator(new: Access, creator: Access, is_admin: bool) -> None:
    """A key may not do more than the caller that creates it (a project admin may give others up to the
    members' own rights in the projects they administer)."""
    if is_admin and not creator.server_admin:
        raise _bad("admin", "only a server admin can create admin keys")
    if creator.server_admin:
        return
    for project_id, actions in new.projects.items():
        mine = creator.actions_in(project_id)
        if "admin" in mine:
            continue
        if not actions <= mine:
            extra = sorted(actions - mine)
            raise _bad("scopes", f"wider than the rights of the caller creating it in project "
                                 f"{new.name_of(project_id)!r} ({extra}); narrow scopes.projects or scopes.actions")
    if new.everywhere - creator.everywhere:
        raise _bad("scopes.projects", "the key would act in every project; name the projects it may use")
    if creator.workflows is not None and (new.workflows is None or not new.workflows <= creator.workflows):
        raise _bad("scopes.workflows", f"must stay within the creating key's workflows {sorted(creator.workflows)}")


def _for_other_user(creator: Access, owner: User | None, scopes: dict[str, Any] | None) -> None:
    """A project admin's key for someone else: bound to named projects they administer, so it does not follow
    the owner's future rights elsewhere; never a server admin's key (that is a server admin's business)."""
    if owner is None or owner.is_admin:
        raise Forbidden("only a server admin can create keys for a server admin", details={"field": "user"})
    projects = (scopes or {}).get("projects")
    if projects is None:
        raise _bad("scopes.projects", "a key for another user must name its projects, among those you administer")
    administered = creator.project_ids_with("admin")
    if administered is not None:
        outside = sorted(set(projects) - {creator.name_of(p) for p in administered})
        if outside:
            raise _bad("scopes.projects", f"you do not administer {outside}; a key for another user must stay "
                                          "within the projects you administer")


def _key_limits(session: Session, creator: Access, raw: Any) -> dict[str, Any] | None:
    """Only a server admin sets limits; otherwise a key made by a limited key keeps the creator's limits, so a
    limited key cannot mint an unlimited one."""
    if raw is not None and not creator.server_admin:
        raise Forbidden("limits: only a server admin can set a key's limits", details={"field": "limits"})
    limits = check_limits(raw)
    if limits is None and creator.api_key_id is not None:
        creating_key = session.get(ApiKey, creator.api_key_id)
        if creating_key is not None and creating_key.limits:
            limits = dict(creating_key.limits)
    return limits


def create_key(session: Session, creator: Access, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/keys``: {name, user?, scopes?, limits?, admin?}; the answer carries the secret, once."""
    unknown = sorted(set(body) - {"name", "user", "scopes", "limits", "admin"})
    if unknown:
        raise _bad(unknown[0], "unknown field; expected name, user, scopes, limits, admin")
    owner: User | None = None
    if body.get("user") is not None:
        if not isinstance(body["user"], str):
            raise _bad("user", "must be a username")
        owner = user_named(session, body["user"])
    elif creator.user_id is not None:
        owner = session.get(User, creator.user_id)
    is_admin = body.get("admin", False)
    if not isinstance(is_admin, bool):
        raise _bad("admin", "must be true or false")
    owner_rights = access_for_user(session, owner) if owner is not None else _operator(session)
    scopes = check_scopes(session, body.get("scopes"), owner_rights)
    limits = _key_limits(session, creator, body.get("limits"))
    if is_admin and (owner is not None and not owner.is_admin):
        raise _bad("admin", f"user {owner.username!r} is not a server admin")
    draft = ApiKey(id=None, name="draft", prefix="", is_admin=is_admin, scopes=scopes,
                   user_id=owner.id if owner is not None else None)
    for_other = (owner.id if owner is not None else None) != creator.user_id
    if for_other and not creator.server_admin:
        _for_other_user(creator, owner, scopes)
    _within_creator(access_for_key(session, draft), creator, is_admin)
    created = accounts.issue_key(session, body.get("name"), user_id=owner.id if owner is not None else None,
                                 is_admin=is_admin, scopes=scopes, limits=limits)
    row = session.get(ApiKey, created.id)
    assert row is not None
    record(session, actor, "key.create", target=f"{created.name} ({created.prefix})",
           details={"user": owner.username if owner is not None else None, "admin": is_admin, "scopes": scopes,
                    "limits": limits})
    return {**key_to_dict(session, row), "secret": created.secret}


def _operator(session: Session) -> Access:
    return access_for_key(session, ApiKey(id=None, name="operator", prefix="", is_admin=True, scopes=None))


def key_to_dict(session: Session, key: ApiKey) -> dict[str, Any]:
    owner = session.get(User, key.user_id) if key.user_id is not None else None
    return {"name": key.name, "prefix": key.prefix, "user": owner.username if owner is not None else None,
            "admin": key.is_admin, "scopes": key.scopes, "limits": key.limits,
            "created_at": key.created_at.isoformat() + "Z",
            "revoked_at": key.revoked_at.isoformat() + "Z" if key.revoked_at else None}


def _manageable(session: Session, access: Access) -> Any:
    """A filter on ApiKey; None: all (a server admin). Others: own keys, and for a project admin the keys of
    members who are not server admins, scoped to named projects that the caller all administers (a key that
    also works elsewhere, or unscoped, is not theirs to see or revoke)."""
    if access.server_admin:
        return None
    own = ApiKey.user_id == access.user_id if access.user_id is not None else ApiKey.user_id.is_(None)
    administered = access.project_ids_with("admin")
    if administered is not None and not administered:
        return own
    others = select(ApiKey).join(User, User.id == ApiKey.user_id).where(User.is_admin.is_(False))
    if administered is not None:
        members = select(Membership.user_id).where(Membership.project_id.in_(sorted(administered)))
        others = others.where(ApiKey.user_id.in_(members))
    names = set(access.project_names.values()) if administered is None else {access.name_of(p) for p in administered}
    # Scopes are JSON, compared here rather than in SQL so that SQLite and PostgreSQL agree.
    ids = [key.id for key in session.scalars(others)
           if (key.scopes or {}).get("projects") is not None and set(key.scopes["projects"]) <= names]
    return own | ApiKey.id.in_(ids)


def list_keys(session: Session, access: Access) -> list[dict[str, Any]]:
    query = select(ApiKey).order_by(ApiKey.id)
    allowed = _manageable(session, access)
    if allowed is not None:
        query = query.where(allowed)
    return [key_to_dict(session, key) for key in session.scalars(query)]


def revoke_key(session: Session, access: Access | None, actor: Actor, prefix: str) -> dict[str, Any]:
    """Revoke by prefix (or the whole key); ``access`` None: the operator. A key the caller may not manage
    is not found."""
    if prefix.startswith("cg_"):
        prefix = prefix.split("_")[1] if prefix.count("_") >= 2 else prefix
    query = select(ApiKey).where(ApiKey.prefix == prefix)
    allowed = _manageable(session, access) if access is not None else None
    if allowed is not None:
        query = query.where(allowed)
    key = session.scalars(query).one_or_none()
    if key is None:
        raise NotFound(f"no API key with prefix {prefix!r}", details={"field": "prefix"})
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        record(session, actor, "key.revoke", target=f"{key.name} ({key.prefix})")
    return key_to_dict(session, key)
