"""One behaviour contract for both storage backends: a local folder and a real S3 server (moto)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from comfygate.platform.storage import (
    InvalidStorageKey,
    LocalStorage,
    S3Storage,
    Storage,
    StorageConfigError,
    StoredObjectMissing,
    open_storage,
    validate_key,
)

BAD_KEYS = [
    "../../etc/passwd",
    "/abs",
    "a//b",
    "a/../b",
    "a\\b",
    "",
    "a/",
    "./a",
    "a b",
    "caf\u00e9.png",
    "~tmp-x",
]


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "files")
    s3_bucket = request.getfixturevalue("s3_bucket")
    client = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)
    return S3Storage(s3_bucket.bucket, "outputs", client)


def test_put_get_round_trip(storage: Storage) -> None:
    storage.put("runs/r1/0.png", b"\x89PNG bytes", "image/png")
    assert storage.get("runs/r1/0.png") == b"\x89PNG bytes"


def test_put_replaces_previous_bytes(storage: Storage) -> None:
    storage.put("a.txt", b"old", "text/plain")
    storage.put("a.txt", b"new", "text/plain")
    assert storage.get("a.txt") == b"new"


def test_empty_object_round_trips(storage: Storage) -> None:
    storage.put("empty.bin", b"", "application/octet-stream")
    assert storage.exists("empty.bin")
    assert storage.get("empty.bin") == b""


def test_missing_key_error_names_the_key(storage: Storage) -> None:
    with pytest.raises(StoredObjectMissing, match="runs/nope/0.png") as info:
        storage.get("runs/nope/0.png")
    assert info.value.key == "runs/nope/0.png"


def test_a_key_prefix_is_not_an_object(storage: Storage) -> None:
    storage.put("runs/r1/0.png", b"x", "image/png")
    assert not storage.exists("runs/r1")
    with pytest.raises(StoredObjectMissing):
        storage.get("runs/r1")


def test_exists_and_delete(storage: Storage) -> None:
    assert not storage.exists("k/v.json")
    storage.put("k/v.json", b"{}", "application/json")
    assert storage.exists("k/v.json")
    storage.delete("k/v.json")
    assert not storage.exists("k/v.json")
    with pytest.raises(StoredObjectMissing):
        storage.get("k/v.json")


def test_delete_of_missing_key_is_not_an_error(storage: Storage) -> None:
    storage.delete("never/stored.png")
    assert not storage.exists("never/stored.png")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_by_every_operation(storage: Storage, key: str) -> None:
    for operation in (
        lambda: storage.put(key, b"x", "text/plain"),
        lambda: storage.get(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
    ):
        with pytest.raises(InvalidStorageKey) as info:
            operation()
        assert repr(key) in str(info.value)


def test_invalid_key_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty segment"):
        validate_key("a//b")


def test_good_keys_pass_unchanged() -> None:
    for key in ("a", "runs/0b1f/out-0_final.PNG", ".hidden", "a/b/c/d/e/f.tar.gz"):
        assert validate_key(key) == key


# --- LocalStorage specifics -------------------------------------------------------------------------


def test_local_bad_key_touches_nothing(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "files"
    storage = LocalStorage(root)
    with pytest.raises(InvalidStorageKey):
        storage.put("../../etc/passwd", b"x", "text/plain")
    assert list(tmp_path.rglob("*")) == []


def test_local_symlink_out_of_root_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "files"
    root.mkdir()
    (root / "link").symlink_to(outside)
    storage = LocalStorage(root)
    with pytest.raises(InvalidStorageKey, match="outside the storage root"):
        storage.put("link/escape.txt", b"x", "text/plain")
    assert list(outside.iterdir()) == []


def test_local_writes_files_at_the_key_path_and_leaves_no_temporaries(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("runs/r1/0.png", b"png", "image/png")
    assert (tmp_path / "runs" / "r1" / "0.png").read_bytes() == b"png"
    assert os.listdir(tmp_path / "runs" / "r1") == ["0.png"]
    assert storage.describe() == f"local folder {tmp_path.resolve()}"


def test_local_many_puts_into_one_folder_stay_correct(tmp_path: Path) -> None:
    # ComfyUI lists its output folder on every save; ours writes by key, so a full folder is no special case.
    storage = LocalStorage(tmp_path)
    count = 2000
    for i in range(count):
        storage.put(f"out/{i:05d}.bin", i.to_bytes(4, "big"), "application/octet-stream")
    storage.put("out/00007.bin", b"again", "application/octet-stream")
    assert sorted(os.listdir(tmp_path / "out")) == [f"{i:05d}.bin" for i in range(count)]
    assert storage.get("out/01999.bin") == (1999).to_bytes(4, "big")
    assert storage.get("out/00007.bin") == b"again"


# --- S3Storage specifics ----------------------------------------------------------------------------


def test_s3_stores_content_type_under_the_prefix(s3_bucket) -> None:
    client = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)
    storage = S3Storage(s3_bucket.bucket, "/outputs/", client)
    storage.put("runs/r1/0.png", b"png", "image/png")
    head = client.head_object(Bucket=s3_bucket.bucket, Key="outputs/runs/r1/0.png")
    assert head["ContentType"] == "image/png"


def test_s3_without_prefix_uses_the_key_as_is(s3_bucket) -> None:
    client = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)
    S3Storage(s3_bucket.bucket, "", client).put("top.txt", b"t", "text/plain")
    assert client.get_object(Bucket=s3_bucket.bucket, Key="top.txt")["Body"].read() == b"t"


# --- open_storage -----------------------------------------------------------------------------------


def test_open_storage_file_url(tmp_path: Path) -> None:
    root = tmp_path / "with space" / "files"
    storage = open_storage(root.as_uri())
    assert isinstance(storage, LocalStorage)
    assert storage.root == root.resolve()
    storage.put("a.txt", b"a", "text/plain")
    assert (root / "a.txt").read_bytes() == b"a"


def test_open_storage_s3_url_against_real_server(s3_bucket) -> None:
    storage = open_storage(f"s3://{s3_bucket.bucket}/team/outputs", s3_bucket.endpoint_url)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == (s3_bucket.bucket, "team/outputs")
    storage.put("x.png", b"x", "image/png")
    assert storage.get("x.png") == b"x"
    assert s3_bucket.endpoint_url in storage.describe()


def test_open_storage_describe_has_no_secret(s3_bucket, aws_test_env: dict[str, str]) -> None:
    storage = open_storage(f"s3://{s3_bucket.bucket}", s3_bucket.endpoint_url)
    assert aws_test_env["AWS_SECRET_ACCESS_KEY"] not in storage.describe()
    assert aws_test_env["AWS_ACCESS_KEY_ID"] not in storage.describe()


def test_open_storage_defaults_region_when_unset(
    aws_test_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    storage = open_storage("s3://bucket/prefix")
    assert isinstance(storage, S3Storage)
    assert storage.client.meta.region_name == "us-east-1"


def test_open_storage_keeps_configured_region(
    aws_test_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    storage = open_storage("s3://bucket")
    assert isinstance(storage, S3Storage)
    assert storage.client.meta.region_name == "eu-west-1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/files", "unsupported"),
        ("/var/lib/comfygate/files", "unsupported"),
        ("", "unsupported"),
        ("file://relative/path", "absolute path"),
        ("file:relative/path", "absolute path"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://bucket/a/../b", "bad prefix"),
        ("s3://bucket/prefix?versioning=1", "query or fragment"),
    ],
)
def test_open_storage_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(StorageConfigError, match=message) as info:
        open_storage(url)
    assert repr(url) in str(info.value)


def test_open_storage_unsupported_scheme_says_what_is_accepted() -> None:
    with pytest.raises(StorageConfigError, match="file:///absolute/path or s3://bucket/prefix"):
        open_storage("gs://bucket/prefix")
