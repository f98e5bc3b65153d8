#!/usr/bin/env bash
# `make postman`: run the Postman collection with newman against a freshly started service
# and a loopback image server; both are always stopped, and any failed assertion fails.
# Usage: scripts/postman.sh PYTHON   (the project venv's python, with the service installed)
# NEWMAN_ARGS adds newman options, e.g. NEWMAN_ARGS='--env-var maxPollAttempts=120'.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:?usage: scripts/postman.sh PYTHON}
NEWMAN=${NEWMAN:-newman@6.2.2}
read -ra newman_args <<<"${NEWMAN_ARGS:-}"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The image server binds a free port itself and reports it through a file.
PYTHONPATH=. "$PYTHON" scripts/image_server.py --port-file "$work/image-port" \
    2>"$work/image-server.log" &
pids+=($!)

port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# No simulated GPU wait, so jobs settle in milliseconds; the image server is on loopback.
RP_HOST=127.0.0.1 RP_PORT=$port RP_STORES=stores.csv RP_WORKERS=1 \
    RP_DATABASE_URL="sqlite:///$work/jobs.db" \
    RP_GPU_DELAY_MIN=0 RP_GPU_DELAY_MAX=0 RP_ALLOW_PRIVATE_NETWORKS=true \
    "$PYTHON" -m service 2>"$work/service.log" &
service_pid=$!
pids+=("$service_pid")

for _ in $(seq 100); do
    [[ -s "$work/image-port" ]] && break
    sleep 0.1
done
if [[ ! -s "$work/image-port" ]]; then
    echo "postman: the image server did not start" >&2
    cat "$work/image-server.log" >&2
    exit 1
fi
image_base="http://127.0.0.1:$(cat "$work/image-port")"
base_url="http://127.0.0.1:$port"

if ! "$PYTHON" scripts/healthcheck.py "$base_url/healthz" --wait 30 --pid "$service_pid"; then
    cat "$work/service.log" >&2
    exit 1
fi

status=0
npx --yes "$NEWMAN" run postman/retail-pulse.postman_collection.json \
    --environment postman/local.postman_environment.json \
    --env-var "baseUrl=$base_url" \
    --env-var "imageBase=$image_base" \
    --timeout-request 15000 \
    --timeout 180000 \
    "${newman_args[@]}" || status=$?
if [[ $status -ne 0 ]]; then
    echo "postman: newman failed (exit $status); service log:" >&2
    tail -n 50 "$work/service.log" >&2
fi
exit "$status"
