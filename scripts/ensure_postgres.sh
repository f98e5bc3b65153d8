#!/usr/bin/env bash
# CI: make sure the PostgreSQL the tests use (RP_TEST_PG, default
# postgresql://postgres@127.0.0.1:5432) answers, installing and starting Debian's
# cluster when it does not. The tests need trust auth on loopback (Debian's default is
# scram, which they cannot use). Needs root for the install; CI runs as root.
# Usage: scripts/ensure_postgres.sh PYTHON   (a python with asyncpg, from the project venv)
set -euo pipefail
PYTHON=${1:?usage: scripts/ensure_postgres.sh PYTHON}
SERVER=${RP_TEST_PG:-postgresql://postgres@127.0.0.1:5432}

answers() {
    "$PYTHON" - "$SERVER" <<'PY'
import asyncio, sys
import asyncpg

async def probe() -> None:
    connection = await asyncpg.connect(sys.argv[1].rstrip("/") + "/postgres", timeout=3)
    await connection.close()

try:
    asyncio.run(probe())
except Exception as exc:
    print(f"ensure_postgres: {sys.argv[1]} does not answer: {exc}", file=sys.stderr)
    raise SystemExit(1)
PY
}

if answers; then
    echo "ensure_postgres: PostgreSQL answers at $SERVER"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "ensure_postgres: not root, cannot install or start PostgreSQL" >&2
    exit 1
fi
if ! command -v pg_ctlcluster >/dev/null; then
    echo "ensure_postgres: installing Debian's postgresql"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
hba=/etc/postgresql/$version/main/pg_hba.conf
if ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    echo "ensure_postgres: trusting loopback connections in $hba"
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba" ||
        echo "host all all 127.0.0.1/32 trust" >>"$hba"
fi
echo "ensure_postgres: starting cluster $version/main"
pg_ctlcluster --skip-systemctl-redirect "$version" main restart ||
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 60); do
    answers 2>/dev/null && { echo "ensure_postgres: PostgreSQL answers at $SERVER"; exit 0; }
    sleep 0.5
done
answers
