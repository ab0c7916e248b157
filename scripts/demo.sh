#!/usr/bin/env bash
# Set up and run punie's main job on the embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/punie demo "$@"
