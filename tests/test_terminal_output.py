"""What the commands print never steers a terminal: names, prompts and messages with
control characters (escape sequences, newlines, C1, bidi overrides, bytes that are not
UTF-8) are shown as escapes, in ``status``, ``retry``, ``costs``, ``validate``,
``health`` and the error lines (hardening issue, third round, item 8)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from seedance_watch.cli import main
from seedance_watch.commands.terminal import printable
from seedance_watch.config import Config
from seedance_watch.core.jobs import Job, State
from seedance_watch.ledger.jsonl import Ledger
from seedance_watch.service.http import HealthServer, PageSources
from seedance_watch.service.metrics import Metrics

from .helpers import make_image_bytes

pytestmark = pytest.mark.timeout(60)

#: Set the window title, clear the screen, move the cursor: what a hostile name holds.
EVIL = "evil\x1b]0;pwned\x07\x1b[2J\x1b[H"
SHOWN = "evil\\x1b]0;pwned\\x07\\x1b[2J\\x1b[H"
#: Anything a terminal acts on: C0 but the line breaks the command itself prints, DEL,
#: C1 (``\x9b`` is a one-byte CSI), bidi overrides, lone surrogates.
STEERING = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("beach.jpg", "beach.jpg"),
        ("café ☕ 👩‍💻.jpg", "café ☕ 👩‍💻.jpg"),  # printable text (a ZWJ emoji too) stays
        (EVIL, SHOWN),
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("csi\x9b31m del\x7f nul\x00", "csi\\x9b31m del\\x7f nul\\x00"),
        ("gpj.\u202eexe", "gpj.\\u202eexe"),  # right-to-left override: shows "exe.jpg"
        ("latin1-\udce9t\udcff.jpg", "latin1-\\xe9t\\xff.jpg"),  # bytes that are not UTF-8
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
        ("sep\u2028line", "sep\\u2028line"),
    ],
)
def test_printable_escapes_what_steers_a_terminal_and_keeps_the_rest(text: str, shown: str) -> None:
    """Control characters, bidi overrides, separators and surrogates become escapes
    naming what the text holds (an undecodable byte as that byte); the rest stays."""
    assert printable(text) == shown
    assert not STEERING.search(printable(text))


def _config_file(root: Path, extra: str = "") -> Path:
    for name in ("inbox", "outbox", "done", "failed", "state"):
        (root / name).mkdir(exist_ok=True)
    path = root / "seedance-watch.yaml"
    path.write_text(
        "paths: {inbox: ./inbox, outbox: ./outbox, done: ./done, failed: ./failed, "
        f"state: ./state}}\nstorage: {{bucket: b}}\n{extra}",
        encoding="utf-8",
    )
    return path


def _failed_job(job_id: str, source: str, message: str, **fields: object) -> Job:
    now = time.time()
    stem = source.rsplit(".", 1)[0]
    return Job(
        job_id=job_id,
        state=State.FAILED,
        source=source,
        sidecar=f"{stem}.yaml",
        created_at=now - 60,
        updated_at=now - 30,
        error={"code": "task_failed", "message": message, "stage": "submitted"},
        moved_to=((source, f"failed/{source}"), (f"{stem}.yaml", f"failed/{stem}.yaml")),
        **fields,  # type: ignore[arg-type]
    )


def _assert_clean(text: str) -> None:
    assert not STEERING.search(text), repr(text)


def test_status_shows_hostile_names_and_messages_as_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name that would retitle and clear the terminal, a message with a newline (a
    forged line) and a one-byte CSI, and a name that is not UTF-8 are printed escaped,
    one line per job."""
    config = _config_file(tmp_path)
    with Ledger.open(tmp_path / "state") as ledger:
        ledger.put(_failed_job("a" * 16, f"{EVIL}.jpg", "refused\nb" * 2 + "\x9b31m"))
        ledger.put(_failed_job("b" * 16, "caf\udce9.jpg", "plain"))
    capsys.readouterr()  # the ledger's own log lines
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    _assert_clean(out)
    lines = out.splitlines()
    assert len(lines) == 3  # the counts, then one line per job: no forged line
    assert f"{SHOWN}.jpg" in out
    assert "refused\\nbrefused\\nb\\x9b31m" in out
    assert "caf\\xe9.jpg" in out


def test_retry_prints_moved_names_and_refusals_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``retry`` names the files it moved back, and the ids it refused, escaped."""
    config = _config_file(tmp_path)
    (tmp_path / "failed" / f"{EVIL}.jpg").write_bytes(b"x")
    (tmp_path / "failed" / f"{EVIL}.yaml").write_text("prompt: p\n")
    with Ledger.open(tmp_path / "state") as ledger:
        ledger.put(_failed_job("c" * 16, f"{EVIL}.jpg", "m"))
    capsys.readouterr()
    assert (
        main(["retry", "--config", str(config), "c" * 16, "\x1b[2Jnope"]) == 1
    )  # one refused, one moved: exit 1
    captured = capsys.readouterr()
    _assert_clean(captured.out + captured.err)
    assert f"back in the inbox as {SHOWN}.jpg, {SHOWN}.yaml" in captured.out
    assert "\\x1b[2Jnope: not retried: no such job in the ledger" in captured.err
    assert (tmp_path / "inbox" / f"{EVIL}.jpg").exists()  # the file itself keeps its name


def test_costs_shows_a_hostile_model_name_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model name from a sidecar (kept when not strict) is printed escaped by ``costs``."""
    config = _config_file(tmp_path)
    now = time.time()
    with Ledger.open(tmp_path / "state") as ledger:
        ledger.put(
            _failed_job(
                "d" * 16,
                "m.jpg",
                "m",
                model="m\x1b[31mRED",
                intent_at=now - 40,
                cost={"cents": 20, "per": "generation", "rate": "0.20"},
            )
        )
    capsys.readouterr()
    assert main(["costs", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    _assert_clean(out)
    assert "m\\x1b[31mRED" in out


def test_validate_prints_a_hostile_file_name_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``validate`` names each file it found a problem with, escaped."""
    folder = tmp_path / "drops"
    folder.mkdir()
    (folder / f"{EVIL}.jpg").write_bytes(make_image_bytes(100, 100))
    (folder / f"{EVIL}.yaml").write_text("prompt: p\n")
    assert main(["validate", str(folder)]) == 1
    out = capsys.readouterr().out
    _assert_clean(out)
    assert f"{SHOWN}.jpg: invalid_image:" in out


def test_state_errors_are_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error naming a file (a damaged ledger in a folder of a hostile name) is
    printed escaped."""
    state = tmp_path / f"{EVIL}-state"
    state.mkdir()
    (state / "ledger-00000001.jsonl").write_text("damaged\nalso damaged\n")
    config = _config_file(tmp_path)
    # In YAML's double quotes \x1b is an escape: the folder's name holds the real ESC.
    config.write_text(config.read_text().replace("./state", f'"{SHOWN}-state"'))
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    _assert_clean(err)
    assert f"{SHOWN}-state" in err


def test_health_prints_the_body_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``seedance-watch health`` prints /healthz's body, whose pause reasons quote the
    gateway and file names, escaped (JSON escapes C0 but not C1 or bidi overrides)."""
    config_path = _config_file(tmp_path, extra="health: {listen: '127.0.0.1:0'}\n")
    config = Config.model_validate(
        {
            "paths": {"state": str(tmp_path / "state")},
            "storage": {"bucket": "b"},
            "health": {"listen": "127.0.0.1:0"},
        }
    )
    paused = {"storage": "bucket refused \x9b2J\u202eexe.jpg"}
    server = HealthServer(
        config,
        PageSources(check=lambda: (True, {"paused": paused}), metrics=Metrics().render, jobs=list),
        webhook_path="/webhooks/pixazo",
    )
    server.start()
    try:
        config_path.write_text(
            config_path.read_text().replace("127.0.0.1:0", f"127.0.0.1:{server.address[1]}")
        )
        capsys.readouterr()
        assert main(["health", "--config", str(config_path)]) == 0
    finally:
        server.close()
    out = capsys.readouterr().out
    _assert_clean(out)
    assert "\\x9b2J\\u202eexe.jpg" in out
