"""Datasets: formats, validation (``punie data check``), splits, balance and import.

The formats are mlx-lm's (chat, tools, completions, text) plus preference pairs;
see :mod:`punie.data.formats`. Checks report every bad record with its
``file:line`` (:mod:`punie.data.check`); nothing is dropped silently.
"""
