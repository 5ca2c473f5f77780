# seedance-watch in a container: a small image that runs the daemon as a non-root user.
#
#   docker build -t seedance-watch .
#   docker run -d --name seedance-watch \
#     -v "$PWD/inbox:/data/inbox" -v "$PWD/outbox:/data/outbox" \
#     -v seedance-done:/data/done -v seedance-failed:/data/failed -v seedance-state:/data/state \
#     -e SEEDANCE_WATCH_STORAGE__BUCKET=my-bucket \
#     -e PIXAZO_API_KEY_FILE=/run/secrets/pixazo-api-key \
#     --mount type=bind,src="$PWD/pixazo-api-key",dst=/run/secrets/pixazo-api-key,readonly \
#     seedance-watch
#
# compose.yaml runs it beside MinIO.  Config comes from SEEDANCE_WATCH_* variables
# (or a file named by SEEDANCE_WATCH_CONFIG); the key from a Docker secret.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the wheel only (the runtime image never sees the source tree) -----------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon ./daemon
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# --- runtime ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 seedance \
 && useradd --system --uid 10001 --gid seedance --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin seedance

COPY --from=build /dist/ /tmp/dist/
RUN python -m pip install --no-cache-dir /tmp/dist/*.whl \
 && rm -rf /tmp/dist

COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# The five folders, owned by the service user so that fresh named volumes are too.
RUN install -d -o seedance -g seedance -m 0750 \
        /data /data/inbox /data/outbox /data/done /data/failed /data/state
VOLUME ["/data/inbox", "/data/outbox", "/data/done", "/data/failed", "/data/state"]

# PIXAZO_API_KEY_FILE names the Docker secret's file; the key itself is never in the image.
# hadolint ignore=DL3064
ENV SEEDANCE_WATCH_PATHS__INBOX=/data/inbox \
    SEEDANCE_WATCH_PATHS__OUTBOX=/data/outbox \
    SEEDANCE_WATCH_PATHS__DONE=/data/done \
    SEEDANCE_WATCH_PATHS__FAILED=/data/failed \
    SEEDANCE_WATCH_PATHS__STATE=/data/state \
    SEEDANCE_WATCH_LOG__FORMAT=json \
    SEEDANCE_WATCH_HEALTH__LISTEN=0.0.0.0:9464 \
    PIXAZO_API_KEY_FILE=/run/secrets/pixazo-api-key \
    UMASK=0027

USER 10001:10001
WORKDIR /data
EXPOSE 9464

HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["seedance-watch", "health", "--timeout", "5"]

# SIGTERM drains in-flight uploads, submits and downloads (up to 20 s): give
# `docker stop` a longer timeout than its default 10 s (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["run"]
