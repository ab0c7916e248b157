"""punie: a local fine-tuning workbench for LLM agents, built on MLX.

Importing punie does not import MLX: the CLI first makes sure an optimized BLAS
is preloaded on Linux (see :mod:`punie.blas`), which must happen before MLX loads.
"""

__version__ = "0.1.0"
