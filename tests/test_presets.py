"""Folder presets (``.seedance-watch.yaml``): the nearest folder wins key by key,
under each sidecar and over the config's defaults; read when a drop is taken;
checked with the sidecar's rules, a problem naming the file; ``validate`` shows
each value's origin (docs/design.md, "Folder presets")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seedance_watch import errors as E
from seedance_watch.commands.validate import Effective, validate_paths
from seedance_watch.config import BUILTIN_DEFAULTS
from seedance_watch.core.jobs import State
from seedance_watch.files.drop import examine_drop
from seedance_watch.files.presets import PRESET_NAME, preset_paths, read_presets
from seedance_watch.files.sidecar import CONFIG_DEFAULTS, check_preset
from seedance_watch.ledger.jsonl import read_jobs
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import daemon_env, files_under, fresh_bucket, make_image_bytes, run_once, write_config

PRESET = f"vertical/{PRESET_NAME}"
FAST2 = "seedance-2-0-fast"


def put(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def drop(inbox: Path, rel: str, sidecar: str, *, shade: int = 0) -> None:
    """An image drop ``rel`` (``vertical/a`` → vertical/a.jpg + vertical/a.yaml)."""
    put(inbox / f"{rel}.jpg", make_image_bytes(640, 480, color=(40 + 30 * shade, 120, 200)))
    put(inbox / f"{rel}.yaml", sidecar)


def examine(inbox: Path, rel: str, **kw: object):  # type: ignore[no-untyped-def]
    return examine_drop(
        inbox, f"{rel}.jpg", f"{rel}.yaml", defaults=BUILTIN_DEFAULTS, now=1.0, **kw
    )


def test_the_presets_of_a_folder_run_from_the_top_down() -> None:
    assert preset_paths("") == [PRESET_NAME]
    assert preset_paths(".") == [PRESET_NAME]
    assert preset_paths("a/b") == [PRESET_NAME, f"a/{PRESET_NAME}", f"a/b/{PRESET_NAME}"]


def test_the_nearest_folder_wins_key_by_key_and_the_sidecar_wins_over_all(
    tmp_path: Path,
) -> None:
    """inbox/ sets ratio and duration, inbox/vertical/ sets ratio again and priority:
    a drop in vertical/ takes vertical's ratio, the top's duration, vertical's
    priority; its sidecar's own duration wins over both; the config's defaults
    fill what none set.  Each value says where it came from."""
    put(tmp_path / PRESET_NAME, 'ratio: "16:9"\nduration: 10\nwatermark: true\n')
    put(tmp_path / PRESET, 'ratio: "9:16"\npriority: 5\n')
    drop(tmp_path, "vertical/a", "prompt: a\n")
    drop(tmp_path, "vertical/b", "prompt: b\nduration: 3\npriority: -1\n", shade=1)
    drop(tmp_path, "top", "prompt: top\n", shade=2)

    a = examine(tmp_path, "vertical/a")
    assert a.error is None, a.error
    assert a.job.options == {
        "resolution": "720p",
        "ratio": "9:16",
        "duration": 10,
        "camerafixed": False,
        "watermark": True,
    }
    assert a.job.priority == 5
    b = examine(tmp_path, "vertical/b")
    assert b.error is None and b.job.options["duration"] == 3 and b.job.priority == -1
    assert b.job.options["ratio"] == "9:16"
    top = examine(tmp_path, "top")
    assert top.error is None and top.job.options["ratio"] == "16:9" and top.job.priority == 0
    # Different options are different requests: no dedupe between them.
    assert len({a.job.content_key, b.job.content_key, top.job.content_key}) == 3

    drops, problems = [], []

    def passed(effective: Effective) -> None:
        drops.append(effective)

    validate_paths([tmp_path], defaults=BUILTIN_DEFAULTS, passed=passed)
    origins = {d.path.name: dict(d.request.origins) for d in drops}
    assert origins["a.jpg"] == {
        "model": "gateway.model",
        "resolution": CONFIG_DEFAULTS,
        "ratio": PRESET,
        "duration": PRESET_NAME,
        "camerafixed": CONFIG_DEFAULTS,
        "watermark": PRESET_NAME,
        "priority": PRESET,
    }
    assert origins["b.jpg"]["duration"] == "sidecar" and origins["b.jpg"]["priority"] == "sidecar"
    assert not problems


def test_an_edited_preset_applies_to_the_next_drop(tmp_path: Path) -> None:
    """Presets are read when a drop is taken, not at start."""
    drop(tmp_path, "vertical/a", "prompt: a\n")
    assert "ratio" not in examine(tmp_path, "vertical/a").job.options
    put(tmp_path / PRESET, 'ratio: "9:16"\n')
    assert examine(tmp_path, "vertical/a").job.options["ratio"] == "9:16"
    put(tmp_path / PRESET, 'ratio: "1:1"\n')
    assert examine(tmp_path, "vertical/a").job.options["ratio"] == "1:1"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("prompt: everyone\n", "prompt: belongs in each drop's sidecar, not in a folder preset"),
        ("mode: text\n", "mode: belongs in each drop's sidecar"),
        ("resolutoin: 720p\n", "unknown key 'resolutoin' (did you mean 'resolution'?)"),
        ('ratio: "5:4"\n', "ratio:"),
        ("duration: '5'\n", "duration:"),
        ("priority: 5000\n", "priority: 5000 is not allowed"),
        ("- a list\n", "the preset must be a YAML mapping"),
        ("ratio: [\n", "YAML syntax error"),
    ],
)
def test_a_bad_preset_fails_the_drops_below_it_naming_the_file(
    tmp_path: Path, content: str, words: str
) -> None:
    """Checked with the sidecar's rules: the drop fails as invalid_sidecar, and the
    message starts with the preset's path (relative to the inbox)."""
    put(tmp_path / PRESET, content)
    drop(tmp_path, "vertical/a", "prompt: a\n")
    error = examine(tmp_path, "vertical/a").error
    assert isinstance(error, E.InvalidSidecar), error
    assert error.message.startswith(f"{PRESET}: "), error.message
    assert words in error.message
    assert error.hint is not None
    # A drop beside the folder, not below it, is not governed by it.
    drop(tmp_path, "other", "prompt: o\n", shade=3)
    assert examine(tmp_path, "other").error is None


def test_an_empty_preset_sets_nothing(tmp_path: Path) -> None:
    put(tmp_path / PRESET, "")
    drop(tmp_path, "vertical/a", "prompt: a\n")
    assert examine(tmp_path, "vertical/a").error is None
    assert check_preset(b"# nothing yet\n", "p")[0] is not None


def test_a_preset_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    put(tmp_path / "elsewhere.yaml", 'ratio: "9:16"\n')
    (inbox / "vertical").mkdir(parents=True)
    (inbox / PRESET).symlink_to(tmp_path / "elsewhere.yaml")
    drop(inbox, "vertical/a", "prompt: a\n")
    error = examine(inbox, "vertical/a").error
    assert isinstance(error, E.InvalidSidecar) and "symbolic link" in error.message
    with pytest.raises(E.InvalidSidecar, match="not followed"):
        read_presets(inbox, "vertical")


def test_a_preset_model_must_offer_the_drop_and_its_options(tmp_path: Path) -> None:
    """A preset's model is the drop's unless its sidecar names one; a preset option
    that model does not take fails the drop naming the preset, but when the sidecar
    chose the model, a preset option it does not take is left out (the sidecar wins)."""
    put(tmp_path / PRESET, f"model: {FAST2}\ngenerate_audio: true\n")
    drop(tmp_path, "vertical/a", "prompt: a\n")
    a = examine(tmp_path, "vertical/a")
    assert a.error is None and a.job.model == FAST2 and a.job.options["generate_audio"] is True
    # The sidecar picks a Seedance 1.0 model: generate_audio (2 only) is left out.
    drop(tmp_path, "vertical/b", "prompt: b\nmodel: seedance-1-0-pro-fast-251015\n", shade=1)
    b = examine(tmp_path, "vertical/b")
    assert b.error is None and "generate_audio" not in b.job.options
    # A preset option the preset's own model refuses fails the drops, naming the file.
    put(tmp_path / PRESET, f"model: {FAST2}\ncamerafixed: true\n")
    error = examine(tmp_path, "vertical/a").error
    assert isinstance(error, E.InvalidSidecar) and error.key == "camerafixed"
    assert error.message.startswith(f"{PRESET}: camerafixed:"), error.message
    # A retired model in a preset is refused at intake, naming the preset.
    put(tmp_path / PRESET, "model: seedance-1-0-lite-i2v-250428\n")
    error = examine(tmp_path, "vertical/a").error
    assert isinstance(error, E.InvalidSidecar) and error.message.startswith(f"{PRESET}: model:")


def test_validate_shows_both_origins_the_preset_and_the_sidecar(tmp_path: Path) -> None:
    """The issue's "done when": inbox/vertical/.seedance-watch.yaml with ratio 9:16 makes
    a drop below it vertical, a sidecar's own ratio still wins, and ``validate`` (the
    command, with the config naming the inbox) shows both origins."""
    inbox = tmp_path / "inbox"
    put(inbox / PRESET, 'ratio: "9:16"\n')
    drop(inbox, "vertical/phone", "prompt: tall\n")
    drop(inbox, "vertical/wide", 'prompt: wide\nratio: "21:9"\n', shade=1)
    config = put(tmp_path / "c.yaml", f"paths: {{inbox: {inbox}}}\nstorage: {{bucket: b}}\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seedance_watch",
            "validate",
            "--config",
            str(config),
            str(inbox / "vertical"),
        ],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    phone = next(line for line in lines if "phone.jpg: ok:" in line)
    wide = next(line for line in lines if "wide.jpg: ok:" in line)
    assert f"ratio 9:16 ({PRESET})" in phone
    assert "ratio 21:9 (sidecar)" in wide
    assert lines[-1] == "2 drop(s) checked, 0 problem(s)"


def test_the_daemon_applies_presets_end_to_end(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """``run --once``: the preset's ratio and priority reach the job and the gateway
    for the drop below it; its sidecar's ratio wins for the other; a drop under a bad
    preset fails before any upload, its report naming the preset."""
    bucket = fresh_bucket(s3_server)
    config = write_config(tmp_path, s3_server, sim, bucket=bucket)
    inbox = tmp_path / "inbox"
    put(inbox / PRESET, 'ratio: "9:16"\npriority: 7\n')
    put(inbox / f"broken/{PRESET_NAME}", "resolutoin: 1080p\n")
    drop(inbox, "vertical/phone", "prompt: tall\n")
    drop(inbox, "vertical/wide", 'prompt: wide\nratio: "21:9"\n', shade=1)
    drop(inbox, "broken/x", "prompt: x\n", shade=2)

    result, _ = run_once(config)

    assert result.exit_code == 4, result.summary
    texts = sorted(record.body["content"][0]["text"] for record in sim.submits)
    assert len(texts) == 2
    assert texts[0].startswith("tall ") and "--ratio 9:16" in texts[0]
    assert texts[1].startswith("wide ") and "--ratio 21:9" in texts[1]
    jobs = {j.source: j for j in read_jobs(tmp_path / "state").values()}
    assert jobs["vertical/phone.jpg"].priority == 7 and jobs["vertical/wide.jpg"].priority == 7
    broken = jobs["broken/x.jpg"]
    assert broken.state is State.FAILED and broken.uploads == ()
    report = json.loads((tmp_path / "failed" / "broken" / "x.error.json").read_text())
    assert report["code"] == "invalid_sidecar"
    assert report["message"].startswith(f"broken/{PRESET_NAME}: unknown key 'resolutoin'")
    # The presets stay where they are: they are not drops.
    assert sorted(files_under(inbox)) == [f"broken/{PRESET_NAME}", PRESET]
