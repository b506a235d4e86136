#!/usr/bin/env bash
# Install ganbench with its test dependencies into .venv (from scratch if needed) and run
# the whole test suite, benchmarks included in their fast mode (each executed once).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
exec .venv/bin/python -m pytest --benchmark-disable -q "$@"
