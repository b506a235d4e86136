#!/usr/bin/env bash
# Install ganbench with its test dependencies into .venv (from scratch if needed) and run
# the whole test suite, benchmarks included in their fast mode (each executed once).
# The HTML report test renders the page in Debian's chromium: installed here when missing
# and this runs as root (CI does); otherwise install it yourself (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,ray]'
exec .venv/bin/python -m pytest --benchmark-disable -q "$@"
