"""API key and password hashing.

An API key reads ``cg_<prefix>_<secret>``. The prefix finds the row; only sha256(secret) is stored. A key
carries 256 bits of randomness, so a fast hash is safe for it (and keeps the per-request check cheap);
passwords are human-chosen and get scrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["NewKey", "generate_key", "split_key", "sha256_hex", "hash_password", "verify_password",
           "random_token"]

_KEY_MARK = "cg"


@dataclass(frozen=True)
class NewKey:
    prefix: str
    secret: str

    @property
    def full(self) -> str:
        return f"{_KEY_MARK}_{self.prefix}_{self.secret}"


def generate_key() -> NewKey:
    return NewKey(prefix=secrets.token_hex(6), secret=secrets.token_urlsafe(32))


def split_key(full: str) -> tuple[str, str] | None:
    """(prefix, secret) of a key as a client sends it, or None if it has not the key's shape."""
    parts = full.split("_", 2)
    if len(parts) != 3 or parts[0] != _KEY_MARK or not parts[1] or not parts[2]:
        return None
    # Prefixes are hex (generate_key): anything else names no key, and is never sent to the database.
    if not all(c in "0123456789abcdef" for c in parts[1]):
        return None
    return parts[1], parts[2]


def sha256_hex(value: str) -> str:
    """How high-entropy secrets (API key secrets, session tokens) are stored."""
    # surrogatepass: a token a client garbled (bytes that are not UTF-8 reach us as surrogates) still hashes,
    # to a value no stored one has.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def random_token() -> str:
    return secrets.token_urlsafe(32)


_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)
