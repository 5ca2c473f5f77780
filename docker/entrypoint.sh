#!/bin/sh
# The container's entrypoint (tini runs it as PID 1's child, so orphans are reaped):
# apply $UMASK, choose where the status page listens, check that the daemon can write
# its folders, then exec the command (SIGTERM from `docker stop` reaches it directly).
#
# Which command: an argument that names a program (it contains a slash, or it is found
# in PATH: sh, seedance-watch, python...) runs as given; anything else is a
# seedance-watch subcommand or option.  No list of subcommands, so a new one passes
# through the day it exists (the container smoke test checks that none of them is
# also the name of a program in the image).
#
#   docker run IMAGE                 -> seedance-watch run
#   docker run IMAGE costs --json    -> seedance-watch costs --json
#   docker run IMAGE --version       -> seedance-watch --version
#   docker run IMAGE sh              -> sh
#
# The page and /metrics (health.listen): unless SEEDANCE_WATCH_HEALTH__LISTEN or a
# config file (SEEDANCE_WATCH_CONFIG) says otherwise, they listen on 0.0.0.0:9464 when
# a token is set (SEEDANCE_WATCH_HEALTH__TOKEN, or the file named by HEALTH_TOKEN_FILE,
# default /run/secrets/health-token) and on 127.0.0.1:9464 without one, where only
# the HEALTHCHECK (which runs this script too) can reach them.
#
# The shared database's password (compose's cluster profile): DATABASE_PASSWORD_FILE
# names a file holding it (a Docker secret, like the key); it is handed to libpq as a
# private PGPASSFILE (mode 0600, in $TMPDIR), never put in the URL or the
# environment.  A path that is not a regular file (compose mounts /dev/null there
# without the profile), or a PGPASSFILE already set, leaves everything as it is.
set -eu

say() {
    echo "docker-entrypoint: $*" >&2
}

# What is mounted at $1, as its filesystem names it: a volume's folder or, for a bind
# mount from the host's root filesystem, the host's path itself (empty: not a mount).
mounted_from() {
    awk -v d="$1" '$5 == d { s = $4 } END { print s }' /proc/self/mountinfo 2>/dev/null || true
}

# A bind-mounted secret keeps the host file's owner and mode (compose without swarm too).
unreadable_secret() {
    say "$1 ($2) is not readable by uid $(id -u): it belongs to $(stat -c '%u:%g' "$1") with mode $(stat -c '%a' "$1"). On the host, make it 0444 in a folder only you can open (mkdir -m 0700 secrets):"
    say "    chmod 0444 $(mounted_from "$1" | grep . || echo "THE-FILE-MOUNTED-AT-$1")"
}

if [ -n "${UMASK:-}" ]; then
    case "$UMASK" in
        [0-7][0-7][0-7] | [0-7][0-7][0-7][0-7]) umask "$UMASK" ;;
        *)
            say "UMASK must be an octal mask such as 0027, not '$UMASK'"
            exit 2
            ;;
    esac
fi

if [ "$#" -eq 0 ]; then
    set -- run
fi
case "$1" in
    */*) ;;
    -*) set -- seedance-watch "$@" ;;
    *)
        if ! command -v "$1" >/dev/null 2>&1; then
            set -- seedance-watch "$@"
        fi
        ;;
esac

# The token from a file (a Docker secret): never in the image, never in `docker inspect`.
token_file=${HEALTH_TOKEN_FILE:-/run/secrets/health-token}
if [ -z "${SEEDANCE_WATCH_HEALTH__TOKEN:-}" ]; then
    if [ -f "$token_file" ]; then
        if ! token=$(cat "$token_file" 2>/dev/null); then
            unreadable_secret "$token_file" "the status page's token"
            exit 2
        fi
        token=$(printf '%s' "$token" | tr -d '\r\n')
        if [ -n "$token" ]; then
            export SEEDANCE_WATCH_HEALTH__TOKEN="$token"
        fi
        unset token
    elif [ -n "${HEALTH_TOKEN_FILE:-}" ]; then
        say "HEALTH_TOKEN_FILE names $HEALTH_TOKEN_FILE, which is not a file"
        exit 2
    fi
fi

db_password_file=${DATABASE_PASSWORD_FILE:-}
if [ -n "$db_password_file" ] && [ -z "${PGPASSFILE:-}" ]; then
    if [ ! -e "$db_password_file" ]; then
        say "DATABASE_PASSWORD_FILE names $db_password_file, which does not exist"
        exit 2
    fi
    if [ -f "$db_password_file" ]; then
        if ! password=$(cat "$db_password_file" 2>/dev/null); then
            unreadable_secret "$db_password_file" "the database's password, DATABASE_PASSWORD_FILE"
            exit 2
        fi
        password=$(printf '%s' "$password" | tr -d '\r\n')
        if [ -n "$password" ]; then
            passfile="${TMPDIR:-/tmp}/seedance-watch-$(id -u).pgpass"
            # mktemp makes it 0600; the rename replaces an older one in one step.
            if ! tmp=$(mktemp "$passfile.XXXXXX" 2>/dev/null); then
                say "cannot write the database's password file in ${TMPDIR:-/tmp} (a read-only container needs a writable TMPDIR, e.g. --tmpfs /tmp)"
                exit 2
            fi
            # libpq's format, host:port:database:user:password; ':' and '\' escaped.
            printf '*:*:*:*:%s\n' "$(printf '%s' "$password" | sed 's/[\\:]/\\&/g')" >"$tmp"
            mv -f "$tmp" "$passfile"
            export PGPASSFILE="$passfile"
        fi
        unset password
    fi
fi

page_hidden=
if [ -z "${SEEDANCE_WATCH_HEALTH__LISTEN+set}" ] && [ -z "${SEEDANCE_WATCH_CONFIG:-}" ]; then
    if [ -n "${SEEDANCE_WATCH_HEALTH__TOKEN:-}" ]; then
        export SEEDANCE_WATCH_HEALTH__LISTEN=0.0.0.0:9464
    else
        export SEEDANCE_WATCH_HEALTH__LISTEN=127.0.0.1:9464
        page_hidden=1
    fi
fi

if [ "$1" = seedance-watch ] && [ "${2:-}" = run ]; then
    if [ -n "$page_hidden" ]; then
        hint="the status page and /metrics listen on 127.0.0.1:9464 inside the container only; to publish them set a token (SEEDANCE_WATCH_HEALTH__TOKEN, 16+ characters, or a secret at $token_file): they then listen on 0.0.0.0:9464"
        if [ "${SEEDANCE_WATCH_LOG__FORMAT:-}" = json ]; then
            printf '{"event": "container.page_inside_only", "level": "info", "listen": "127.0.0.1:9464", "hint": "%s", "timestamp": "%s"}\n' \
                "$hint" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >&2
        else
            say "$hint"
        fi
    fi
    unusable=
    key_file=${PIXAZO_API_KEY_FILE:-}
    if [ -n "$key_file" ] && [ -f "$key_file" ] && [ ! -r "$key_file" ]; then
        unreadable_secret "$key_file" "the Pixazo key, PIXAZO_API_KEY_FILE"
        unusable=1
    fi
    # The daemon's folders must be writable by the user it runs as: a bind-mounted
    # folder keeps its owner from the host (compose creates missing ones as root).
    me="$(id -u):$(id -g)"
    for key in INBOX OUTBOX DONE FAILED STATE; do
        eval "dir=\${SEEDANCE_WATCH_PATHS__${key}:-}"
        if [ -z "$dir" ] || [ ! -d "$dir" ] || { [ -w "$dir" ] && [ -x "$dir" ]; }; then
            continue
        fi
        unusable=1
        name=$(echo "$key" | tr '[:upper:]' '[:lower:]')
        say "$dir (paths.$name) is not writable by uid $(id -u): it belongs to $(stat -c '%u:%g' "$dir") with mode $(stat -c '%a' "$dir"). Give it to $me:"
        source=$(mounted_from "$dir")
        case "$source" in
            */volumes/*/_data)
                volume=${source%/_data}
                say "    docker run --rm --user 0 -v ${volume##*/}:$dir IMAGE chown -R $me $dir"
                ;;
            /?*)
                say "    sudo chown -R $me $source    (the host folder mounted at $dir; rootless podman: podman unshare chown -R $me $source)"
                ;;
            *)
                say "    docker run --rm --user 0 -v SOURCE:$dir IMAGE chown -R $me $dir    (SOURCE: what you mount at $dir)"
                ;;
        esac
    done
    if [ -n "$unusable" ]; then
        exit 2
    fi
fi

exec "$@"
