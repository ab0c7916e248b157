"""Where punie keeps its files.

Everything punie writes on its own lives under PUNIE_HOME (default ``~/.punie``);
tests point the variable at a temporary directory. Functions, not constants, so
that a change of the environment variable takes effect at once.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "PUNIE_HOME"


def punie_home() -> Path:
    """The root of punie's user directory (created on first use)."""
    raw = os.environ.get(HOME_ENV)
    home = Path(raw).expanduser() if raw else Path.home() / ".punie"
    home.mkdir(parents=True, exist_ok=True)
    return home


def models_dir() -> Path:
    """Imported and converted models, one directory each."""
    return _sub("models")


def downloads_dir() -> Path:
    """Downloaded files (wheels, GGUF files) kept so a re-import needs no network."""
    return _sub("downloads")


def servers_dir() -> Path:
    """One JSON state file per managed mlx_lm.server process."""
    return _sub("servers")


def logs_dir() -> Path:
    """Log files of background processes."""
    return _sub("logs")


def runs_dir() -> Path:
    """Default output location for eval runs and demo artifacts."""
    return _sub("runs")


def new_run_dir(kind: str) -> Path:
    """A directory under runs/ for a run of ``kind`` that does not exist yet: ``KIND-YYYYmmdd-HHMMSS``
    (``-2``, ``-3`` ... when two runs start in the same second)."""
    from datetime import datetime

    stem = runs_dir() / f"{kind}-{datetime.now():%Y%m%d-%H%M%S}"
    out, n = stem, 1
    while out.exists():
        n += 1
        out = stem.with_name(f"{stem.name}-{n}")
    return out


def traces_db() -> Path:
    """The SQLite trace store."""
    return punie_home() / "traces.sqlite"


def _sub(name: str) -> Path:
    path = punie_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Recomputable results kept between runs (e.g. preference training's reference log-probs)."""
    return _sub("cache")
