"""The S3 seam against moto's real server on loopback (and a tiny fake S3 for refusals)."""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from structlog.testing import capture_logs

from seedance_watch.core.names import object_name
from seedance_watch.errors import (
    ConfigError,
    InputReplaced,
    StorageTransient,
    StorageUnavailable,
)
from seedance_watch.files.fsutil import identify
from seedance_watch.files.storage import MIB, Storage, StorageRejected
from seedance_watch.logs import redact_url
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator

from .helpers import BUCKET, free_port, make_image_bytes, sha256


@dataclass(frozen=True)
class Settings:
    """Stands in for config.StorageConfig: the attributes ``StorageSettings`` names."""

    bucket: str = BUCKET
    prefix: str = "seedance-watch/"
    endpoint_url: str | None = None
    region: str | None = None
    url_mode: str = "presigned"
    public_base_url: str | None = None
    presign_expires: int = 3600


@pytest.fixture
def settings(s3_server: S3Emulator) -> Settings:
    return Settings(endpoint_url=s3_server.endpoint_url)


@pytest.fixture
def storage(settings: Settings) -> Iterator[Storage]:
    store = Storage(settings)
    yield store
    store.close()


def test_upload_then_presigned_get_returns_exact_bytes_and_content_type(
    storage: Storage, tmp_path: Path
) -> None:
    """An uploaded image is served back byte-exact, with its Content-Type, at the presigned URL."""
    data = make_image_bytes()
    path = tmp_path / "beach.jpg"
    path.write_bytes(data)
    key = storage.key_for("job-1", "beach.jpg")
    assert key == "seedance-watch/job-1/beach.jpg"

    with capture_logs() as logs:
        sent = storage.upload(path, key, content_type="image/jpeg")
    url = storage.url_for(key)

    assert sent == len(data)
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=3600" in url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/jpeg"
    [event] = [entry for entry in logs if entry["event"] == "storage.uploaded"]
    assert event["key"] == key
    assert event["bytes"] == len(data)
    assert event["seconds"] >= 0


def test_small_file_is_one_put_and_large_file_is_multipart(
    storage: Storage, s3_server: S3Emulator, tmp_path: Path
) -> None:
    """Files above 8 MiB go up as a multipart upload (ETag ``md5-N``) and stay byte-exact."""
    small = tmp_path / "small.png"
    small.write_bytes(make_image_bytes(fmt="PNG"))
    large = tmp_path / "large.png"
    large_bytes = random.Random(7).randbytes(9 * MIB)
    large.write_bytes(large_bytes)
    small_key = storage.key_for("job-2", small.name)
    large_key = storage.key_for("job-2", large.name)

    storage.upload(small, small_key, content_type="image/png")
    assert storage.upload(large, large_key, content_type="image/png") == 9 * MIB

    client = s3_server.client()
    assert "-" not in client.head_object(Bucket=BUCKET, Key=small_key)["ETag"]
    head = client.head_object(Bucket=BUCKET, Key=large_key)
    assert head["ETag"].strip('"').endswith("-2")
    assert head["ContentType"] == "image/png"
    assert httpx.get(storage.url_for(large_key)).content == large_bytes


def test_unicode_and_spaces_in_file_name_upload_and_presign(
    storage: Storage, s3_server: S3Emulator, tmp_path: Path
) -> None:
    """A file name with spaces, accents, CJK and a quote keeps its exact key and presigns."""
    name = "ciel d'été 雲 #1.webp"
    data = make_image_bytes(fmt="WEBP")
    path = tmp_path / name
    path.write_bytes(data)
    key = storage.key_for("job-3", name)

    storage.upload(path, key, content_type="image/webp")

    assert key in s3_server.keys(BUCKET)
    response = httpx.get(storage.url_for(key))
    assert response.status_code == 200
    assert response.content == data


def test_public_url_mode_builds_url_from_base(settings: Settings) -> None:
    """``url_mode: public`` gives ``{public_base_url}/{quoted key}`` with no signature."""
    store = Storage(
        replace(settings, url_mode="public", public_base_url="https://cdn.example.com/media/")
    )
    try:
        url = store.url_for(store.key_for("job-4", "a b é.jpg"))
    finally:
        store.close()
    assert url == "https://cdn.example.com/media/seedance-watch/job-4/a%20b%20%C3%A9.jpg"


def test_delete_removes_object_and_deleting_twice_is_fine(
    storage: Storage, s3_server: S3Emulator, tmp_path: Path
) -> None:
    """delete() removes the object; a second delete of the same key does not raise."""
    path = tmp_path / "gone.jpg"
    path.write_bytes(make_image_bytes())
    key = storage.key_for("job-5", path.name)
    storage.upload(path, key, content_type="image/jpeg")
    assert key in s3_server.keys(BUCKET)

    with capture_logs() as logs:
        storage.delete(key)
        storage.delete(key)

    assert key not in s3_server.keys(BUCKET)
    assert [e["key"] for e in logs if e["event"] == "storage.deleted"] == [key, key]


def test_missing_bucket_is_unavailable_naming_bucket_and_endpoint(
    settings: Settings, tmp_path: Path
) -> None:
    """A bucket that does not exist pauses (StorageUnavailable) from check() and upload()."""
    store = Storage(replace(settings, bucket="no-such-bucket-here"))
    path = tmp_path / "x.jpg"
    path.write_bytes(make_image_bytes())
    try:
        with pytest.raises(StorageUnavailable) as checked:
            store.check()
        with pytest.raises(StorageUnavailable) as uploaded:
            store.upload(path, store.key_for("job-6", path.name), content_type="image/jpeg")
    finally:
        store.close()
    for err in (checked.value, uploaded.value):
        assert "no-such-bucket-here" in err.message
        assert str(settings.endpoint_url) in err.message
        assert EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in err.message
    assert uploaded.value.http_status == 404
    assert "NoSuchBucket" in uploaded.value.message


def test_existing_bucket_passes_check(storage: Storage) -> None:
    """check() returns quietly when the bucket exists and answers."""
    storage.check()


def test_unreachable_endpoint_is_transient(aws_env: None, tmp_path: Path) -> None:
    """Nothing listening on the endpoint: check() and upload() raise StorageTransient."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = Storage(Settings(endpoint_url=endpoint), max_retries=0, connect_timeout=2)
    path = tmp_path / "x.jpg"
    path.write_bytes(make_image_bytes())
    try:
        with pytest.raises(StorageTransient) as checked:
            store.check()
        with pytest.raises(StorageTransient) as uploaded:
            store.upload(path, "k/x.jpg", content_type="image/jpeg")
    finally:
        store.close()
    assert endpoint in checked.value.message
    assert BUCKET in uploaded.value.message


def test_missing_credentials_are_unavailable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No credentials anywhere in boto3's chain: check() pauses with a clear message."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    store = Storage(settings, max_retries=0)
    try:
        with pytest.raises(StorageUnavailable, match="no usable AWS credentials"):
            store.check()
        with pytest.raises(StorageUnavailable, match=BUCKET):
            store.url_for("k/x.jpg")
    finally:
        store.close()


def test_redact_url_drops_the_signature(storage: Storage) -> None:
    """redact_url() keeps scheme, host and path of a presigned URL and drops its query."""
    url = storage.url_for("seedance-watch/job/x.jpg")
    assert redact_url(url) == f"{storage.endpoint}/{BUCKET}/seedance-watch/job/x.jpg"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"url_mode": "public"}, "storage.public_base_url"),
        ({"url_mode": "signed"}, "storage.url_mode"),
        ({"presign_expires": 8 * 24 * 3600}, "storage.presign_expires"),
        ({"presign_expires": 0}, "storage.presign_expires"),
    ],
)
def test_unusable_url_settings_are_config_errors(
    aws_env: None, overrides: dict[str, object], key: str
) -> None:
    """Settings that could never yield a fetchable URL fail at start-up, naming the key."""
    with pytest.raises(ConfigError) as caught:
        Storage(replace(Settings(endpoint_url="http://127.0.0.1:9"), **overrides))  # type: ignore[arg-type]
    assert caught.value.key == key


# --- refusals from a fake S3 that speaks the real error protocol ------------------------


class _Refusing(BaseHTTPRequestHandler):
    """Answers every request with one S3 error document (status and code set per test)."""

    protocol_version = "HTTP/1.1"
    status: ClassVar[int] = 500
    code: ClassVar[str] = "InternalError"
    hits: ClassVar[list[str]] = []
    #: Answer HEAD (head_bucket) with 200: the bucket is fine, only other requests fail.
    head_ok: ClassVar[bool] = False

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.hits.append(self.command)
        if self.command == "HEAD" and self.head_ok:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{self.code}</Code>'
            f"<Message>refused by the fake</Message><RequestId>1</RequestId></Error>"
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_PUT = do_GET = do_HEAD = do_POST = do_DELETE = _refuse

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing_s3() -> Iterator[tuple[str, type[_Refusing]]]:
    handler = type("Handler", (_Refusing,), {"hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (403, "AccessDenied", StorageUnavailable),
        (403, "InvalidAccessKeyId", StorageUnavailable),
        (403, "SignatureDoesNotMatch", StorageUnavailable),
        (403, "AllAccessDisabled", StorageUnavailable),
        (404, "NoSuchBucket", StorageUnavailable),
        (503, "SlowDown", StorageTransient),
        (500, "InternalError", StorageTransient),
        (400, "KeyTooLongError", StorageRejected),
    ],
)
def test_s3_refusals_map_to_our_errors(
    aws_env: None,
    refusing_s3: tuple[str, type[_Refusing]],
    tmp_path: Path,
    status: int,
    code: str,
    expected: type[Exception],
) -> None:
    """Each S3 error code on upload becomes the pause, retry or job error it means."""
    endpoint, handler = refusing_s3
    handler.status, handler.code = status, code
    path = tmp_path / "x.jpg"
    path.write_bytes(make_image_bytes())
    store = Storage(Settings(endpoint_url=endpoint), max_retries=0)
    try:
        with pytest.raises(expected) as caught:
            store.upload(path, "k/x.jpg", content_type="image/jpeg")
    finally:
        store.close()
    assert type(caught.value) is expected
    assert code in str(caught.value)
    assert endpoint in str(caught.value)
    assert caught.value.http_status == status  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "code"), [(404, "NoSuchKey"), (400, "InvalidArgument")])
@pytest.mark.parametrize("bucket_answers", [True, False])
def test_an_upload_refusal_of_no_known_kind_asks_the_bucket(
    aws_env: None,
    refusing_s3: tuple[str, type[_Refusing]],
    tmp_path: Path,
    status: int,
    code: str,
    bucket_answers: bool,
) -> None:
    """An upload refused with a code that is not known to be the bucket's (a 404 for
    one odd key, InvalidArgument) is judged by a HEAD of the bucket: the bucket answers,
    so only this object is refused (StorageRejected: the job fails, nothing pauses);
    the bucket does not answer, so its own answer pauses (StorageUnavailable)."""
    endpoint, handler = refusing_s3
    handler.status, handler.code, handler.head_ok = status, code, bucket_answers
    path = tmp_path / "x.jpg"
    path.write_bytes(make_image_bytes())
    store = Storage(Settings(endpoint_url=endpoint), max_retries=0)
    try:
        with pytest.raises((StorageRejected, StorageUnavailable)) as caught:
            store.upload(path, "k/image.jpg", content_type="image/jpeg")
    finally:
        store.close()
    assert handler.hits == ["PUT", "HEAD"]
    if bucket_answers:
        assert type(caught.value) is StorageRejected
        assert code in str(caught.value) and "only this job fails" in str(caught.value)
    else:
        assert type(caught.value) is StorageUnavailable
        assert BUCKET in str(caught.value)


def test_object_names_are_fixed_and_keep_the_image_suffix() -> None:
    """A job's objects are named by role, never by the file's name (which may hold a
    newline, bytes that are not UTF-8, anything): the suffix stays, in lower case."""
    assert object_name("image", "sub/nl\nname.JPG") == "image.jpg"
    assert object_name("last_frame", os.fsdecode(b"caf\xe9.png")) == "last_frame.png"
    assert object_name("reference", "a b.webp", 3) == "reference-3.webp"
    assert object_name("image", "no-suffix") == "image"


def test_bare_403_on_head_bucket_is_unavailable(
    aws_env: None, refusing_s3: tuple[str, type[_Refusing]]
) -> None:
    """head_bucket's body-less 403 (no S3 code at all) still pauses as access denied."""
    endpoint, handler = refusing_s3
    handler.status, handler.code = 403, "AccessDenied"
    store = Storage(Settings(endpoint_url=endpoint), max_retries=0)
    try:
        with pytest.raises(StorageUnavailable, match="access denied") as caught:
            store.check()
    finally:
        store.close()
    assert caught.value.http_status == 403
    assert handler.hits == ["HEAD"]


def test_transient_errors_are_retried_by_boto3_first(
    aws_env: None, refusing_s3: tuple[str, type[_Refusing]], tmp_path: Path
) -> None:
    """A 503 is retried max_retries times inside boto3 before StorageTransient surfaces."""
    endpoint, handler = refusing_s3
    handler.status, handler.code = 503, "SlowDown"
    store = Storage(Settings(endpoint_url=endpoint), max_retries=1)
    try:
        with pytest.raises(StorageTransient):
            store.check()
    finally:
        store.close()
    assert handler.hits == ["HEAD", "HEAD"]


# --- the job owns the exact bytes it examined (docs/design.md, "A job owns the files it examined")
# ---------------------------------


@pytest.mark.parametrize("size", [40_000, 9 * MIB])
def test_upload_with_the_examined_identity_and_hash_sends_those_bytes(
    storage: Storage, s3_server: S3Emulator, tmp_path: Path, size: int
) -> None:
    """The examined file (identity and sha256 as intake recorded them) goes up whole,
    in one PUT or in parts: the hash taken on the way matches, nothing is refused."""
    data = random.Random(size).randbytes(size)
    path = tmp_path / "beach.png"
    path.write_bytes(data)
    key = storage.key_for("job-own", f"{size}.png")
    sent = storage.upload(
        path, key, content_type="image/png", expect_sha256=sha256(data), expect=identify(path)
    )
    assert sent == size
    body = s3_server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert body == data


def test_upload_of_a_file_replaced_under_the_same_name_is_refused_before_sending(
    storage: Storage, s3_server: S3Emulator, tmp_path: Path
) -> None:
    """A new file dropped under the examined one's name (another inode) is not uploaded:
    InputReplaced (code input_replaced), and no object appears in the bucket."""
    path = tmp_path / "beach.jpg"
    data = make_image_bytes()
    path.write_bytes(data)
    examined = identify(path)
    (tmp_path / "new.jpg").write_bytes(make_image_bytes(color=(200, 10, 10)))
    (tmp_path / "new.jpg").replace(path)
    key = storage.key_for("job-replaced", "beach.jpg")
    with pytest.raises(InputReplaced) as info:
        storage.upload(
            path, key, content_type="image/jpeg", expect_sha256=sha256(data), expect=examined
        )
    assert info.value.code == "input_replaced"
    assert key not in s3_server.keys(BUCKET)


def test_upload_whose_bytes_do_not_hash_as_examined_is_removed_again(
    storage: Storage, s3_server: S3Emulator, tmp_path: Path
) -> None:
    """Bytes rewritten in place with size and mtime kept (so the identity still matches):
    the hash taken while uploading differs from intake's, so the object just written is
    deleted and InputReplaced raised."""
    path = tmp_path / "beach.jpg"
    data = make_image_bytes()
    path.write_bytes(data)
    examined = identify(path)
    with open(path, "r+b") as fp:
        fp.seek(len(data) // 2)
        fp.write(b"X" * 64)
    os.utime(path, ns=(examined.mtime_ns, examined.mtime_ns))
    assert identify(path) == examined
    key = storage.key_for("job-rewritten", "beach.jpg")
    with capture_logs() as logs, pytest.raises(InputReplaced, match="not those the job examined"):
        storage.upload(
            path, key, content_type="image/jpeg", expect_sha256=sha256(data), expect=examined
        )
    assert [e["key"] for e in logs if e["event"] == "storage.deleted"] == [key]
    assert key not in s3_server.keys(BUCKET)


def test_upload_of_a_file_rewritten_while_it_is_sent_is_removed_again(
    storage: Storage, s3_server: S3Emulator, tmp_path: Path
) -> None:
    """The file changes between the checksum pass and the send (botocore's before-send
    hook stands for the other writer): whatever the store says, the upload is removed
    and the job learns InputReplaced, not a storage error."""
    path = tmp_path / "beach.jpg"
    data = make_image_bytes()
    path.write_bytes(data)
    examined = identify(path)

    def rewrite(**_kwargs: object) -> None:
        with open(path, "r+b") as fp:
            fp.write(b"\0" * 16)

    key = storage.key_for("job-mid-upload", "beach.jpg")
    storage._client.meta.events.register_first("before-send.s3.PutObject", rewrite)
    with pytest.raises(InputReplaced):
        storage.upload(
            path, key, content_type="image/jpeg", expect_sha256=sha256(data), expect=examined
        )
    assert key not in s3_server.keys(BUCKET)


def test_upload_never_follows_a_symlink(
    storage: Storage, s3_server: S3Emulator, tmp_path: Path
) -> None:
    """A symlink under an input's name is refused (ELOOP; InputReplaced when the job had
    examined a regular file there): its target is never read."""
    target = tmp_path / "secret.jpg"
    target.write_bytes(make_image_bytes())
    (tmp_path / "link.jpg").symlink_to(target)
    key = storage.key_for("job-link", "link.jpg")
    with pytest.raises(OSError) as info:
        storage.upload(tmp_path / "link.jpg", key, content_type="image/jpeg")
    assert info.value.errno == errno.ELOOP
    examined = identify(target)
    target.rename(tmp_path / "beach.jpg")
    (tmp_path / "link.jpg").unlink()
    target.symlink_to(tmp_path / "beach.jpg")  # a link takes the examined file's name
    with pytest.raises(InputReplaced, match="symbolic link"):
        storage.upload(target, key, content_type="image/jpeg", expect=examined)
    assert key not in s3_server.keys(BUCKET)
