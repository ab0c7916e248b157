"""punie: a local fine-tuning workbench for LLM agents, built on MLX.

Importing punie does not import MLX: the CLI first makes sure an optimized BLAS
is preloaded on Linux (see :mod:`punie.blas`), which must happen before MLX loads.
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy, so that ``import punie`` stays free of MLX
    if name in ("train", "TrainConfig", "TrainResult"):
        from punie import training

        return getattr(training, name)
    raise AttributeError(f"module 'punie' has no attribute {name!r}")
