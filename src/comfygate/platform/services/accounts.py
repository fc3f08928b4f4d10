"""Accounts, API keys and web sessions: the rows. Who may create or change them is decided by the callers
(``platform.access.manage`` for the API, the command line for the operator)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from comfygate.platform.access.audit import Actor, record
from comfygate.platform.access.projects import default_project
from comfygate.platform.credentials import (
    generate_key,
    hash_password,
    random_token,
    sha256_hex,
    split_key,
    verify_password,
)
from comfygate.platform.errors import Conflict, NotFound, Unprocessable
from comfygate.platform.models import ApiKey, Membership, User, WebSession, utcnow

__all__ = ["CreatedKey", "FirstStart", "create_api_key", "issue_key", "revoke_api_key", "authenticate_key",
           "bootstrap_admin", "create_user", "first_server_admin", "login", "session_user", "logout",
           "SESSION_LIFETIME", "PLAIN_KEY_SCOPES"]

SESSION_LIFETIME = timedelta(hours=12)
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class CreatedKey:
    id: int
    name: str
    is_admin: bool
    secret: str  # shown once, never stored
    prefix: str = ""


@dataclass(frozen=True)
class FirstStart:
    username: str
    password: str
    key: CreatedKey


# What a key made without scopes and without --admin may do (as before projects existed): run, read, publish.
PLAIN_KEY_SCOPES: dict[str, Any] = {"projects": None, "workflows": None, "actions": ["run", "read", "publish"]}


def first_server_admin(session: Session) -> User | None:
    return session.scalars(select(User).where(User.is_admin).order_by(User.id).limit(1)).first()


def issue_key(session: Session, name: str, *, user_id: int | None, is_admin: bool = False,
              scopes: dict[str, Any] | None = None, limits: dict[str, Any] | None = None) -> CreatedKey:
    """Store a new key (already checked against its creator's rights) and return its secret, shown once."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 128:
        raise Unprocessable("key name must be 1 to 128 characters", details={"field": "name"})
    new = generate_key()
    row = ApiKey(name=name, prefix=new.prefix, secret_hash=sha256_hex(new.secret), is_admin=is_admin,
                 user_id=user_id, scopes=scopes, limits=limits)
    session.add(row)
    session.flush()
    return CreatedKey(id=row.id, name=name, is_admin=is_admin, secret=new.full, prefix=new.prefix)


def create_api_key(session: Session, name: str, *, is_admin: bool = False) -> CreatedKey:
    """A key for the operator's scripts, owned by the first server admin (none yet: by the operator): an
    admin key is unscoped, another may run, read and publish in every project."""
    owner = first_server_admin(session)
    return issue_key(session, name, user_id=owner.id if owner is not None else None, is_admin=is_admin,
                     scopes=None if is_admin else dict(PLAIN_KEY_SCOPES))


def revoke_api_key(session: Session, prefix: str) -> ApiKey:
    """Revoke by the key's public prefix (the part between ``cg_`` and the next ``_``)."""
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    if row is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def authenticate_key(session: Session, presented: str) -> ApiKey | None:
    parts = split_key(presented)
    if parts is None:
        return None
    prefix, secret = parts
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, sha256_hex(secret)):
        return None
    return row


def create_user(session: Session, username: str, password: str, *, is_admin: bool = True) -> User:
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise Conflict(f"user {username!r} exists already")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def bootstrap_admin(session: Session) -> FirstStart | None:
    """On the very first start: an admin account (admin of the default project) and an admin API key,
    returned so they can be shown once."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    password = secrets.token_urlsafe(12)
    user = create_user(session, "admin", password, is_admin=True)
    session.add(Membership(user_id=user.id, project_id=default_project(session).id, role="admin"))
    key = issue_key(session, "first admin key", user_id=user.id, is_admin=True)
    return FirstStart(username="admin", password=password, key=key)


def _storable(text: str, limit: int = 128) -> str:
    """``text`` as both databases can store it (NUL and lone surrogates escaped), for the audit log."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


def login(session: Session, username: str, password: str, address: str | None = None
          ) -> tuple[str, WebSession] | None:
    """A new session token (for the cookie) and its row, or None for a wrong name or password. Both are
    written to the audit log with the name tried and the client's address."""
    user = None
    if "\x00" not in username and "\x00" not in password:  # PostgreSQL text cannot hold NUL: no user has one
        user = session.scalars(select(User).where(User.username == username)).one_or_none()
    # An unknown name costs the same scrypt as a known one, so timing does not tell names apart.
    stored = user.password_hash if user is not None else _DUMMY_HASH
    if not verify_password(password, stored) or user is None:
        record(session, Actor("anonymous", address=address), "login.failure", target=_storable(username),
               details={"username": _storable(username)})
        return None
    record(session, Actor(f"user:{user.username}", user.id, None, address), "login.success",
           target=user.username, details={"username": user.username})
    session.execute(delete(WebSession).where(WebSession.expires_at < utcnow()))
    token = random_token()
    row = WebSession(token_hash=sha256_hex(token), user_id=user.id, csrf_token=random_token(),
                     expires_at=utcnow() + SESSION_LIFETIME)
    session.add(row)
    session.flush()
    return token, row


def session_user(session: Session, token: str) -> WebSession | None:
    row = session.get(WebSession, sha256_hex(token))
    if row is None or row.expires_at < utcnow():
        return None
    return row


def logout(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == sha256_hex(token)))
