"""Resolving, importing and loading models and adapters."""
