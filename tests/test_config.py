"""Tests for the config model, its loader, env overrides and the API key."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import pytest

from seedance_watch.config import (
    Config,
    GatewayConfig,
    HealthConfig,
    PathsConfig,
    load_config,
)
from seedance_watch.core.options import GenerationOptions
from seedance_watch.errors import ConfigError
from seedance_watch.providers.keys import ApiKey, load_api_key
from seedance_watch.providers.pixazo import PROVIDER

KEYS = PROVIDER.keys

REPO = Path(__file__).resolve().parent.parent
BUCKET_ENV = {"SEEDANCE_WATCH_STORAGE__BUCKET": "b"}


def write(tmp_path: Path, text: str, name: str = "sw.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path | None, environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ)
    return info.value


# --- loading and defaults ----------------------------------------------------------------


def test_defaults_match_the_spec(tmp_path: Path) -> None:
    """A file with only a bucket yields the documented defaults."""
    cfg = load_config(write(tmp_path, "storage: {bucket: b}\n"), {})
    assert cfg.gateway == GatewayConfig()
    assert cfg.gateway.base_url == "https://gateway.pixazo.ai"
    assert (cfg.gateway.model, cfg.gateway.text_model) == (PRO_FAST, PRO_FAST)
    assert (cfg.gateway.frames_model, cfg.gateway.reference_model) == (FAST2, FAST2)
    assert (cfg.gateway.poll_interval, cfg.gateway.task_timeout) == (5, 1800)
    assert (cfg.gateway.max_in_flight, cfg.gateway.requests_per_minute) == (10, 60)
    assert (cfg.gateway.request_timeout, cfg.gateway.max_video_bytes) == (30, 2**31)
    assert cfg.gateway.strict_model is False
    s = cfg.storage
    assert (s.prefix, s.endpoint_url, s.region, s.url_mode) == (
        "seedance-watch/",
        None,
        None,
        "presigned",
    )
    assert (s.public_base_url, s.presign_expires, s.delete_after) == (None, 86400, True)
    w = cfg.watch
    assert (w.mode, w.settle_seconds, w.rescan_seconds, w.pair_timeout) == ("auto", 2, 60, 300)
    assert cfg.defaults == GenerationOptions(resolution="720p", duration=5, camerafixed=False)
    assert cfg.dedupe is True
    assert (cfg.log.format, cfg.log.level) == ("auto", "info")
    assert cfg.health.listen is None and cfg.health.address is None


def test_strict_model_is_a_strict_boolean(tmp_path: Path) -> None:
    """gateway.strict_model takes true/false (file or env), and refuses "yes" naming the key."""
    cfg = load_config(write(tmp_path, "storage: {bucket: b}\ngateway: {strict_model: true}\n"), {})
    assert cfg.gateway.strict_model is True
    env = {"SEEDANCE_WATCH_GATEWAY__STRICT_MODEL": "false"}
    assert load_config(write(tmp_path, "storage: {bucket: b}\n"), env).gateway.strict_model is False
    with pytest.raises(ConfigError, match="strict_model"):
        load_config(write(tmp_path, "storage: {bucket: b}\ngateway: {strict_model: yes}\n"), {})


I2V, T2V = "seedance-1-0-lite-i2v-250428", "seedance-1-0-lite-t2v-250428"
PRO, PRO_FAST = "seedance-1-0-pro-250528", "seedance-1-0-pro-fast-251015"
FAST2 = "seedance-2-0-fast"
SEEDANCE_2 = ["seedance-2-0", FAST2, "seedance-2-0-mini", "seedance-2-5"]


@pytest.mark.parametrize(
    ("key", "model", "kind", "takes", "use"),
    [
        ("frames_model", PRO, "first and last frame", "image to video, text to video", SEEDANCE_2),
        ("reference_model", PRO_FAST, "reference images", "image to video, text", SEEDANCE_2),
    ],
)
def test_gateway_models_must_offer_their_kind(
    tmp_path: Path, key: str, model: str, kind: str, takes: str, use: list[str]
) -> None:
    """Each kind's model key must name a model that makes that kind: a known model
    without it is refused naming the key, the model, what it takes and the models that do."""
    path = write(tmp_path, f"storage: {{bucket: b}}\ngateway: {{{key}: {model}}}\n")
    err = config_error(path, {})
    assert err.key == f"gateway.{key}"
    assert f"gateway.{key}: {model} does not offer {kind} (it takes {takes}" in str(err)
    assert str(err).endswith("models that do: " + ", ".join(use))
    assert str(err).startswith(f"config file {path}: ")
    env = {**BUCKET_ENV, f"SEEDANCE_WATCH_GATEWAY__{key.upper()}": model}
    err = config_error(None, env)
    assert err.key == f"gateway.{key}"
    assert f"environment variable SEEDANCE_WATCH_GATEWAY__{key.upper()}" in str(err)


@pytest.mark.parametrize(
    ("key", "model"),
    [
        ("model", I2V),
        ("text_model", T2V),
        ("frames_model", "seedance-1-5-pro-251215"),
        ("reference_model", "seedance-1-5-pro-251215"),
    ],
)
def test_a_config_naming_a_retired_model_is_refused_naming_the_replacement(
    tmp_path: Path, key: str, model: str
) -> None:
    """A model key naming a model that was switched off is a config error (exit 2)
    naming the key, the date and the replacement."""
    path = write(tmp_path, f"storage: {{bucket: b}}\ngateway: {{{key}: {model}}}\n")
    err = config_error(path, {})
    assert err.key == f"gateway.{key}"
    assert f"gateway.{key}: {model} was switched off on 2026-" in str(err)
    replacement = "seedance-2-5" if "1-5" in model else PRO_FAST
    assert f"; use {replacement}" in str(err)


@pytest.mark.parametrize("key", ["frames_model", "reference_model"])
def test_an_unknown_frames_or_reference_model_is_a_config_error(tmp_path: Path, key: str) -> None:
    """Frames and reference drops exist only at the table's Seedance 2 endpoints: a model
    the daemon does not know there is refused at start, naming the models that do."""
    path = write(tmp_path, f"storage: {{bucket: b}}\ngateway: {{{key}: seedance-3-0}}\n")
    err = config_error(path, {})
    assert err.key == f"gateway.{key}"
    assert "seedance-3-0 is not a model the daemon knows" in str(err)
    assert str(err).endswith(", ".join(SEEDANCE_2))


@pytest.mark.parametrize(
    ("model", "text_model"),
    [(PRO_FAST, PRO_FAST), (PRO, PRO), (FAST2, "seedance-2-5"), ("seedance-3-0", "seedance-3-t")],
)
def test_gateway_models_that_offer_their_kind_or_are_unknown_load(
    model: str, text_model: str
) -> None:
    """Known live models offering their kind load (pro-fast, which has no last frame, is
    a valid gateway.model); an unknown model is left to the gateway."""
    env = {
        **BUCKET_ENV,
        "SEEDANCE_WATCH_GATEWAY__MODEL": model,
        "SEEDANCE_WATCH_GATEWAY__TEXT_MODEL": text_model,
    }
    gateway = load_config(None, env).gateway
    assert (gateway.model, gateway.text_model) == (model, text_model)


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    """Relative paths, including defaults, are absolute under the config file's folder."""
    sub = tmp_path / "etc"
    sub.mkdir()
    cfg = load_config(write(sub, "storage: {bucket: b}\npaths: {inbox: ../in}\n"), {})
    assert cfg.paths.inbox == tmp_path / "in"
    assert cfg.paths.outbox == sub / "outbox"
    assert cfg.paths.state == sub / "state"
    assert cfg.source == sub / "sw.yaml"
    assert not (sub / "outbox").exists(), "config code must not create folders"


def test_without_a_file_paths_resolve_against_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no file, relative paths resolve against the current directory."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, BUCKET_ENV)
    assert cfg.source is None
    assert cfg.paths.inbox == tmp_path / "inbox"
    assert cfg.paths.done.is_absolute()


def test_config_env_var_names_the_file(tmp_path: Path) -> None:
    """path None uses $SEEDANCE_WATCH_CONFIG, which is not itself an override."""
    path = write(tmp_path, "storage: {bucket: from-file}\n")
    cfg = load_config(None, {"SEEDANCE_WATCH_CONFIG": str(path)})
    assert cfg.storage.bucket == "from-file"
    assert cfg.source == path


def test_missing_bucket_names_storage_bucket(tmp_path: Path) -> None:
    """Without a file or a bucket, the error names storage.bucket."""
    err = config_error(None, {})
    assert err.key == "storage.bucket"
    assert "storage.bucket" in str(err)
    assert "SEEDANCE_WATCH_STORAGE__BUCKET" in str(err)


def test_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    """An empty file loads as defaults (plus env)."""
    cfg = load_config(write(tmp_path, ""), BUCKET_ENV)
    assert cfg.storage.bucket == "b"


def test_non_mapping_top_level_is_an_error(tmp_path: Path) -> None:
    """A list at the top level is rejected, naming the file."""
    path = write(tmp_path, "- a\n- b\n")
    err = config_error(path, BUCKET_ENV)
    assert str(path) in str(err) and "mapping" in str(err)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    """A missing file and broken YAML are ConfigErrors naming the file."""
    missing = tmp_path / "nope.yaml"
    assert str(missing) in str(config_error(missing, BUCKET_ENV))
    broken = write(tmp_path, "gateway: {base_url: [\n")
    err = config_error(broken, BUCKET_ENV)
    assert str(broken) in str(err) and "YAML" in str(err)


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    """A typo in a section is an error naming the key, the file and the likely key."""
    path = write(tmp_path, "storage: {bucket: b}\ngateway: {pol_interval: 3}\n")
    err = config_error(path, {})
    assert err.key == "gateway.pol_interval"
    assert str(path) in str(err)
    assert "did you mean 'gateway.poll_interval'" in str(err)


def test_unknown_top_level_key_and_source_key(tmp_path: Path) -> None:
    """Unknown sections are errors; `source` is not a key users can write."""
    err = config_error(write(tmp_path, "storage: {bucket: b}\ngatway: {}\n"), {})
    assert err.key == "gatway" and "did you mean 'gateway'" in str(err)
    err = config_error(write(tmp_path, "storage: {bucket: b}\nsource: /x\n"), {})
    assert err.key == "source"


def test_invalid_value_names_key_value_allowed_and_file(tmp_path: Path) -> None:
    """A bad value's message names the dotted key, the value, the rule and the file."""
    path = write(tmp_path, "storage: {bucket: b}\nwatch: {mode: inotify}\n")
    err = config_error(path, {})
    assert err.key == "watch.mode"
    msg = str(err)
    assert "'inotify'" in msg and "polling" in msg and str(path) in msg


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("gateway: {poll_interval: 0}", "gateway.poll_interval"),
        ("gateway: {max_in_flight: 0}", "gateway.max_in_flight"),
        ("gateway: {requests_per_minute: 1.5}", "gateway.requests_per_minute"),
        ("gateway: {base_url: 'ftp://x'}", "gateway.base_url"),
        ("storage: {bucket: b, presign_expires: 604801}", "storage.presign_expires"),
        ("storage: {bucket: ''}", "storage.bucket"),
        ("storage: {bucket: b, delete_after: 'yes'}", "storage.delete_after"),
        ("watch: {settle_seconds: -1}", "watch.settle_seconds"),
        ("defaults: {ratio: '17:9'}", "defaults.ratio"),
        ("defaults: {duration: 16}", "defaults.duration"),
        ("log: {level: trace}", "log.level"),
        ("health: {listen: 'localhost'}", "health.listen"),
        ("health: {listen: '127.0.0.1:65536'}", "health.listen"),
        ("health: {token: 'sixteen-chars-token', secure_cookie: 'yes'}", "health.secure_cookie"),
        ("dedupe: 'no'", "dedupe"),
    ],
)
def test_out_of_range_values_are_rejected(tmp_path: Path, yaml_text: str, key: str) -> None:
    """Each invalid value is a ConfigError whose key is the offending dotted key."""
    text = yaml_text if yaml_text.startswith("storage") else f"storage: {{bucket: b}}\n{yaml_text}"
    err = config_error(write(tmp_path, text + "\n"), {})
    assert err.key == key
    assert key in str(err)


def test_public_url_mode_requires_public_base_url(tmp_path: Path) -> None:
    """url_mode public without public_base_url names storage.public_base_url."""
    err = config_error(write(tmp_path, "storage: {bucket: b, url_mode: public}\n"), {})
    assert err.key == "storage.public_base_url"
    cfg = load_config(
        write(
            tmp_path,
            "storage: {bucket: b, url_mode: public, public_base_url: 'https://cdn.x/'}\n",
        ),
        {},
    )
    assert cfg.storage.public_base_url == "https://cdn.x"


def test_base_url_loses_its_trailing_slash() -> None:
    """base_url is stored without a trailing slash."""
    assert GatewayConfig(base_url="http://127.0.0.1:8080/").base_url == "http://127.0.0.1:8080"


def test_health_listen_forms() -> None:
    """host:port and [v6]:port parse; the address is (host, port)."""
    assert HealthConfig(listen="127.0.0.1:9464").address == ("127.0.0.1", 9464)
    assert HealthConfig(listen="[::1]:0").address == ("::1", 0)
    assert HealthConfig(listen="localhost:65535").address == ("localhost", 65535)


def test_paths_must_not_overlap(tmp_path: Path) -> None:
    """done/ inside the inbox, or two paths on one folder, is an error naming the key."""
    err = config_error(write(tmp_path, "storage: {bucket: b}\npaths: {done: inbox/done}\n"), {})
    assert err.key == "paths.done"
    err = config_error(write(tmp_path, "storage: {bucket: b}\npaths: {failed: ./done}\n"), {})
    assert err.key == "paths.failed"


def test_partial_defaults_add_to_builtin_defaults(tmp_path: Path) -> None:
    """defaults: {ratio: 16:9} keeps resolution/duration/camerafixed; null unsets one."""
    path = write(tmp_path, "storage: {bucket: b}\ndefaults: {ratio: 16:9, resolution: null}\n")
    cfg = load_config(path, {})
    assert cfg.defaults == GenerationOptions(ratio="16:9", duration=5, camerafixed=False)


def test_config_is_frozen(tmp_path: Path) -> None:
    """The models cannot be changed after validation."""
    cfg = load_config(None, BUCKET_ENV)
    with pytest.raises(ValueError):
        cfg.gateway.poll_interval = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        PathsConfig(inbox=Path("/a")).inbox = Path("/b")  # type: ignore[misc]


# --- environment overrides ---------------------------------------------------------------


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    """SECTION__KEY and top-level overrides are parsed as YAML 1.2 scalars."""
    path = write(tmp_path, "storage: {bucket: b}\ngateway: {max_in_flight: 3}\n")
    cfg = load_config(
        path,
        {
            "SEEDANCE_WATCH_GATEWAY__BASE_URL": "http://127.0.0.1:9/",
            "SEEDANCE_WATCH_GATEWAY__MAX_IN_FLIGHT": "10",
            "SEEDANCE_WATCH_gateway__poll_interval": "0.5",
            "SEEDANCE_WATCH_DEFAULTS__RATIO": "16:9",
            "SEEDANCE_WATCH_STORAGE__ENDPOINT_URL": "null",
            "SEEDANCE_WATCH_DEDUPE": "false",
            "SEEDANCE_WATCH_PATHS__INBOX": "drop",
            "UNRELATED": "x",
        },
    )
    assert cfg.gateway.base_url == "http://127.0.0.1:9"
    assert cfg.gateway.max_in_flight == 10
    assert cfg.gateway.poll_interval == 0.5
    assert cfg.defaults.ratio == "16:9"
    assert cfg.defaults.resolution == "720p"
    assert cfg.storage.endpoint_url is None
    assert cfg.dedupe is False
    assert cfg.paths.inbox == tmp_path / "drop"


def test_env_text_fields_keep_numeric_looking_values() -> None:
    """A bucket named 2024 from the environment stays the string "2024"."""
    cfg = load_config(None, {"SEEDANCE_WATCH_STORAGE__BUCKET": "2024"})
    assert cfg.storage.bucket == "2024"


def test_env_unknown_name_is_an_error() -> None:
    """A prefixed variable naming no key is an error naming the variable."""
    err = config_error(None, {**BUCKET_ENV, "SEEDANCE_WATCH_GATEWAY__POLL_INTERVL": "3"})
    assert "SEEDANCE_WATCH_GATEWAY__POLL_INTERVL" in str(err)
    assert "SEEDANCE_WATCH_GATEWAY__POLL_INTERVAL" in str(err)
    err = config_error(None, {**BUCKET_ENV, "SEEDANCE_WATCH_NOPE__X": "3"})
    assert "SEEDANCE_WATCH_NOPE__X" in str(err)
    err = config_error(None, {**BUCKET_ENV, "SEEDANCE_WATCH_GATEWAY": "x"})
    assert "SEEDANCE_WATCH_GATEWAY__<KEY>" in str(err)


def test_env_invalid_value_names_the_variable() -> None:
    """A bad override's message names the variable, the key and the value."""
    err = config_error(None, {**BUCKET_ENV, "SEEDANCE_WATCH_WATCH__MODE": "fast"})
    assert err.key == "watch.mode"
    assert "SEEDANCE_WATCH_WATCH__MODE" in str(err) and "'fast'" in str(err)


# --- cluster -------------------------------------------------------------------------------


def test_cluster_defaults_to_one_host_on_the_json_lines_ledger() -> None:
    """No cluster section: no database, the host's own name, a 30 s lease."""
    cluster = load_config(None, BUCKET_ENV).cluster
    assert (cluster.database, cluster.name, cluster.lease_seconds) == (None, None, 30.0)


def test_cluster_database_comes_from_the_environment(tmp_path: Path) -> None:
    """SEEDANCE_WATCH_CLUSTER__DATABASE sets cluster.database over the file."""
    path = write(tmp_path, "storage: {bucket: b}\ncluster: {database: null, name: a}\n")
    env = {"SEEDANCE_WATCH_CLUSTER__DATABASE": "postgresql://seedance@db.example.net/sw"}
    cluster = load_config(path, env).cluster
    assert cluster.database == "postgresql://seedance@db.example.net/sw"
    assert cluster.name == "a"


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("lease_seconds", "0", "greater than 0"),
        ("lease_seconds", "-5", "greater than 0"),
        ("lease_seconds", ".nan", "finite"),
        ("database", "mysql://db/sw", "must be a postgresql:// URL"),
        ("database", "db.example.net", "must be a postgresql:// URL"),
        ("name", '"a\\tb"', "printable"),
        ("name", '""', "at least 1 character"),
    ],
)
def test_cluster_values_are_checked(key: str, value: str, needle: str) -> None:
    """A lease of zero or less, a database that is not a postgresql:// URL, a name that
    is empty or not printable: a ConfigError naming the key."""
    error = config_error(None, {**BUCKET_ENV, f"SEEDANCE_WATCH_CLUSTER__{key.upper()}": value})
    assert error.key == f"cluster.{key}"
    assert needle in error.message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://seedance:hunter2-secret@db.example.net/sw",
        "postgres://db.example.net/sw?sslmode=require&password=hunter2-secret",
    ],
)
def test_a_password_in_cluster_database_is_refused_without_being_shown(
    tmp_path: Path, url: str
) -> None:
    """A password in the config's URL is refused, naming libpq's ways and the
    credential file; the message never quotes the URL or the password."""
    path = write(tmp_path, f"storage: {{bucket: b}}\ncluster: {{database: '{url}'}}\n")
    for error in (
        config_error(path, {}),
        config_error(None, {**BUCKET_ENV, "SEEDANCE_WATCH_CLUSTER__DATABASE": url}),
    ):
        assert error.key == "cluster.database"
        assert "PGPASSWORD" in error.message and "database-url" in error.message
        assert "hunter2" not in error.message


def test_a_wrong_type_of_cluster_database_is_not_echoed(tmp_path: Path) -> None:
    """Even a value of the wrong type is not quoted back: it may carry a password."""
    path = write(
        tmp_path, "storage: {bucket: b}\ncluster: {database: [postgresql://u:pw-secret@h/d]}\n"
    )
    error = config_error(path, {})
    assert error.key == "cluster.database" and "pw-secret" not in error.message


# --- shipped files -----------------------------------------------------------------------


def test_example_config_loads_and_documents_every_key(tmp_path: Path) -> None:
    """config/seedance-watch.yaml loads as is and mentions every key of every section."""
    example = REPO / "config" / "seedance-watch.yaml"
    cfg = load_config(example, {})
    assert cfg.storage.bucket == "my-bucket"
    assert cfg.paths.inbox == example.parent / "inbox"
    text = example.read_text()
    for section, model in (
        ("paths", cfg.paths),
        ("gateway", cfg.gateway),
        ("storage", cfg.storage),
        ("watch", cfg.watch),
        ("defaults", cfg.defaults),
        ("log", cfg.log),
        ("health", cfg.health),
        ("cluster", cfg.cluster),
    ):
        assert f"\n{section}:" in text
        for key in type(model).model_fields:
            assert f"{key}:" in text, f"{section}.{key} is not documented"
    assert "\ndedupe:" in text
    for source in ("CREDENTIALS_DIRECTORY", "PIXAZO_API_KEY_FILE", "PIXAZO_API_KEY", ".pixazo"):
        assert source in text
    assert cfg.model_dump(exclude={"source", "paths", "storage"}) == Config(
        storage={"bucket": "my-bucket"}  # type: ignore[arg-type]
    ).model_dump(exclude={"source", "paths", "storage"})


EXAMPLES = sorted(p.name for p in (REPO / "config" / "examples").glob("*.yaml"))
PRESETS = sorted((REPO / "config" / "examples" / "presets").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_example_folder_presets_are_valid(path: Path) -> None:
    """Each example folder preset passes the daemon's preset checks and sets something."""
    from seedance_watch.files.sidecar import check_preset

    preset, problems = check_preset(path.read_bytes(), path.name, strict_model=True)
    assert problems == [] and preset is not None
    assert preset.options.set_options() or preset.model or preset.priority is not None


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_sidecars_are_valid(name: str) -> None:
    """Each example sidecar passes the daemon's own checks and builds a request with the
    default models (a kind and options its model takes; ratio stays a string)."""
    from seedance_watch.files.sidecar import build_request, parse_sidecar

    sidecar = parse_sidecar((REPO / "config" / "examples" / name).read_bytes(), strict_model=True)
    request = build_request(sidecar, defaults=Config(storage={"bucket": "b"}).defaults)  # type: ignore[arg-type]
    expected = {
        "beach.yaml": ("image", "16:9"),
        "portrait.yaml": ("image", "9:16"),
        "dusk.yaml": ("frames", None),
        "lighthouse.yaml": ("text", "16:9"),
        "waves.yaml": ("image", "16:9"),
        "sneaker.yaml": ("reference", None),
        "minimal.yaml": ("image", None),
    }
    assert (request.kind, request.options.ratio) == expected[name]
    if name == "waves.yaml":  # the Seedance 2 image drop of the README
        assert request.family == "2" and request.options.generate_audio is False


def test_an_exposed_listen_without_a_token_names_the_address(tmp_path: Path) -> None:
    """A non-loopback health.listen without a token is refused with the address itself in
    the message (not a template placeholder)."""
    path = write(tmp_path, "storage: {bucket: b}\nhealth: {listen: '0.0.0.0:9464'}\n")
    err = config_error(path, {})
    assert err.key == "health.token"
    assert "health.listen '0.0.0.0:9464' is not a loopback address; set health.token" in str(err)
    assert "{" not in str(err)


def test_secure_cookie_is_validated_and_needs_a_token(tmp_path: Path) -> None:
    """``health.secure_cookie`` (behind a TLS proxy) is a boolean, false by default, from
    the file or the environment; true without ``health.token`` is refused naming it."""
    base = "storage: {bucket: b}\n"
    assert load_config(write(tmp_path, base), {}).health.secure_cookie is False
    token = "health: {token: 'sixteen-chars-token', secure_cookie: true}\n"
    assert load_config(write(tmp_path, base + token), {}).health.secure_cookie is True
    env = {"SEEDANCE_WATCH_HEALTH__SECURE_COOKIE": "true"}
    err = config_error(write(tmp_path, base), env)
    assert err.key == "health.secure_cookie"
    assert "health.secure_cookie is true but health.token is not set" in str(err)
    both = {**env, "SEEDANCE_WATCH_HEALTH__TOKEN": "sixteen-chars-token"}
    assert load_config(write(tmp_path, base), both).health.secure_cookie is True


# --- the API key -------------------------------------------------------------------------

KEY = "pk-CANARY-0123456789"


def test_api_key_order(tmp_path: Path) -> None:
    """Credentials dir beats the key file, which beats the env var, which beats ~/.pixazo."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pixazo-api-key").write_text("from-creds\n")
    keyfile = write(tmp_path, "  from-file \n", "key")
    home = tmp_path / "home"
    (home / ".pixazo").mkdir(parents=True)
    (home / ".pixazo" / "api-key").write_text("from-home")
    env = {
        "CREDENTIALS_DIRECTORY": str(creds),
        "PIXAZO_API_KEY_FILE": str(keyfile),
        "PIXAZO_API_KEY": "from-env",
    }
    key = load_api_key(env, KEYS, home=home)
    assert (key.reveal(), key.source) == ("from-creds", "$CREDENTIALS_DIRECTORY/pixazo-api-key")
    (creds / "pixazo-api-key").unlink()
    key = load_api_key(env, KEYS, home=home)
    assert key.reveal() == "from-file" and key.source == f"PIXAZO_API_KEY_FILE ({keyfile})"
    del env["PIXAZO_API_KEY_FILE"]
    assert load_api_key(env, KEYS, home=home).source == "PIXAZO_API_KEY"
    del env["PIXAZO_API_KEY"]
    key = load_api_key(env, KEYS, home=home)
    assert (key.reveal(), key.source) == ("from-home", "~/.pixazo/api-key")


def test_no_api_key_names_all_four_sources(tmp_path: Path) -> None:
    """Nothing found: the error lists every place looked at."""
    with pytest.raises(ConfigError) as info:
        load_api_key({}, KEYS, home=tmp_path)
    msg = str(info.value)
    for source in ("CREDENTIALS_DIRECTORY", "PIXAZO_API_KEY_FILE", "PIXAZO_API_KEY", ".pixazo"):
        assert source in msg


def test_bad_api_key_sources(tmp_path: Path) -> None:
    """An empty key, a missing named file or an unreadable file say which source."""
    with pytest.raises(ConfigError, match="PIXAZO_API_KEY is empty"):
        load_api_key({"PIXAZO_API_KEY": "  "}, KEYS, home=tmp_path)
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match="PIXAZO_API_KEY_FILE"):
        load_api_key({"PIXAZO_API_KEY_FILE": str(missing)}, KEYS, home=tmp_path)
    empty = write(tmp_path, "\n", "empty")
    with pytest.raises(ConfigError, match="empty"):
        load_api_key({"PIXAZO_API_KEY_FILE": str(empty)}, KEYS, home=tmp_path)
    with pytest.raises(ConfigError, match="PIXAZO_API_KEY_FILE"):
        load_api_key({"PIXAZO_API_KEY_FILE": str(tmp_path)}, KEYS, home=tmp_path)  # a directory
    if os.geteuid() != 0:  # root reads anything
        locked = write(tmp_path, KEY, "locked")
        locked.chmod(0)
        with pytest.raises(ConfigError, match="cannot be read"):
            load_api_key({"PIXAZO_API_KEY_FILE": str(locked)}, KEYS, home=tmp_path)


def test_api_key_with_inner_whitespace_is_rejected_without_showing_it(tmp_path: Path) -> None:
    """A key that would break the header is refused, and the message omits it."""
    with pytest.raises(ConfigError) as info:
        load_api_key({"PIXAZO_API_KEY": "abc\ndef-secret"}, KEYS, home=tmp_path)
    assert "def-secret" not in str(info.value)


def test_api_key_is_masked_and_not_picklable() -> None:
    """repr/str never show the key; pickling refuses; copies are the same object."""
    key = ApiKey(KEY, "PIXAZO_API_KEY")
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert KEY not in text
    assert repr(key) == "ApiKey(source='PIXAZO_API_KEY', value='***')"
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert copy.deepcopy(key) is key
    assert key.reveal() == KEY


def test_api_key_never_in_error_messages(tmp_path: Path) -> None:
    """No ConfigError about a key source contains the key itself."""
    bad = write(tmp_path, KEY + " trailing-part", "bad")
    with pytest.raises(ConfigError) as info:
        load_api_key({"PIXAZO_API_KEY_FILE": str(bad)}, KEYS, home=tmp_path)
    assert KEY not in str(info.value) and "trailing-part" not in str(info.value)
