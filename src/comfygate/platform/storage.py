"""Blob storage for run outputs and uploaded inputs: a local folder or an S3 bucket.

Both backends take the same keys: relative, '/'-separated paths whose segments use only ``[A-Za-z0-9._-]``
(no empty, ``.`` or ``..`` segment). Keys are checked by ``validate_key`` before any I/O, so a name that came
from a user never reaches the filesystem or the bucket unchecked.

Exceptions (re-parented under the platform's exception tree later)::

    StorageError
    ├── InvalidStorageKey (also ValueError)   a key breaks the rules above
    ├── StoredObjectMissing                   get() of a key that holds nothing
    └── StorageConfigError                    COMFYGATE_STORAGE_URL cannot be used
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import boto3
import botocore.config
import botocore.exceptions

__all__ = [
    "Storage",
    "LocalStorage",
    "S3Storage",
    "open_storage",
    "validate_key",
    "StorageError",
    "InvalidStorageKey",
    "StoredObjectMissing",
    "StorageConfigError",
]


class StorageError(Exception):
    """Base of the storage errors."""


class InvalidStorageKey(StorageError, ValueError):
    """A key is not a safe relative path; the message names the key and the rule it breaks."""


class StoredObjectMissing(StorageError):
    """Nothing is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no stored object under key {key!r}")
        self.key = key


class StorageConfigError(StorageError):
    """The storage URL cannot be used; the message names the URL and what is accepted."""


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing what was there."""

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; ``StoredObjectMissing`` when there are none."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error (as in S3)."""

    def describe(self) -> str:
        """Where objects go, for logs; never includes credentials."""


_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe relative key, else raise ``InvalidStorageKey``."""
    if not isinstance(key, str) or not key:
        raise InvalidStorageKey(f"storage key {key!r}: must be a non-empty string")
    if key.startswith("/"):
        raise InvalidStorageKey(f"storage key {key!r}: must be relative (no leading '/')")
    for segment in key.split("/"):
        if not segment:
            raise InvalidStorageKey(f"storage key {key!r}: has an empty segment")
        if segment in {".", ".."}:
            raise InvalidStorageKey(f"storage key {key!r}: has a {segment!r} segment")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidStorageKey(
                f"storage key {key!r}: segment {segment!r} may hold only letters, digits, '.', '_' and '-'"
            )
    return key


# Temporary files start with '~', which no valid key can contain, so a key never names a half-written file.
_TMP_PREFIX = "~tmp-"


class LocalStorage:
    """Objects as files under ``root``; the key is the relative path.

    A put touches only the key's own file and folder chain and never lists a directory, so it stays O(1)
    however many outputs a folder holds. Content types are not kept: callers record them with the run.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = self.root / validate_key(key)
        # The key is already safe as text; resolving also catches a symlink inside root that leads out.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidStorageKey(f"storage key {key!r}: resolves outside the storage root")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename over it, so readers see the old bytes or the new, never a part.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
            os.replace(tmp_name, path)
        except BaseException:
            os.unlink(tmp_name)
            raise

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StoredObjectMissing(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_file():
            path.unlink(missing_ok=True)

    def describe(self) -> str:
        return f"local folder {self.root}"


class S3Storage:
    """Objects in ``bucket`` under ``prefix/``, through a boto3 S3 client."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._object_key(key), Body=data, ContentType=content_type
        )

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        except self.client.exceptions.NoSuchKey:
            raise StoredObjectMissing(key) from None
        return response["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except botocore.exceptions.ClientError as exc:
            # HEAD responses have no body, so a missing object shows only as the status code.
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"S3 {where} at {self.client.meta.endpoint_url}"


_ACCEPTED = "file:///absolute/path or s3://bucket/prefix"


def open_storage(storage_url: str, s3_endpoint_url: str = "") -> Storage:
    """The storage a ``COMFYGATE_STORAGE_URL`` names; ``StorageConfigError`` if it names none."""
    parts = urlsplit(storage_url)
    if parts.query or parts.fragment:
        raise StorageConfigError(
            f"storage URL {storage_url!r}: unexpected query or fragment; use {_ACCEPTED}"
        )
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in {"", "localhost"} or not path.startswith("/"):
            raise StorageConfigError(f"storage URL {storage_url!r}: needs an absolute path, file:///abs/path")
        return LocalStorage(Path(path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StorageConfigError(f"storage URL {storage_url!r}: names no bucket, use s3://bucket/prefix")
        prefix = parts.path.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except InvalidStorageKey as exc:
                raise StorageConfigError(f"storage URL {storage_url!r}: bad prefix: {exc}") from None
        return S3Storage(parts.netloc, prefix, _s3_client(s3_endpoint_url))
    raise StorageConfigError(f"storage URL {storage_url!r}: unsupported; use {_ACCEPTED}")


def _s3_client(endpoint_url: str) -> Any:
    # Credentials and region come from boto3's usual chain (environment, config files, instance role);
    # the session is asked for the region so that a missing one falls back instead of failing later.
    session = boto3.session.Session()
    # S3-compatible servers (MinIO, moto) are reached by one host name, so buckets go in the path.
    config = botocore.config.Config(s3={"addressing_style": "path"}) if endpoint_url else None
    return session.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=session.region_name or "us-east-1",
        config=config,
    )
