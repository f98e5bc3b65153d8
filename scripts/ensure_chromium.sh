#!/usr/bin/env bash
# CI: make sure the Chromium the browser tests drive (/usr/bin/chromium, or
# RP_TEST_CHROMIUM) is there, installing Debian's package when it is not. Idempotent:
# an installed browser is left alone. Playwright's own browser download
# (`playwright install`) is never used. Needs root for the install; CI runs as root.
set -euo pipefail
CHROMIUM=${RP_TEST_CHROMIUM:-/usr/bin/chromium}

if [[ -x "$CHROMIUM" ]]; then
    echo "ensure_chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM") is installed"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "ensure_chromium: not root, cannot install chromium (apt-get install chromium)" >&2
    exit 1
fi
echo "ensure_chromium: installing Debian's chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
if [[ ! -x "$CHROMIUM" ]]; then
    echo "ensure_chromium: installed, but no browser at $CHROMIUM" >&2
    exit 1
fi
echo "ensure_chromium: $("$CHROMIUM" --version 2>/dev/null) installed"
