#!/usr/bin/env bash
# Set up and run the whole test suite, with lint and type checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
