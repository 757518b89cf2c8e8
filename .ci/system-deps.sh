#!/usr/bin/env bash
# System packages the test suite uses beyond Python: Debian's chromium (headless checks of
# the HTML report) and postgresql (distributed search tests; started by .ci/postgres.sh).
# Needs root. Safe to run twice.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "[system-deps.sh] installing ${missing[*]}" >&2
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
fi
chromium --version >&2
