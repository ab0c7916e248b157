"""Use an optimized BLAS for MLX on Linux.

The Linux CPU wheel of MLX links the reference BLAS: an fp32 matmul runs at a
few GFLOP/s. Preloading OpenBLAS replaces its ``cblas_*`` symbols and makes
matmuls (and so LoRA training) an order of magnitude faster. The dynamic linker
reads ``LD_PRELOAD`` only at process start, so punie re-executes itself once with
the variable set, before MLX is imported. ``PUNIE_NO_BLAS_FIX=1`` opts out.
Child processes punie starts (mlx_lm.server, benchmarks) get the same
environment through :func:`child_env`.

On macOS none of this applies: MLX uses Metal and Accelerate.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from pathlib import Path

OPT_OUT_ENV = "PUNIE_NO_BLAS_FIX"
_REEXEC_MARK = "PUNIE_BLAS_REEXEC"

# Debian/Ubuntu's threaded OpenBLAS first, then other common layouts.
_CANDIDATE_GLOBS = (
    "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/openblas-openmp/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib/libopenblas.so.0",
)


def applies() -> bool:
    """True on Linux, where MLX's wheel ships the reference BLAS."""
    return platform.system() == "Linux"


def find_openblas() -> Path | None:
    """The first OpenBLAS shared library found on this machine, if any."""
    machine = platform.machine()
    for pattern in _CANDIDATE_GLOBS:
        for hit in sorted(glob.glob(pattern)):
            # Prefer the library of this machine's architecture when several exist.
            if "-linux-gnu" in hit and f"/{machine}-linux-gnu/" not in hit:
                continue
            if os.path.exists(hit):
                return Path(hit)
    return None


def preloaded(env: dict[str, str] | None = None) -> Path | None:
    """The OpenBLAS named in LD_PRELOAD (of ``env``, default this process), if it names one."""
    source = os.environ if env is None else env
    for item in source.get("LD_PRELOAD", "").replace(":", " ").split():
        if "openblas" in os.path.basename(item):
            return Path(item)
    return None


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process that carries the BLAS fix."""
    env = dict(os.environ if base is None else base)
    if not applies() or env.get(OPT_OUT_ENV) == "1":
        return env
    if preloaded(env) is not None:
        return env
    lib = preloaded() or find_openblas()
    if lib is not None:
        env["LD_PRELOAD"] = " ".join(filter(None, [str(lib), env.get("LD_PRELOAD", "")]))
    return env


def reexec_env() -> dict[str, str] | None:
    """The environment to re-execute with, or None when no re-execution is wanted.

    None when opted out, when the platform is not Linux, when no OpenBLAS exists,
    when MLX is already loaded, or when this process is already the re-executed one.
    """
    if not applies() or os.environ.get(OPT_OUT_ENV) == "1":
        return None
    if os.environ.get(_REEXEC_MARK) == "1" or preloaded() is not None:
        return None
    if "mlx.core" in sys.modules:
        return None
    env = child_env()
    if "openblas" not in env.get("LD_PRELOAD", ""):
        return None
    env[_REEXEC_MARK] = "1"
    return env


def ensure_fast_blas() -> None:
    """Re-execute the current process once with OpenBLAS preloaded, when useful.

    Must run before ``mlx`` is imported; returns without doing anything when
    :func:`reexec_env` says no re-execution is wanted.
    """
    env = reexec_env()
    if env is None:
        return
    # Re-run the same interpreter with the same arguments (``-m`` aware via orig_argv).
    orig = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *orig[1:]], env)


def loaded_blas() -> str:
    """Which BLAS library this process has mapped (read from /proc/self/maps on Linux)."""
    if platform.system() == "Darwin":
        return "Accelerate (macOS)"
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return "unknown"
    libs = set()
    for line in maps.read_text().splitlines():
        name = line.rsplit(" ", 1)[-1]
        base = os.path.basename(name).lower()
        # NumPy's wheels bundle an OpenBLAS with renamed symbols (scipy_cblas_*): MLX cannot use it.
        if "blas" in base and "scipy_openblas" not in base:
            libs.add(name)
    openblas = sorted(lib for lib in libs if "openblas" in os.path.basename(lib))
    if openblas:
        return f"OpenBLAS ({openblas[0]})"
    if libs:
        return f"reference BLAS ({sorted(libs)[0]})"
    return "none loaded yet"
