"""A local S3 emulator (moto's server mode) for the demo, the tests and the benchmarks.

Needs the ``demo`` extra (``moto[server]``).  The daemon never knows it talks to
the emulator: it gets an ``endpoint_url`` like any S3-compatible store.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType
from typing import Any

__all__ = ["EMULATOR_CREDENTIALS", "S3Emulator"]

#: moto accepts any credentials; these are placeholders, not secrets.
EMULATOR_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "emulator",
    "AWS_SECRET_ACCESS_KEY": "emulator",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Emulator:
    """moto's threaded server on a free loopback port, with buckets created up front."""

    def __init__(self, *buckets: str, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        self._server: Any = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self._buckets = buckets
        self.endpoint_url = ""

    def start(self) -> S3Emulator:
        # werkzeug logs every request to stderr; the emulator is scenery, keep it quiet.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        for bucket in self._buckets:
            self.client().create_bucket(Bucket=bucket)
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        """A boto3 S3 client bound to the emulator (for tests and the demo)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=EMULATOR_CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket`` (to check that nothing was left behind)."""
        listing = self.client().list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listing.get("Contents", [])]

    @staticmethod
    def install_credentials(environ: dict[str, str] | None = None) -> None:
        """Put the placeholder credentials where boto3's standard chain finds them."""
        target = os.environ if environ is None else environ
        for key, value in EMULATOR_CREDENTIALS.items():
            target.setdefault(key, value)

    def __enter__(self) -> S3Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
