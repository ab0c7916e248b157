"""What ``punie doctor`` reports: the platform, MLX, BLAS speed, memory, the model cache and the sandbox."""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from typing import Any

from punie import blas, paths
from punie.traces import sandbox
from punie.training.distributed import available_backends


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Measured fp32 matmul throughput of the default device, in GFLOP/s (best of ``repeats``)."""
    import mlx.core as mx

    a = mx.random.normal((n, n), dtype=mx.float32)
    b = mx.random.normal((n, n), dtype=mx.float32)
    mx.eval(a @ b)  # warm-up: first call pays for allocation and kernel setup
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(a @ b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def report(measure: bool = True) -> dict[str, Any]:
    import mlx.core as mx

    from punie.models import registry

    default_dir = registry.default_model_dir()
    info: dict[str, Any] = {
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": sys.version.split()[0],
        "mlx": _version("mlx"),
        "mlx_lm": _version("mlx-lm"),
        "punie": _version("punie"),
        "device": mx.default_device().type.name,
        "blas": blas.loaded_blas(),
        "memory_gb": round((total_memory_bytes() or 0) / 2**30, 1),
        "punie_home": str(paths.punie_home()),
        "default_model": str(default_dir) if (default_dir / "config.json").is_file() else None,
    }
    if blas.applies() and "OpenBLAS" not in info["blas"]:
        found = blas.find_openblas()
        if os.environ.get(blas.OPT_OUT_ENV) == "1":
            info["blas_hint"] = f"{blas.OPT_OUT_ENV}=1 is set; unset it to use an optimized BLAS."
        elif found is None:
            info["blas_hint"] = ("no OpenBLAS found: install it (Debian/Ubuntu: "
                                 "'apt-get install libopenblas0-pthread') for ~30x faster CPU matmuls.")
        else:
            info["blas_hint"] = f"OpenBLAS exists at {found} but is not loaded; run punie through its CLI."
    info["distributed_backends"] = ", ".join(available_backends()) or "none"
    info.update(sandbox.describe())
    if measure:
        info["matmul_gflops"] = round(matmul_gflops(), 1)
    return info
