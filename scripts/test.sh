#!/usr/bin/env bash
# Set up and run the whole test suite, with lint and type checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
# The report test renders punie's HTML report in headless Chromium (Debian/Ubuntu package).
if [[ "$(uname -s)" == "Linux" ]] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
  ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "Could not install chromium; the report rendering test will fail."
fi
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
