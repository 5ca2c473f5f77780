"""Mistakes shown before the first drop: ``seedance-watch check``, and the same checks at
start-up (a missing bucket, a refused key, a mistyped folder), with run's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import daemon_env, files_under, free_port, fresh_bucket, run_once, write_config
from .simhelpers import quick_tasks

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(quick_tasks()) as simulator:
        yield simulator


def check(config: Path, key: str = "sim-key") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seedance_watch", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=daemon_env(key),
        timeout=60,
        check=False,
    )


def test_check_passes_on_a_good_setup_and_creates_nothing(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """Folders, the bucket (a probe object written and deleted) and the key (a free call):
    every line ok, exit 0; the bucket is left empty and no task is created."""
    bucket = fresh_bucket(s3_server)
    config = write_config(tmp_path, s3_server, sim, bucket=bucket)
    (tmp_path / "state").mkdir()
    done = check(config)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert all(line.startswith("ok: ") for line in lines), lines
    assert any(f"the bucket {bucket}" in line and "write and a delete" in line for line in lines)
    assert any("accepts the pixazo key (from PIXAZO_API_KEY)" in line for line in lines)
    assert s3_server.keys(bucket) == [] and sim.submit_attempts == 0


def test_check_reports_a_mistyped_folder_a_missing_bucket_and_a_refused_key(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """A missing inbox is a warning naming paths.inbox (not created); a missing bucket
    exits 1 naming it; a refused key exits 3 naming where it came from."""
    config = write_config(tmp_path, s3_server, sim, bucket="no-such-bucket")
    text = config.read_text().replace("inbox: ./inbox", "inbox: ./inbxo")
    config.write_text(text)
    (tmp_path / "state").mkdir()
    done = check(config)
    assert done.returncode == 1, done.stdout
    assert f"warning: paths.inbox {tmp_path / 'inbxo'} does not exist" in done.stdout
    assert not (tmp_path / "inbxo").exists()
    assert "error: " in done.stdout and "no-such-bucket" in done.stdout
    refused = check(config, key="wrong-key")
    assert refused.returncode == 3, refused.stdout
    assert "refused the API key" in refused.stdout and "PIXAZO_API_KEY" in refused.stdout
    assert sim.submit_attempts == 0


def test_a_missing_bucket_ends_a_run_before_any_drop_is_taken(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: object
) -> None:
    """``run --once`` against a bucket that does not exist exits 1 before taking a drop:
    no job is created, the pair stays in the inbox, nothing is submitted."""
    config = write_config(tmp_path, s3_server, sim, bucket="no-such-bucket")
    write_pair(tmp_path / "inbox", "beach")  # type: ignore[operator]
    result, _ = run_once(config)
    assert result.exit_code == 1 and result.summary.storage_unavailable is not None
    assert "no-such-bucket" in result.summary.storage_unavailable
    assert files_under(tmp_path / "inbox") == ["beach.jpg", "beach.yaml"]
    assert sim.submit_attempts == 0 and not result.summary.done


def test_a_refused_key_ends_a_run_before_any_upload(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: object
) -> None:
    """With a key the gateway refuses, ``run --once`` exits 3 before uploading anything:
    the bucket stays empty (the key was asked with a free call, nothing billed)."""
    bucket = fresh_bucket(s3_server)
    config = write_config(tmp_path, s3_server, sim, bucket=bucket)
    write_pair(tmp_path / "inbox", "beach")  # type: ignore[operator]
    result, _ = run_once(config, key="wrong-key")
    assert result.exit_code == 3 and result.summary.credentials_refused is not None
    assert s3_server.keys(bucket) == [] and sim.submit_attempts == 0
    assert files_under(tmp_path / "inbox") == ["beach.jpg", "beach.yaml"]


def test_a_folder_run_has_to_create_is_logged_as_a_warning(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """A mistyped paths.inbox is still created (a new setup needs its folders), but the
    start-up log says so, naming the key, before any drop."""
    config = write_config(tmp_path, s3_server, sim)
    config.write_text(config.read_text().replace("inbox: ./inbox", "inbox: ./in/box"))
    (tmp_path / "state").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "run", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    created = [e for e in events if e.get("event") == "daemon.folder_created"]
    assert [(e["key"], e["path"], e["level"]) for e in created] == [
        ("paths.inbox", str(tmp_path / "in" / "box"), "warning")
    ]
    assert (tmp_path / "in" / "box").is_dir()


def test_check_asks_the_shared_database_and_names_what_it_found(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, postgres_url: str
) -> None:
    """With cluster.database, check connects once and reports the server and the
    schema (none yet: check creates nothing); a newer schema than this version knows
    and a database nobody answers at exit 1 naming cluster.database."""
    extra = f"cluster: {{database: '{postgres_url}', name: alpha}}\n"
    config = write_config(tmp_path, s3_server, sim, bucket=fresh_bucket(s3_server), extra=extra)
    (tmp_path / "state").mkdir()
    done = check(config)
    assert done.returncode == 0, done.stdout + done.stderr
    (said,) = [line for line in done.stdout.splitlines() if "the database" in line]
    assert said.startswith("ok: the database postgresql://") and "answers: PostgreSQL 1" in said
    assert "no seedance-watch tables yet" in said
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('seedance_watch')").fetchone() == (None,)
        conn.execute("CREATE SCHEMA seedance_watch")
        conn.execute("CREATE TABLE seedance_watch.schema_migrations (version int, name text)")
        conn.execute("INSERT INTO seedance_watch.schema_migrations VALUES (99, 'future')")
    newer = check(config)
    assert newer.returncode == 1, newer.stdout
    assert "error: " in newer.stdout and "schema version 99" in newer.stdout

    away = f"postgresql://seedance@127.0.0.1:{free_port()}/none"
    config.write_text(config.read_text().replace(postgres_url, away))
    gone = check(config)
    assert gone.returncode == 1, gone.stdout
    assert "error: cannot connect to the database" in gone.stdout
    (line,) = [line for line in gone.stdout.splitlines() if "cannot connect" in line]
    assert "Is the server running" in line  # libpq's lines, joined as one
