# syntax=docker/dockerfile:1
# Retail Pulse: the job API as a container. Build: docker build -t retail-pulse .
# Configuration is RP_* environment variables only (see config/default.toml for every key).
# Jobs live in SQLite under /data, a volume; the store master is /etc/retail-pulse/stores.csv,
# outside that volume, so a volume over /data neither hides it nor keeps a stale copy of it.

# --- Stage 1: build the service's wheel and the wheels of all its dependencies ----------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY service ./service
# The speed extra (uvloop) is on in the image; scripts/wheel_check.sh installs the same.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[speed]"

# --- Stage 2: a clean runtime with only the installed wheels --------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RP_HOST=0.0.0.0 \
    RP_PORT=8080 \
    RP_STORES=/etc/retail-pulse/stores.csv \
    RP_DATABASE_URL=sqlite:////data/retail-pulse.db
# --no-index: everything comes from the build stage's wheels, nothing from the network.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels \
        "$(echo /wheels/retail_pulse-*.whl)[speed]" \
    && groupadd --system --gid 10001 retailpulse \
    && useradd --system --uid 10001 --gid retailpulse --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin retailpulse \
    && install -d -o 10001 -g 10001 -m 0750 /data
WORKDIR /app
COPY scripts/healthcheck.py /app/healthcheck.py
COPY stores.csv /etc/retail-pulse/stores.csv
# The service's uid owns /data (made above, before VOLUME freezes it), so it can create
# the database, its WAL and its lock file there; a new named volume copies that owner.
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080
# Python's urllib, because the slim image has no curl; it probes 127.0.0.1:$RP_PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
# On SIGTERM new submits get 503 and running images get RP_SHUTDOWN_GRACE seconds; with
# SQLite or PostgreSQL the images never started stay queued for the next start or another
# replica (the memory store fails them). Then the process exits 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
