"""``seedance-watch validate PATH...`` through the real CLI, as a subprocess.

That it reports exactly the daemon's codes and messages is checked beside a daemon
run in ``test_inputs.py``; here: exit codes, folders and single files, warnings,
and that it never opens a socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .bad_inputs import BAD_INPUTS, drop_bad_inputs
from .helpers import make_image_bytes, write_pair

pytestmark = pytest.mark.timeout(60)

JPEG = make_image_bytes(640, 480)

# Runs the CLI with an audit hook that kills the process the moment anything
# creates a socket or resolves a name: exit 99 means "touched the network".
NO_NETWORK = """
import os, sys
def hook(event, args):
    if event in ("socket.__new__", "socket.connect", "socket.getaddrinfo", "socket.bind"):
        os.write(2, f"NETWORK: {event} {args!r}\\n".encode())
        os._exit(99)
sys.addaudithook(hook)
from seedance_watch.cli import main
sys.exit(main(["validate", *sys.argv[1:]]))
"""


def validate(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI offline: no socket allowed, every proxy and endpoint pointing nowhere."""
    env = dict(os.environ)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env[name] = "http://127.0.0.1:9"
    env["SEEDANCE_WATCH_GATEWAY__BASE_URL"] = "http://192.0.2.1:9"
    env["SEEDANCE_WATCH_STORAGE__ENDPOINT_URL"] = "http://192.0.2.1:9"
    env["AWS_ENDPOINT_URL"] = "http://192.0.2.1:9"
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=cwd,
        check=False,
    )
    assert result.returncode != 99, result.stderr
    return result


def problems(stdout: str) -> list[tuple[str, str]]:
    """(file name, code) of each problem line (the last line is the summary; a drop that
    passes is an ``ok`` line, not a problem)."""
    out = []
    for line in stdout.splitlines()[:-1]:
        path, code, _ = line.split(": ", 2)
        if code != "ok":
            out.append((Path(path).name, code))
    return sorted(out)


def passed(stdout: str) -> list[str]:
    """The file names of the drops shown as passing (``NAME: ok: ...``)."""
    return sorted(
        Path(line.split(": ok: ", 1)[0]).name for line in stdout.splitlines() if ": ok: " in line
    )


def test_valid_folder_exits_0_and_ignores_what_the_daemon_ignores(tmp_path: Path) -> None:
    """A folder of valid pairs (in subfolders) exits 0; README files, temp names and hidden
    folders are skipped like the inbox skips them; nothing is written or moved."""
    write_pair(tmp_path / "drops", "one")
    write_pair(tmp_path / "drops" / "sub dir", "two $(x) 'é'")
    (tmp_path / "drops" / "README.md").write_text("notes")
    (tmp_path / "drops" / "three.jpg.part").write_bytes(b"half")
    write_pair(tmp_path / "drops" / ".hidden", "broken", sidecar="- not a mapping\n")
    before = sorted(p.name for p in (tmp_path / "drops").rglob("*"))

    result = validate(tmp_path / "drops")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "2 drop(s) checked, 0 problem(s)"
    assert passed(result.stdout) == ["one.jpg", "two $(x) 'é'.jpg"]
    assert len(result.stdout.splitlines()) == 3
    assert sorted(p.name for p in (tmp_path / "drops").rglob("*")) == before


def test_bad_inputs_exit_1_with_every_code(tmp_path: Path) -> None:
    """The table of bad inputs (folder given): exit 1, each drop reported with its code,
    and the good pair beside them is not reported."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    drop_bad_inputs(inbox, tmp_path / "outside")
    write_pair(inbox, "good")

    result = validate("--strict", inbox)

    assert result.returncode == 1
    reported = problems(result.stdout)
    for case in BAD_INPUTS:
        stem = Path(next(iter(case.files))).stem
        codes = {code for name, code in reported if Path(name).stem == stem}
        assert codes == {case.code}, (case.id, reported)
    assert not [name for name, _ in reported if name.startswith("good")]
    checked = len(BAD_INPUTS) + 1  # every drop, whole or not, and the good pair
    assert (
        result.stdout.splitlines()[-1] == f"{checked} drop(s) checked, {len(reported)} problem(s)"
    )


def test_single_files_are_checked_with_their_partner(tmp_path: Path) -> None:
    """Files named alone (as a pre-commit hook passes them): a sidecar is checked with the
    image beside it, a lone image is missing_sidecar, a named non-input is not_an_input,
    a symlink is unsafe_path; the message names the key and value."""
    write_pair(tmp_path, "ok")
    write_pair(tmp_path, "typo", sidecar="prompt: x\nduraton: 5\n")
    (tmp_path / "alone.jpg").write_bytes(JPEG)
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "ok.yaml")

    good = validate("ok.yaml", "ok.jpg", cwd=tmp_path)
    assert good.returncode == 0 and good.stdout.endswith("1 drop(s) checked, 0 problem(s)\n")

    bad = validate("typo.yaml", "alone.jpg", "notes.txt", "link.yaml", cwd=tmp_path)
    assert bad.returncode == 1
    assert problems(bad.stdout) == [
        ("alone.jpg", "missing_sidecar"),
        ("link.yaml", "unsafe_path"),
        ("notes.txt", "not_an_input"),
        ("typo.yaml", "invalid_sidecar"),
    ]
    assert "unknown key 'duraton' (did you mean 'duration'?)" in bad.stdout


def test_unknown_model_warns_or_fails_in_strict_mode(tmp_path: Path) -> None:
    """An unknown model is a warning on stderr (exit 0), and a problem with --strict (exit 1)."""
    write_pair(tmp_path, "new", sidecar="prompt: x\nmodel: seedance-9-9\n")

    lenient = validate(tmp_path)
    assert lenient.returncode == 0
    assert "warning" in lenient.stderr and "seedance-9-9" in lenient.stderr

    strict = validate("--strict", tmp_path)
    assert strict.returncode == 1
    assert problems(strict.stdout) == [("new.yaml", "invalid_sidecar")]


def test_symlinked_folder_is_reported_not_followed(tmp_path: Path) -> None:
    """A link to a folder inside the tree is unsafe_path and its contents are not checked."""
    write_pair(tmp_path / "elsewhere", "bad", sidecar="prompt: ''\n")
    (tmp_path / "drops").mkdir()
    (tmp_path / "drops" / "more").symlink_to(tmp_path / "elsewhere")

    result = validate(tmp_path / "drops")

    assert result.returncode == 1
    assert problems(result.stdout) == [("more", "unsafe_path")]


# --- kinds of drop (docs/design.md, "Pairing")
# --------------------------------------------------------------

SMALL_PNG = make_image_bytes(200, 200, fmt="PNG")


def test_frames_and_text_drops_are_checked_like_the_daemon_checks_them(tmp_path: Path) -> None:
    """A complete frames drop and a text sidecar alone are valid drops; the files a drop
    lacks or gets wrong are reported with the daemon's codes, naming the file."""
    write_pair(tmp_path, "dusk", sidecar="prompt: p\nlast_frame: dusk-end.jpg\n")
    (tmp_path / "dusk-end.jpg").write_bytes(JPEG)
    (tmp_path / "poem.yaml").write_text("prompt: a poem\nmode: text\n")
    good = validate(tmp_path)
    assert good.returncode == 0, good.stdout
    assert good.stdout.endswith("2 drop(s) checked, 0 problem(s)\n")

    write_pair(tmp_path, "late", sidecar="prompt: p\nlast_frame: never.png\n")
    write_pair(tmp_path, "both", sidecar="prompt: p\nmode: text\n")
    write_pair(tmp_path, "tiny", sidecar="prompt: p\nlast_frame: tiny-end.png\n")
    (tmp_path / "tiny-end.png").write_bytes(SMALL_PNG)
    write_pair(tmp_path, "up", sidecar="prompt: p\nlast_frame: ../up-end.png\n")
    (tmp_path / "words.yaml").write_text(
        "prompt: p\nmode: text\nmodel: seedance-1-0-lite-i2v-250428\n"
    )
    bad = validate(tmp_path)
    assert bad.returncode == 1
    assert problems(bad.stdout) == [
        ("both.yaml", "invalid_sidecar"),
        ("late.yaml", "missing_image"),
        ("tiny-end.png", "invalid_image"),
        ("up.yaml", "invalid_sidecar"),
        ("words.yaml", "invalid_sidecar"),
    ]
    lines = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line for line in bad.stdout.splitlines()}
    assert "never.png" in lines["late.yaml"]
    assert "both.jpg" in lines["both.yaml"] and "mode: text" in lines["both.yaml"]
    assert "last frame tiny-end.png" in lines["tiny-end.png"]
    assert "seedance-1-0-lite-i2v-250428" in lines["words.yaml"]


def test_a_file_named_alone_is_checked_with_the_rest_of_its_drop(tmp_path: Path) -> None:
    """Naming the end image (or the sidecar) checks the whole frames drop, not an orphan."""
    write_pair(tmp_path, "dusk", sidecar="prompt: p\nlast_frame: dusk-end.jpg\n")
    (tmp_path / "dusk-end.jpg").write_bytes(JPEG)
    for named in ("dusk-end.jpg", "dusk.yaml", "dusk.jpg"):
        result = validate(named, cwd=tmp_path)
        assert result.returncode == 0, (named, result.stdout)
        assert result.stdout.endswith("1 drop(s) checked, 0 problem(s)\n"), named


def reference_drop(
    folder: Path, stem: str, *refs: str, present: tuple[str, ...] | None = None
) -> None:
    """``stem.yaml`` listing ``refs``; the images in ``present`` (default: all) are written."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.yaml").write_text(f"prompt: p\nreferences: [{', '.join(refs)}]\n")
    for name in refs if present is None else present:
        (folder / name).write_bytes(
            make_image_bytes(640, 480, "PNG" if name.endswith(".png") else "JPEG")
        )


def test_reference_drops_are_paired_and_checked_like_the_daemon_does(tmp_path: Path) -> None:
    """A sidecar and the images it lists are one drop; a listed image that is missing or
    bad, an image of the sidecar's own name beside it and a listed image of that name
    are reported with the daemon's codes, naming the files."""
    reference_drop(tmp_path, "ad", "shoe.jpg", "shoe-2.png", "heel.jpg")
    good = validate(tmp_path)
    assert good.returncode == 0, good.stdout
    assert good.stdout.endswith("1 drop(s) checked, 0 problem(s)\n")

    reference_drop(
        tmp_path, "late", "late-1.jpg", "never.jpg", "late-2.jpg", present=("late-1.jpg",)
    )
    reference_drop(tmp_path, "tiny", "tiny-ref.png")
    (tmp_path / "tiny-ref.png").write_bytes(SMALL_PNG)
    reference_drop(tmp_path, "both", "both-ref.jpg")
    (tmp_path / "both.jpg").write_bytes(JPEG)
    reference_drop(tmp_path, "self", "self.jpg", "self-ref.jpg")
    bad = validate(tmp_path)
    assert bad.returncode == 1
    assert problems(bad.stdout) == [
        ("both.yaml", "invalid_sidecar"),
        ("late.yaml", "missing_image"),
        ("self.yaml", "invalid_sidecar"),
        ("tiny-ref.png", "invalid_image"),
    ]
    lines = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line for line in bad.stdout.splitlines()}
    assert "never.jpg, late-2.jpg" in lines["late.yaml"]
    assert "both.jpg" in lines["both.yaml"] and "references" in lines["both.yaml"]
    assert "self.jpg" in lines["self.yaml"]
    assert "reference image tiny-ref.png" in lines["tiny-ref.png"]
    # The listed images are never drops of their own (no missing_sidecar for them).
    assert "missing_sidecar" not in bad.stdout


def test_a_reference_image_named_alone_is_checked_with_its_whole_drop(tmp_path: Path) -> None:
    """Naming one listed image (or the sidecar) checks the sidecar and every image it
    lists, not an orphan nor a drop missing its other images."""
    reference_drop(tmp_path, "ad", "b.jpg", "a.jpg", "c.jpg")
    for named in ("c.jpg", "ad.yaml", "a.jpg"):
        result = validate(named, cwd=tmp_path)
        assert result.returncode == 0, (named, result.stdout)
        assert result.stdout.endswith("1 drop(s) checked, 0 problem(s)\n"), named


def test_without_a_config_validate_checks_with_the_configs_own_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --config: the drops are checked against the defaults and models of a config that
    sets none (the config module's own, not a copy of them), as the daemon would."""
    from seedance_watch.cli import main
    from seedance_watch.commands import validate as validate_module
    from seedance_watch.config import Config

    seen: dict[str, object] = {}

    def capture(paths: object, **kwargs: object) -> tuple[int, list[object]]:
        seen.update(kwargs)
        return 0, []

    monkeypatch.setattr(validate_module, "validate_paths", capture)
    assert main(["validate", str(tmp_path)]) == 0
    unset = Config.model_validate({"storage": {"bucket": "b"}})
    assert callable(seen.pop("passed"))
    assert seen == {
        "defaults": unset.defaults,
        "models": unset.gateway.models,
        "strict_model": False,
        "inbox": None,  # no config: presets start at the folder given
    }


def test_a_lone_sidecar_is_read_too_and_said_offline(tmp_path: Path) -> None:
    """A sidecar with no image beside it: validate says so without a timeout (offline
    there is no waiting), reports the bad key inside it as well, and counts one drop."""
    (tmp_path / "alone.yaml").write_text("prompt: x\nresolutoin: 720p\n")
    result = validate(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(
        "missing_image: no image named alone.* beside the sidecar alone.yaml" in line
        for line in lines
    ), lines
    assert any("invalid_sidecar: unknown key 'resolutoin'" in line for line in lines), lines
    assert lines[-1] == "1 drop(s) checked, 2 problem(s)"
