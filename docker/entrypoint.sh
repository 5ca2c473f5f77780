#!/bin/sh
# The container's entrypoint: apply $UMASK, then exec the command (PID 1 becomes
# the daemon itself, so SIGTERM from `docker stop` reaches it directly).
#
#   docker run IMAGE                 -> seedance-watch run
#   docker run IMAGE status --json   -> seedance-watch status --json
#   docker run IMAGE sh              -> sh
set -eu

if [ -n "${UMASK:-}" ]; then
    case "$UMASK" in
        [0-7][0-7][0-7] | [0-7][0-7][0-7][0-7]) umask "$UMASK" ;;
        *)
            echo "docker-entrypoint: UMASK must be an octal mask such as 0027, not '$UMASK'" >&2
            exit 2
            ;;
    esac
fi

case "${1:-run}" in
    run | status | retry | validate | health | demo | simulator | --version | --help | -h)
        set -- seedance-watch "$@"
        ;;
esac
if [ "$#" -eq 0 ]; then
    set -- seedance-watch run
fi

exec "$@"
