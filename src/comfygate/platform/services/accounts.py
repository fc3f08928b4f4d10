"""Admin accounts, API keys and web sessions."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from comfygate.platform.credentials import (
    generate_key,
    hash_password,
    random_token,
    sha256_hex,
    split_key,
    verify_password,
)
from comfygate.platform.errors import Conflict, NotFound, Unprocessable
from comfygate.platform.models import ApiKey, User, WebSession, utcnow

__all__ = ["CreatedKey", "FirstStart", "create_api_key", "revoke_api_key", "authenticate_key", "bootstrap_admin",
           "create_user", "login", "session_user", "logout", "SESSION_LIFETIME"]

SESSION_LIFETIME = timedelta(hours=12)
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class CreatedKey:
    id: int
    name: str
    is_admin: bool
    secret: str  # shown once, never stored


@dataclass(frozen=True)
class FirstStart:
    username: str
    password: str
    key: CreatedKey


def create_api_key(session: Session, name: str, *, is_admin: bool = False) -> CreatedKey:
    name = name.strip()
    if not name or len(name) > 128:
        raise Unprocessable("key name must be 1 to 128 characters", details={"field": "name"})
    new = generate_key()
    row = ApiKey(name=name, prefix=new.prefix, secret_hash=sha256_hex(new.secret), is_admin=is_admin)
    session.add(row)
    session.flush()
    return CreatedKey(id=row.id, name=name, is_admin=is_admin, secret=new.full)


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
    """On the very first start: an admin account and an admin API key, returned so they can be shown once."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    password = secrets.token_urlsafe(12)
    create_user(session, "admin", password, is_admin=True)
    key = create_api_key(session, "first admin key", is_admin=True)
    return FirstStart(username="admin", password=password, key=key)


def login(session: Session, username: str, password: str) -> tuple[str, WebSession] | None:
    """A new session token (for the cookie) and its row, or None for a wrong name or password."""
    if "\x00" in username or "\x00" in password:  # PostgreSQL text cannot hold NUL: no user has one
        return None
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    # An unknown name costs the same scrypt as a known one, so timing does not tell names apart.
    stored = user.password_hash if user is not None else _DUMMY_HASH
    if not verify_password(password, stored) or user is None:
        return None
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
