"""The S3 seam: upload an image, hand out a URL the gateway can fetch, delete it later.

This is the only module that imports boto3 and botocore.  Every failure they raise
is translated here, at the edge, into the daemon's own tree (``errors.py``):

* ``StorageTransient`` -- throttling, 5xx, connection/endpoint errors, timeouts,
  raised once boto3's own retries (``standard`` mode) are exhausted;
* ``StorageUnavailable`` -- the bucket is missing or refuses us (NoSuchBucket,
  AccessDenied, bad or missing credentials, 403/404 on the bucket...): every upload
  would fail the same way, so the engine pauses the pipeline instead of failing
  jobs one by one;
* ``StorageRejected`` -- S3 refuses this one object (key too long, entity too
  large): only this job fails.

Messages name the bucket and the endpoint, never a credential.  All methods are
synchronous and thread-safe (one boto3 client, which is thread-safe, created once);
the engine runs them with ``asyncio.to_thread`` in a bounded pool.  ``OSError``
from reading the local file (e.g. it vanished) propagates unchanged.

An upload sends exactly the bytes the job examined (docs/design.md, "A job owns the files it
examined"): the file is opened once, without following a symlink, its identity is checked on the
open descriptor, and the bytes are hashed as they are sent; an upload whose bytes do not hash to
what intake recorded is deleted again and raises ``InputReplaced``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import quote

import boto3
import structlog
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

from seedance_watch.errors import (
    ConfigError,
    InputReplaced,
    SeedanceWatchError,
    StorageRejected,
    StorageTransient,
    StorageUnavailable,
)
from seedance_watch.files.fsutil import FileIdentity, Identity

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "MIB",
    "MULTIPART_CHUNKSIZE",
    "MULTIPART_THRESHOLD",
    "Storage",
    "StorageRejected",
    "StorageSettings",
]

log = structlog.get_logger(__name__)

MIB = 1024 * 1024
MULTIPART_THRESHOLD = 8 * MIB
MULTIPART_CHUNKSIZE = 8 * MIB
#: SigV4 presigned URLs cannot outlive seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
DEFAULT_REGION = "us-east-1"

# S3 error codes that mean "try again later" (on top of any 5xx or 429).
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
# S3 error codes about one object: only the job that owns it fails.
_OBJECT_CODES = frozenset({"KeyTooLongError", "EntityTooLarge"})
# Anything else S3 refuses (NoSuchBucket, AccessDenied, InvalidAccessKeyId,
# SignatureDoesNotMatch, AllAccessDisabled, a bare 403/404 from head_bucket, a
# redirect to another region...) is about the bucket or the credentials, so it
# pauses the pipeline: failing each job in turn would lose nothing but the inputs.


class StorageSettings(Protocol):
    """What ``Storage`` reads from the ``storage:`` config section (read-only)."""

    @property
    def bucket(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def url_mode(self) -> str: ...
    @property
    def public_base_url(self) -> str | None: ...
    @property
    def presign_expires(self) -> float: ...


class Storage:
    """Uploads, URLs and deletes against one bucket, with errors in our own tree."""

    def __init__(
        self,
        config: StorageSettings,
        *,
        max_retries: int = 5,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        multipart_threshold: int = MULTIPART_THRESHOLD,
    ) -> None:
        """Build the one boto3 client.  Credentials come only from boto3's standard chain.

        ``max_retries`` is botocore's ``retries.max_attempts``: retries *after* the first
        attempt (standard mode, exponential backoff with jitter).  It, the timeouts and
        ``multipart_threshold`` are knobs for tests and benchmarks.
        """
        if config.url_mode not in ("presigned", "public"):
            raise ConfigError(
                f"storage.url_mode must be 'presigned' or 'public', not {config.url_mode!r}",
                key="storage.url_mode",
            )
        if config.url_mode == "public" and not config.public_base_url:
            raise ConfigError(
                "storage.public_base_url is required when storage.url_mode is 'public'",
                key="storage.public_base_url",
            )
        if (
            config.url_mode == "presigned"
            and not 1 <= config.presign_expires <= MAX_PRESIGN_SECONDS
        ):
            raise ConfigError(
                f"storage.presign_expires must be between 1 and {MAX_PRESIGN_SECONDS} seconds "
                f"(S3 signatures last 7 days at most), not {config.presign_expires}",
                key="storage.presign_expires",
            )
        self._settings = config
        self.bucket = config.bucket
        self.prefix = config.prefix
        # A private session: boto3's default session is not safe to share across threads.
        session = boto3.session.Session()
        region = config.region or session.region_name or DEFAULT_REGION
        client_config = Config(
            region_name=region,
            retries={"mode": "standard", "max_attempts": max_retries},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=16,
            signature_version="s3v4",
            # S3-compatible stores (MinIO, Ceph, moto) rarely resolve bucket subdomains.
            s3={"addressing_style": "path" if config.endpoint_url else "auto"},
        )
        self._client: S3Client = session.client(
            "s3", endpoint_url=config.endpoint_url or None, config=client_config
        )
        self.endpoint: str = config.endpoint_url or self._client.meta.endpoint_url
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=MULTIPART_CHUNKSIZE,
            max_concurrency=4,
        )

    def key_for(self, job_id: str, file_name: str) -> str:
        """The object key of a job's image: ``{prefix}{job_id}/{file_name}``."""
        return f"{self.prefix}{job_id}/{file_name}"

    def upload(
        self,
        path: Path,
        key: str,
        *,
        content_type: str,
        expect_sha256: str | None = None,
        expect: FileIdentity | None = None,
    ) -> int:
        """Upload ``path`` to ``key`` with ``content_type``; return the bytes uploaded.

        Files above the multipart threshold (8 MiB) go up in 8 MiB parts, four at once.
        The file is opened once (``O_NOFOLLOW``: a symlink is refused with ``OSError``
        ELOOP, or with :class:`InputReplaced` when ``expect`` says it was a file).
        With ``expect`` (intake's record), the open file must be that one (device,
        inode, size, mtime), else :class:`InputReplaced` before anything is sent.
        With ``expect_sha256``, the bytes sent are hashed on the way; if they do not
        match (the file was rewritten in place meanwhile), the object just written
        is deleted and :class:`InputReplaced` raised.
        """
        started = time.monotonic()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP and expect is not None:
                # Intake examined a regular file; a symlink has taken its name since.
                raise InputReplaced(f"{path.name} is now a symbolic link") from exc
            raise
        with os.fdopen(fd, "rb") as raw:
            before = Identity.of(os.fstat(fd))
            if expect is not None and before != Identity.expected(expect):
                raise InputReplaced(
                    f"{path.name} is not the file this job examined (inode "
                    f"{before.ino} instead of {expect.ino}, or another size or mtime); "
                    "the new file is a new drop"
                )
            body = _HashingReader(raw)
            try:
                with self._translated("upload", key):
                    self._client.upload_fileobj(
                        cast("IO[bytes]", body),  # boto3 uses read, seek and tell only
                        self.bucket,
                        key,
                        ExtraArgs={"ContentType": content_type},
                        Config=self._transfer,
                    )
            except SeedanceWatchError as exc:
                if Identity.of(os.fstat(fd)) == before:
                    raise
                # A file rewritten mid-upload can fail the store's checksum: say why.
                self._drop(key)
                raise InputReplaced(
                    f"{path.name} changed while it was uploaded; the upload was removed"
                ) from exc
            digest = body.finish()
            after = Identity.of(os.fstat(fd))
        if expect_sha256 is not None and digest != expect_sha256.lower():
            self._drop(key)
            raise InputReplaced(
                f"the bytes of {path.name} sent to S3 are not those the job examined "
                f"(sha256 {digest[:12]}... instead of {expect_sha256[:12]}...); "
                "the upload was removed"
            )
        if after != before:
            self._drop(key)
            raise InputReplaced(
                f"{path.name} changed while it was uploaded; the upload was removed"
            )
        seconds = time.monotonic() - started
        log.info("storage.uploaded", key=key, bytes=before.size, seconds=round(seconds, 3))
        return before.size

    def _drop(self, key: str) -> None:
        """Delete an object that must not stay; a failure is logged, not raised."""
        try:
            self.delete(key)
        except SeedanceWatchError as exc:
            # The job fails either way; the object under its own key is the leak.
            log.warning("storage.delete_failed", key=key, error=str(exc))

    def url_for(self, key: str) -> str:
        """The URL the gateway fetches: presigned GET, or under ``public_base_url``."""
        if self._settings.url_mode == "public":
            base = self._settings.public_base_url or ""
            return f"{base.rstrip('/')}/{quote(key)}"
        with self._translated("presign", key):
            return self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=int(self._settings.presign_expires),
            )

    def delete(self, key: str) -> None:
        """Delete ``key``; a missing object is fine (S3 deletes are idempotent)."""
        with self._translated("delete", key):
            try:
                self._client.delete_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                # S3 answers 204 for a missing key; some compatible stores say NoSuchKey.
                if _error_code(exc) != "NoSuchKey":
                    raise
        log.info("storage.deleted", key=key)

    def check(self) -> None:
        """Prove the bucket exists and answers us (``head_bucket``), or raise."""
        with self._translated("check", None):
            self._client.head_bucket(Bucket=self.bucket)

    def probe(self) -> str:
        """Write and delete a small probe object: the bucket exists, the credentials work
        and may write and delete (what every job needs).  Returns the probe's key.

        Raises :class:`StorageUnavailable` (missing bucket, refused credentials) or
        :class:`StorageTransient` (unreachable).
        """
        key = f"{self.prefix}.seedance-watch-check-{os.urandom(6).hex()}"
        with self._translated("probe", key):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=b"seedance-watch check\n")
        with self._translated("probe", key):
            self._client.delete_object(Bucket=self.bucket, Key=key)
        return key

    def close(self) -> None:
        """Release the client's connection pool."""
        self._client.close()

    # --- the edge ---------------------------------------------------------------------

    @contextmanager
    def _translated(self, action: str, key: str | None) -> Iterator[None]:
        """Turn boto3/botocore exceptions raised inside into our own tree."""
        try:
            yield
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._translate(exc, action, key) from exc

    def _where(self, key: str | None) -> str:
        target = f"s3://{self.bucket}/{key}" if key else f"bucket {self.bucket!r}"
        return f"{target} at {self.endpoint}"

    def _translate(self, exc: Exception, action: str, key: str | None) -> SeedanceWatchError:
        where = self._where(key)
        if isinstance(exc, S3UploadFailedError):
            # boto3 flattens the ClientError into a string; the original is its context.
            inner = exc.__cause__ or exc.__context__
            if isinstance(inner, (ClientError, BotoCoreError)):
                return self._translate(inner, action, key)
            return StorageTransient(f"S3 {action} failed for {where}: {exc}")
        if isinstance(exc, ClientError):
            return self._translate_client_error(exc, action, where)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageUnavailable(
                f"S3 {action} impossible for {where}: no usable AWS credentials in boto3's "
                "standard chain (environment, shared config files, instance role)"
            )
        if isinstance(exc, ProxyConnectionError):
            # The proxy URL may carry a user:password; name the failure, not the URL.
            return StorageTransient(f"S3 {action} failed for {where}: the proxy refused us")
        if isinstance(exc, SSLError):
            return StorageUnavailable(f"S3 {action} failed for {where}: TLS error: {exc}")
        if isinstance(
            exc,
            (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError),
        ):
            return StorageTransient(f"S3 {action} failed for {where}: {exc}")
        return StorageTransient(f"S3 {action} failed for {where}: {type(exc).__name__}: {exc}")

    def _translate_client_error(
        self, exc: ClientError, action: str, where: str
    ) -> SeedanceWatchError:
        response: Any = exc.response
        code = _error_code(exc)
        # S3's own sentence; it never contains the key id or the signature.
        detail = str(response.get("Error", {}).get("Message") or "")
        status_raw = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = int(status_raw) if status_raw is not None else None
        text = f"S3 {action} failed for {where}: {code}" + (f" ({detail})" if detail else "")
        if code in _TRANSIENT_CODES or (status is not None and (status >= 500 or status == 429)):
            return StorageTransient(text, http_status=status)
        if code in _OBJECT_CODES:
            return StorageRejected(text, http_status=status)
        if code in ("404", "NoSuchBucket"):
            text = f"S3 bucket not found: {where} ({code})"
        elif code in ("403", "AccessDenied"):
            text = f"S3 access denied: {where} ({code}" + (f": {detail})" if detail else ")")
        return StorageUnavailable(text, http_status=status)


class _HashingReader(io.RawIOBase):
    """A read-only view of an open file that hashes the bytes read, in file order.

    boto3 reads a single-request body more than once (a checksum, then the send, then
    a retry's send), each time from offset 0: a read from offset 0 starts the hash
    afresh, so the digest is that of the last pass, the one the store kept.
    Multipart uploads read each part once, in order.  Re-reads within a pass are
    hashed once (only bytes past the furthest point hashed count); bytes never read
    (a seek forward) are read at :meth:`finish` from the same descriptor.
    """

    def __init__(self, raw: io.BufferedReader) -> None:
        super().__init__()
        self._raw = raw
        self._sha = hashlib.sha256()
        self._hashed = 0  # bytes [0, _hashed) are in the hash

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def read(self, size: int | None = -1) -> bytes:
        start = self._raw.tell()
        data = self._raw.read(-1 if size is None else size)
        self._feed(start, data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _feed(self, start: int, data: bytes) -> None:
        if start == 0 and data and self._hashed:
            self._sha, self._hashed = hashlib.sha256(), 0
        if start <= self._hashed < start + len(data):
            self._sha.update(memoryview(data)[self._hashed - start :])
            self._hashed = start + len(data)

    def finish(self) -> str:
        """The sha256 of the whole file (reading what was never read), as hex."""
        while chunk := os.pread(self._raw.fileno(), 1 << 20, self._hashed):
            self._sha.update(chunk)
            self._hashed += len(chunk)
        return self._sha.hexdigest()

    def close(self) -> None:
        # boto3 must not close the caller's file; upload() closes it.
        pass


def _error_code(exc: ClientError) -> str:
    """The S3 error code of ``exc`` (``"404"`` for a body-less HEAD answer)."""
    error: Any = exc.response.get("Error", {})
    return str(error.get("Code", "Unknown"))
