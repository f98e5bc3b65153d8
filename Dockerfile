# syntax=docker/dockerfile:1
# Retail Pulse: the job API as a container. Build: docker build -t retail-pulse .
# Configuration is RP_* environment variables only (see config/default.toml for every key);
# the store master is /data/stores.csv, which a volume or bind mount can replace.

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
    RP_STORES=/data/stores.csv
# --no-index: everything comes from the build stage's wheels, nothing from the network.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels \
        "$(echo /wheels/retail_pulse-*.whl)[speed]" \
    && groupadd --system --gid 10001 retailpulse \
    && useradd --system --uid 10001 --gid retailpulse --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin retailpulse
WORKDIR /app
COPY scripts/healthcheck.py /app/healthcheck.py
COPY stores.csv /data/stores.csv
USER 10001:10001
EXPOSE 8080
# Python's urllib, because the slim image has no curl; it probes 127.0.0.1:$RP_PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
# On SIGTERM new submits get 503, running jobs get RP_SHUTDOWN_GRACE seconds, the rest
# fail with "service shutting down", the pool and client close, and the process exits 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
