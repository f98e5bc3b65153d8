#!/usr/bin/env bash
# `make wheel-check`: the container's install path, checked without Docker.
# Builds a wheel from the committed tree (a clean checkout, as `git archive` gives it),
# installs it into a fresh venv, starts the installed service from a directory outside the
# source tree, checks /healthz and the dashboard's files, runs one job against a loopback
# image server, then stops it with SIGTERM and requires exit code 0.
# Usage: scripts/wheel_check.sh PYTHON   (the project venv's python: builds, serves images)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:?usage: scripts/wheel_check.sh PYTHON}
# Absolute, since part of the check runs elsewhere; not resolved, so it stays the venv's.
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
# The extras the Dockerfile installs, so both install the same thing.
WHEEL_EXTRAS="[speed]"

work=$(mktemp -d)
image_pid=""
service_pid=""
cleanup() {
    for pid in $image_pid $service_pid; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
repo=$PWD

if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
    echo "wheel-check: note: uncommitted changes are not part of the check (it builds HEAD)"
fi
mkdir -p "$work/src" "$work/wheels" "$work/run"
git archive --format=tar HEAD | tar -x -C "$work/src"

# As the Dockerfile's build stage does: the service's wheel plus wheels of all its
# dependencies, then an install from those wheels alone (--no-index), as the runtime stage does.
echo "wheel-check: building wheels"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/wheels" \
    "$work/src$WHEEL_EXTRAS"
wheels=("$work"/wheels/retail_pulse-*.whl)
if [[ ${#wheels[@]} -ne 1 || ! -f ${wheels[0]} ]]; then
    echo "wheel-check: expected one retail_pulse wheel, got: ${wheels[*]}" >&2
    exit 1
fi
wheel=${wheels[0]}
"$PYTHON" scripts/check_wheel_contents.py "$wheel" "$work/src"

echo "wheel-check: installing $(basename "$wheel") into a fresh venv, offline"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-index --find-links="$work/wheels" "$wheel$WHEEL_EXTRAS"

# Everything below runs in $work/run, with no path back into the source tree.
cp stores.csv "$work/run/master.csv"
cd "$work/run"
clean_env=(env -u PYTHONPATH -u VIRTUAL_ENV)
for name in $(compgen -e); do
    [[ $name == RP_* ]] && clean_env+=(-u "$name")
done
location=$("${clean_env[@]}" "$work/venv/bin/python" -c 'import service; print(service.__file__)')
if [[ $location != "$work/venv/"* ]]; then
    echo "wheel-check: service imported from $location, not from the fresh venv" >&2
    exit 1
fi

cd "$repo"
PYTHONPATH=. "$PYTHON" scripts/image_server.py --port-file "$work/image-port" \
    2>"$work/image-server.log" &
image_pid=$!
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cd "$work/run"
# The image's own CMD (JSON form, which hadolint enforces), run from the fresh venv's bin/.
mapfile -t cmd < <("$PYTHON" -c '
import json, sys
lines = [line for line in open(sys.argv[1]) if line.startswith("CMD ")]
print("\n".join(json.loads(lines[-1][4:])))
' "$work/src/Dockerfile")
if [[ ${#cmd[@]} -eq 0 ]]; then
    echo "wheel-check: no CMD found in the Dockerfile" >&2
    exit 1
fi
serve=("$work/venv/bin/${cmd[0]}" "${cmd[@]:1}")
echo "wheel-check: starting the image's CMD (${cmd[*]}) from the fresh venv in $work/run"
"${clean_env[@]}" RP_HOST=127.0.0.1 RP_WORKERS=1 RP_GPU_DELAY_MIN=0 RP_GPU_DELAY_MAX=0 \
    RP_ALLOW_PRIVATE_NETWORKS=true \
    "${serve[@]}" --stores "$work/run/master.csv" --port "$port" 2>"$work/service.log" &
service_pid=$!
cd "$repo"

for _ in $(seq 100); do
    [[ -s "$work/image-port" ]] && break
    sleep 0.1
done
image_base="http://127.0.0.1:$(cat "$work/image-port")"
base_url="http://127.0.0.1:$port"

if ! "$PYTHON" scripts/healthcheck.py "$base_url/healthz" --wait 30 --pid "$service_pid"; then
    cat "$work/service.log" >&2
    exit 1
fi
echo "wheel-check: /healthz is ok"
# The dashboard is package data: served from the installed wheel, not from a checkout.
if ! "$PYTHON" - "$base_url" <<'PY'
import sys
import urllib.request

for path in ("/ui/", "/ui/app.js", "/ui/api.js", "/ui/csv.js", "/ui/app.css", "/ui/favicon.svg"):
    with urllib.request.urlopen(sys.argv[1] + path, timeout=10) as response:
        if response.status != 200 or not response.read():
            raise SystemExit(f"wheel-check: {path} answered {response.status} or nothing")
print("wheel-check: the dashboard's files are served from the installed wheel")
PY
then
    cat "$work/service.log" >&2
    exit 1
fi
if ! "$PYTHON" scripts/smoke_job.py "$base_url" "$image_base"; then
    cat "$work/service.log" >&2
    exit 1
fi

kill -TERM "$service_pid"
code=0
wait "$service_pid" || code=$?
service_pid=""
if [[ $code -ne 0 ]] || grep -q Traceback "$work/service.log"; then
    echo "wheel-check: the service exited $code after SIGTERM" >&2
    cat "$work/service.log" >&2
    exit 1
fi
echo "wheel-check: SIGTERM stopped the service with exit code 0"
echo "wheel-check: passed"
