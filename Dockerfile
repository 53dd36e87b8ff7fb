# slpt-label: the annotation server (MONAI Label app, SQL datastore, admin API) as one image.
# Build:  docker build -t slpt-label .                        (PyPI reachable; CUDA libraries come with torch)
# Offline: scripts/offline_image.sh slpt-label                (local base image + a wheelhouse over 127.0.0.1)
# Why it is built this way: docs/deploy.md, "The image".
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Empty: install from PyPI. A URL (an offline build's wheelhouse): install from it alone.
ARG WHEELHOUSE_URL=

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH

RUN python3 -m venv /opt/venv

# The lock alone first: this layer (GBs: torch and its CUDA libraries) is rebuilt only when the lock changes.
COPY requirements.lock /tmp/requirements.lock
RUN pip install ${WHEELHOUSE_URL:+--no-index --find-links "$WHEELHOUSE_URL"} -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock

COPY pyproject.toml README.md /src/
COPY app /src/app
COPY bench /src/bench
COPY cohort /src/cohort
COPY db /src/db
COPY models /src/models
COPY sim /src/sim
COPY slpt /src/slpt
COPY storage /src/storage
COPY strategies /src/strategies
RUN pip install --no-deps --no-build-isolation /src && rm -rf /src

# A fixed uid, so a bind-mounted studies folder can be given to it (chown 10001) on the host.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/slpt slpt \
    && mkdir -p /data/studies /data/models \
    && chown slpt:slpt /data/studies /data/models \
    # monailabel start_server creates model/, lib/, logs/ and bin/ inside the app package and logs there.
    && app=$(python3 -c 'import app, os; print(os.path.dirname(app.__file__))') \
    && mkdir -p "$app/model" "$app/lib" "$app/logs" "$app/bin" \
    && chown slpt:slpt "$app/model" "$app/lib" "$app/logs" "$app/bin"

USER slpt
WORKDIR /home/slpt
VOLUME ["/data/studies", "/data/models"]

ENV SLPT_STUDIES=/data/studies \
    SLPT_HOST=0.0.0.0 \
    SLPT_PORT=8000
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python3 -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"SLPT_PORT\"]}/health', timeout=4)"

# Every option of `slpt serve` comes from its SLPT_* variable. At start it pre-trains the demo backbone when
# SLPT_PRETRAIN_IF_MISSING is on and SLPT_BACKBONE does not exist, migrates the database, then serves.
CMD ["slpt", "serve"]
