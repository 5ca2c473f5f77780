#!/usr/bin/env bash
# The container smoke test: build the image with the Dockerfile and turn a drop into a
# video in it.  `make container-test`; the suite runs it (tests/test_container.py).  As root.
#
# 1. Installs podman, runc and debootstrap when they are missing (apt-get) and, when
#    /etc/containers/containers.conf is absent (or was written by this script), writes
#    what podman needs on hosts like the CI's: runc (crun refuses hybrid cgroups),
#    cgroupfs, a file events log, and ulimits equal to the current ones (root may not
#    raise them there, and podman's defaults would).
# 2. Uses the Dockerfile's base image when it is here or can be pulled; otherwise builds
#    a stand-in once with debootstrap from Debian's archive (bookworm ships Python 3.11,
#    in a venv at /usr/local as the python image has it), with the host's CA bundle and
#    pip index when pip on the host uses its own (an intercepting proxy).  It is cached
#    in podman's image store under a tag that hashes the recipe and those inputs.
# 3. Builds the image (`--format docker`: the OCI format drops HEALTHCHECK), the base
#    swapped through the PYTHON_IMAGE build argument only.
# 4. Starts the project's simulator and S3 emulator on the host's loopback (this
#    checkout's code, $PYTHON's packages) and the container with --network host, as the
#    Dockerfile's header runs it, and checks: a folder it cannot write stops it with the
#    chown that fixes it (exit 2); the HEALTHCHECK reports healthy; a dropped pair
#    becomes an mp4 (an ftyp box) in the outbox, every output owned by uid 10001 with
#    mode 0640; a token moves the page to 0.0.0.0; `costs` and `models` run through the
#    entrypoint and no subcommand is shadowed by a program in the image; `podman stop`
#    (SIGTERM) exits 0.
#
# Environment: PYTHON (default .venv/bin/python, with the demo extra),
# SMOKE_BASE_IMAGE (use this base instead), SMOKE_CACHE (default
# /var/cache/seedance-watch-ci, scratch space for the stand-in base),
# SMOKE_SIMULATOR_ARGS (extra simulator flags, e.g. --fail-task-rate 1 to see it fail).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CACHE=${SMOKE_CACHE:-/var/cache/seedance-watch-ci}
IMAGE=localhost/seedance-watch:smoke
NAME=seedance-watch-smoke-$$
STARTED=$SECONDS

step() { printf '[container-test %3ds] %s\n' "$((SECONDS - STARTED))" "$*"; }
fail() {
    printf '[container-test %3ds] FAILED: %s\n' "$((SECONDS - STARTED))" "$*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    fail "run as root (podman builds and runs the image as root here)"
fi
if ! "$PYTHON" -c 'import moto, av, PIL' 2>/dev/null; then
    fail "$PYTHON lacks the demo extra (moto, av, Pillow): make container-test sets it up"
fi

# Without systemd podman cannot schedule HEALTHCHECKs and says so at every container
# start and removal; `podman healthcheck run` runs them all the same.  Keep the rest.
podman() {
    local status=0
    {
        command podman "$@" 2>&1 1>&3 3>&- |
            { grep -v -e 'unable to get systemd connection' -e 'Removing timer for container' >&2 || true; }
    } 3>&1 || status=$?
    return "$status"
}

# --- 1. tools --------------------------------------------------------------------------
missing=()
for tool in podman runc debootstrap; do
    type -P "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

CONF=/etc/containers/containers.conf
MARK="# Written by seedance-watch's docker/smoke-test.sh"
if [ ! -e "$CONF" ] || head -n 1 "$CONF" | grep -qF "$MARK"; then
    # conmon runs the container with nproc capped at pid_max: ask for no more.
    pid_max=$(cat /proc/sys/kernel/pid_max)
    nproc_hard=$(ulimit -Hu)
    [ "$nproc_hard" != unlimited ] && [ "$nproc_hard" -le "$pid_max" ] || nproc_hard=$pid_max
    nproc_soft=$(ulimit -Su)
    [ "$nproc_soft" != unlimited ] && [ "$nproc_soft" -le "$nproc_hard" ] || nproc_soft=$nproc_hard
    mkdir -p /etc/containers
    cat >"$CONF.new" <<EOF
$MARK (it rewrites this file while this line is first;
# remove the line to keep your own settings).
[containers]
# podman raises nofile and nproc for root by default, which this host forbids.
default_ulimits = ["nofile=$(ulimit -Sn):$(ulimit -Hn)", "nproc=$nproc_soft:$nproc_hard"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
    mv "$CONF.new" "$CONF"
fi

# --- 2. the base image -----------------------------------------------------------------
BASE_REF=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$ROOT/Dockerfile")
[ -n "$BASE_REF" ] || fail "no ARG PYTHON_IMAGE=... in the Dockerfile"
qualified=$BASE_REF
case "${BASE_REF%%/*}" in
    *.* | *:* | localhost) ;;
    *) qualified=docker.io/library/$BASE_REF ;;
esac

# The host's CA bundle and index for pip, when it has its own (found at run time, only
# ever copied into the local stand-in base, never into the repository).
host_pip() { "$PYTHON" -m pip config get "global.$1" 2>/dev/null || true; }
ca_bundle=${PIP_CERT:-$(host_pip cert)}
[ -n "$ca_bundle" ] || ca_bundle=${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}
[ -f "$ca_bundle" ] || ca_bundle=
index_url=${PIP_INDEX_URL:-$(host_pip index-url)}
apt_proxy=$(apt-config dump Acquire::http::Proxy 2>/dev/null | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p')
valid_until=$(apt-config dump Acquire::Check-Valid-Until 2>/dev/null | sed -n 's/^Acquire::Check-Valid-Until "\(.*\)";$/\1/p')

build_stand_in() {
    # $1: a scratch folder, $2: the tag.  Debian bookworm's Python 3.11 in a venv at
    # /usr/local, so that `python -m pip install` and the console scripts land where
    # python:3.11-slim puts them.
    local tree=$1 tag=$2
    if ! (
        [ -z "$apt_proxy" ] || export http_proxy="$apt_proxy"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$tree" http://deb.debian.org/debian
    ) >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        return 1
    fi
    chroot "$tree" python3 -m venv /usr/local
    {
        [ -n "$apt_proxy" ] && echo "Acquire::http::Proxy \"$apt_proxy\";"
        [ -n "$valid_until" ] && echo "Acquire::Check-Valid-Until \"$valid_until\";"
        true
    } >"$tree/etc/apt/apt.conf.d/99smoke-host"
    {
        echo "[global]"
        if [ -n "$ca_bundle" ]; then
            cp "$ca_bundle" "$tree/etc/ssl/certs/smoke-host-ca.pem"
            echo "cert = /etc/ssl/certs/smoke-host-ca.pem"
        fi
        [ -n "$index_url" ] && echo "index-url = $index_url"
        true
    } >"$tree/etc/pip.conf"
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* "$tree"/tmp/*
    tar -C "$tree" -c . | podman import -q \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag" >/dev/null
}

if [ -n "${SMOKE_BASE_IMAGE:-}" ]; then
    base=$SMOKE_BASE_IMAGE
elif podman image exists "$qualified" ||
    timeout 300 podman pull -q "$qualified" >/dev/null 2>&1; then
    base=$qualified
else
    key=$(
        {
            declare -f build_stand_in
            echo "$apt_proxy $valid_until $index_url"
            [ -z "$ca_bundle" ] || cat "$ca_bundle"
        } | sha256sum | cut -c1-16
    )
    base=localhost/seedance-watch-ci-base:$key
    if ! podman image exists "$base"; then
        step "$BASE_REF cannot be pulled: building a stand-in base with debootstrap ($base)"
        mkdir -p "$CACHE"
        tree=$(mktemp -d "$CACHE/tree.XXXXXX")
        build_stand_in "$tree" "$base" || { rm -rf "$tree"; fail "the stand-in base"; }
        rm -rf "$tree"
        # Older stand-ins (another recipe, another CA) only take space.
        podman images --format '{{.Repository}}:{{.Tag}}' localhost/seedance-watch-ci-base |
            grep -vxF "$base" | xargs -r podman rmi -f >/dev/null 2>&1 || true
    fi
fi

# --- 3. the image ----------------------------------------------------------------------
step "building $IMAGE on $base"
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
build_log=$(mktemp)
if ! podman build --format docker --network host --build-arg "PYTHON_IMAGE=$base" \
    -t "$IMAGE" "$ROOT" >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    rm -f "$build_log"
    fail "podman build"
fi
rm -f "$build_log"
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true # the last run's image, now untagged
fi

# --- 4. run it -------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/seedance-smoke.XXXXXX)
pids=()
cleanup() {
    podman rm -f -v -t 0 "$NAME" "$NAME-refused" >/dev/null 2>&1 || true
    podman volume rm -f "$NAME-done" "$NAME-failed" "$NAME-state" >/dev/null 2>&1 || true
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for SECONDS COMMAND...: run COMMAND until it succeeds, for at most SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}
url_in() { grep -Eo 'http://127\.0\.0\.1:[0-9]+' "$1" 2>/dev/null | head -n 1; }

export PYTHONPATH="$ROOT/daemon"
# shellcheck disable=SC2086 # SMOKE_SIMULATOR_ARGS is a list of flags
"$PYTHON" -m seedance_watch simulator --host 127.0.0.1 --port 0 --api-key smoke-key \
    --queued-seconds 0.2 --running-seconds 1 --video-fps 8 --video-max-side 320 \
    --submit-answer envelope ${SMOKE_SIMULATOR_ARGS:-} >"$WORK/simulator.log" 2>&1 &
pids+=($!)
"$PYTHON" - >"$WORK/s3.log" 2>&1 <<'EOF' &
import signal
from seedance_watch.testing.s3emulator import S3Emulator

stop = {signal.SIGTERM, signal.SIGINT}
signal.pthread_sigmask(signal.SIG_BLOCK, stop)
s3 = S3Emulator("smoke", host="127.0.0.1").start()
print(f"S3 emulator listening on {s3.endpoint_url}", flush=True)
signal.sigwait(stop)
s3.stop()
EOF
pids+=($!)
wait_for 30 url_in "$WORK/simulator.log" >/dev/null ||
    { cat "$WORK/simulator.log" >&2; fail "the simulator did not start"; }
wait_for 30 url_in "$WORK/s3.log" >/dev/null ||
    { cat "$WORK/s3.log" >&2; fail "the S3 emulator did not start"; }
SIM_URL=$(url_in "$WORK/simulator.log")
S3_URL=$(url_in "$WORK/s3.log")

# The folders and the key as the Dockerfile's header makes them.
mkdir -p "$WORK/inbox" "$WORK/outbox" "$WORK/drop"
mkdir -m 0700 "$WORK/secrets"
(umask 0222 && echo smoke-key >"$WORK/secrets/pixazo-api-key")
run_args=(
    --network host
    -v "$WORK/inbox:/data/inbox" -v "$WORK/outbox:/data/outbox"
    -v "$NAME-done:/data/done" -v "$NAME-failed:/data/failed" -v "$NAME-state:/data/state"
    -e SEEDANCE_WATCH_STORAGE__BUCKET=smoke
    -e SEEDANCE_WATCH_STORAGE__ENDPOINT_URL="$S3_URL"
    -e SEEDANCE_WATCH_STORAGE__REGION=us-east-1
    -e AWS_ACCESS_KEY_ID=emulator -e AWS_SECRET_ACCESS_KEY=emulator
    -e SEEDANCE_WATCH_GATEWAY__BASE_URL="$SIM_URL"
    -e SEEDANCE_WATCH_GATEWAY__POLL_INTERVAL=0.5
    -e SEEDANCE_WATCH_WATCH__SETTLE_SECONDS=0.5
)
key_mount=type=bind,dst=/run/secrets/pixazo-api-key,readonly,src=

step "a root-owned inbox and a 0600 key are refused with the chown and chmod that fix them"
(umask 0077 && echo smoke-key >"$WORK/secrets/private-key")
if podman run --name "$NAME-refused" "${run_args[@]}" --mount "$key_mount$WORK/secrets/private-key" \
    "$IMAGE" >"$WORK/refused.log" 2>&1; then
    fail "the daemon started on an inbox it cannot write"
fi
refused=$(podman inspect --format '{{.State.ExitCode}}' "$NAME-refused")
grep -qF "chown -R 10001:10001 $WORK/inbox" "$WORK/refused.log" &&
    grep -qF "chmod 0444 $WORK/secrets/private-key" "$WORK/refused.log" && [ "$refused" = 2 ] ||
    { cat "$WORK/refused.log" >&2; fail "exit $refused without the chown and the chmod (want 2)"; }
podman rm -v "$NAME-refused" >/dev/null

chown 10001:"$(id -g)" "$WORK/inbox" "$WORK/outbox"
chmod 2770 "$WORK/inbox" "$WORK/outbox"
step "starting the daemon (simulator $SIM_URL, S3 emulator $S3_URL)"
# The hook leaves an orphan behind, which PID 1 must reap.
podman run -d --name "$NAME" "${run_args[@]}" --mount "$key_mount$WORK/secrets/pixazo-api-key" \
    -e 'SEEDANCE_WATCH_HOOKS__ON_DONE=["sh", "-c", "sleep 1 & exit 0"]' "$IMAGE" >/dev/null

healthy() { podman healthcheck run "$NAME" >/dev/null 2>&1; }
if ! wait_for 60 healthy; then
    podman logs "$NAME" 2>&1 | tail -n 30 >&2
    fail "the HEALTHCHECK never reported healthy"
fi
health=$(podman inspect --format '{{.State.Health.Status}}' "$NAME" 2>/dev/null ||
    podman inspect --format '{{.State.Healthcheck.Status}}' "$NAME")
[ "$health" = healthy ] || fail "podman inspect says the health is '$health'"
# (Whole logs into variables, not into `grep -q`: an early exit breaks podman's pipe.)
logged() { [[ "$(podman logs "$NAME" 2>&1)" == *"\"event\": \"$1\""* ]]; }
logged container.page_inside_only || fail "the log does not say how to publish the page"
init=$(podman exec "$NAME" cat /proc/1/comm)
[ "$init" = tini ] || fail "PID 1 is $init, not tini (nothing would reap a hook's orphans)"
step "healthy; dropping a pair"

"$PYTHON" - "$WORK/drop" <<'EOF'
import sys
from pathlib import Path
from PIL import Image, ImageDraw

folder = Path(sys.argv[1])
image = Image.new("RGB", (640, 360), (30, 60, 140))
ImageDraw.Draw(image).ellipse([260, 120, 380, 240], fill=(255, 214, 120))
image.save(folder / "smoke.jpg", format="JPEG", quality=90)
(folder / "smoke.yaml").write_text('prompt: "A sun over a blue sea"\nduration: 5\n')
EOF
mv "$WORK/drop/smoke.jpg" "$WORK/drop/smoke.yaml" "$WORK/inbox/"

video() { compgen -G "$WORK/outbox/*.mp4" >/dev/null; }
failed() { [ -n "$(podman exec "$NAME" ls -A /data/failed 2>/dev/null)" ]; }
wait_for 90 eval 'video || failed' || true
if ! video; then
    podman logs "$NAME" 2>&1 | tail -n 30 >&2
    podman exec "$NAME" sh -c 'cat /data/failed/*.error.json' >&2 2>/dev/null || true
    fail "no video in the outbox"
fi
mp4=$(compgen -G "$WORK/outbox/*.mp4" | head -n 1)
[ "$(head -c 8 "$mp4" | tail -c 4)" = ftyp ] || fail "$mp4 is not an mp4 (no ftyp box)"
for file in "$WORK"/outbox/*; do
    owner_mode=$(stat -c '%u %a' "$file")
    [ "$owner_mode" = "10001 640" ] || fail "$file: owner and mode '$owner_mode', want '10001 640'"
done
step "video $(basename "$mp4") ($(stat -c %s "$mp4") bytes), outputs 10001 0640"

# shellcheck disable=SC2016 # expanded by the container's shell
sleepers() {
    podman exec "$NAME" sh -c 'for f in /proc/[0-9]*/stat; do
        read -r _ comm state _ <"$f" 2>/dev/null && [ "$comm" = "(sleep)" ] && echo "$state"; done; true'
}
no_sleeper() { [ -z "$(sleepers)" ]; }
wait_for 30 logged hook.ran || fail "the on_done hook did not run"
wait_for 15 no_sleeper || fail "the hook's orphan was not reaped (states: $(sleepers | tr '\n' ' '))"

# A token (here a secret file) moves the page to all addresses.
(umask 0222 && echo smoke-token-0123456789abcdef >"$WORK/secrets/health-token")
listen=$(podman run --rm --mount "type=bind,src=$WORK/secrets/health-token,dst=/run/secrets/health-token,readonly" \
    "$IMAGE" sh -c 'echo "$SEEDANCE_WATCH_HEALTH__LISTEN ${#SEEDANCE_WATCH_HEALTH__TOKEN}"')
[ "$listen" = "0.0.0.0:9464 28" ] || fail "with a token: '$listen', want '0.0.0.0:9464 28'"

# Subcommands through the entrypoint, none shadowed by a program of the same name.
costs=$(podman run --rm -v "$NAME-state:/data/state" -e SEEDANCE_WATCH_STORAGE__BUCKET=smoke \
    "$IMAGE" costs --json)
printf '%s' "$costs" | "$PYTHON" -c 'import json, sys; r = json.load(sys.stdin); assert r["days"], r' ||
    fail "costs through the entrypoint: $costs"
models=$(podman run --rm "$IMAGE" models) && [[ "$models" == *seedance-2-0-fast* ]] ||
    fail "models through the entrypoint: $models"
names=$(podman run --rm --entrypoint python "$IMAGE" -c '
import argparse
from seedance_watch.cli import _parser
for action in _parser()._actions:
    if isinstance(action, argparse._SubParsersAction):
        print(*action.choices)') && [ -n "$names" ] || fail "cannot list the subcommands"
# shellcheck disable=SC2016 # expanded by the container's shell
shadowed=$(podman run --rm --entrypoint sh "$IMAGE" -c \
    'for name; do command -v "$name" >/dev/null && echo "$name: $(command -v "$name")"; done; true' \
    sh $names)
[ -z "$shadowed" ] || fail "a subcommand is also a program in the image, the entrypoint runs that: $shadowed"
step "the hook's orphan reaped; costs, models and the token's address through the entrypoint"

podman stop -t 40 "$NAME" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { podman logs "$NAME" 2>&1 | tail -n 20 >&2; fail "exit $code after SIGTERM"; }
step "stopped with exit 0: passed"
