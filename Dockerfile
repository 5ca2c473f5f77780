# seedance-watch in a container: a small image that runs the daemon as a non-root user
# (uid 10001) under tini, which reaps whatever a hook leaves behind.
#
#   docker build -t seedance-watch .
#   mkdir -p inbox outbox && sudo chown 10001:"$(id -g)" inbox outbox && sudo chmod 2770 inbox outbox
#   mkdir -p -m 0700 secrets && (umask 0222; cat > secrets/pixazo-api-key)   # paste the key, Ctrl-D
#   docker run -d --name seedance-watch --env-file seedance-watch.env \
#     -v "$PWD/inbox:/data/inbox" -v "$PWD/outbox:/data/outbox" \
#     -v seedance-done:/data/done -v seedance-failed:/data/failed -v seedance-state:/data/state \
#     --mount type=bind,src="$PWD/secrets/pixazo-api-key",dst=/run/secrets/pixazo-api-key,readonly \
#     seedance-watch
#
# seedance-watch.env (chmod 600) holds the bucket and its credentials, VAR=value a line:
# SEEDANCE_WATCH_STORAGE__BUCKET=my-bucket, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_DEFAULT_REGION (SEEDANCE_WATCH_STORAGE__ENDPOINT_URL for a store that is not
# AWS), and any other SEEDANCE_WATCH_* setting.
#
# The folders: the daemon (uid 10001) must write inbox and outbox; group "$(id -g)"
# and the setgid bit let you drop files and read the videos (mode 0640, UMASK=0027).
# The key file is 0444 so that uid 10001 can read it, in a 0700 folder so that nobody
# else on the host can.  A folder the daemon cannot write stops it at start (exit 2)
# with the chown that fixes it.
#
# The status page and /metrics listen on 127.0.0.1:9464 inside the container (the
# HEALTHCHECK reaches them, nothing else does) until a token is set; with one they
# listen on 0.0.0.0:9464, so publish the port:
#
#   (umask 0222; openssl rand -hex 24 > secrets/health-token)
#   docker run ... -p 127.0.0.1:9464:9464 \
#     --mount type=bind,src="$PWD/secrets/health-token",dst=/run/secrets/health-token,readonly \
#     seedance-watch
#
# Any subcommand runs through the entrypoint: `docker run --rm --env-file seedance-watch.env
# -v seedance-state:/data/state seedance-watch costs`.  compose.yaml runs
# it beside MinIO.  Config comes from SEEDANCE_WATCH_* variables (or a file named by
# SEEDANCE_WATCH_CONFIG); the key and the token from Docker secrets.
#
# podman and buildah: build with `--format docker`.  Their default, the OCI image
# format, has no HEALTHCHECK and drops it (with a warning).
#
# Reproducible: the base image is pinned by tag (pin its digest too with
# --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...), tini by its
# Debian version, the build tools here, and every runtime dependency by
# docker/constraints.txt (`make constraints` regenerates it).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: the wheel only (the runtime image never sees the source tree) -----------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir setuptools==84.2.1 wheel==0.48.0
COPY pyproject.toml README.md ./
COPY daemon ./daemon
RUN python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

# --- runtime ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini is PID 1: it forwards signals to the daemon and reaps orphaned grandchildren
# (a hook's background processes) that the daemon never waits for.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 seedance \
 && useradd --system --uid 10001 --gid seedance --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin seedance

# The dependencies first, exactly as locked (a layer that survives code changes), then
# the wheel against the same pins with no index: a dependency missing from the
# constraints fails the build instead of being fetched at whatever version is newest.
COPY docker/constraints.txt /tmp/constraints.txt
RUN python -m pip install --no-cache-dir -r /tmp/constraints.txt
COPY --from=build /dist/ /tmp/dist/
RUN python -m pip install --no-cache-dir --no-index -c /tmp/constraints.txt /tmp/dist/*.whl \
 && rm -rf /tmp/dist /tmp/constraints.txt

COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# The five folders, owned by the service user so that fresh named volumes are too.
RUN install -d -o seedance -g seedance -m 0750 \
        /data /data/inbox /data/outbox /data/done /data/failed /data/state
VOLUME ["/data/inbox", "/data/outbox", "/data/done", "/data/failed", "/data/state"]

# PIXAZO_API_KEY_FILE names the Docker secret's file; the key itself is never in the
# image.  health.listen is chosen by the entrypoint (loopback unless a token is set).
# hadolint ignore=DL3064
ENV SEEDANCE_WATCH_PATHS__INBOX=/data/inbox \
    SEEDANCE_WATCH_PATHS__OUTBOX=/data/outbox \
    SEEDANCE_WATCH_PATHS__DONE=/data/done \
    SEEDANCE_WATCH_PATHS__FAILED=/data/failed \
    SEEDANCE_WATCH_PATHS__STATE=/data/state \
    SEEDANCE_WATCH_LOG__FORMAT=json \
    PIXAZO_API_KEY_FILE=/run/secrets/pixazo-api-key \
    UMASK=0027

USER 10001:10001
WORKDIR /data
EXPOSE 9464

# Through the entrypoint, so that the probe finds the page where the daemon put it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/docker-entrypoint.sh", "seedance-watch", "health", "--timeout", "5"]

# SIGTERM drains in-flight uploads, submits and downloads (up to 20 s): give
# `docker stop` a longer timeout than its default 10 s (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/docker-entrypoint.sh"]
CMD ["run"]
