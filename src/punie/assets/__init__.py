"""The one place that finds punie's packaged files: report templates and the sample workspace.

The repository keeps them where a reader looks for them, ``templates/`` and
``data/workspace/`` at the top level. ``templates`` and ``workspace`` in this
package are symbolic links to those folders, so a checkout (and an editable
install) reads the originals, and building a wheel copies their contents into
the package (``package-data`` in pyproject.toml). There is one source and no
copy to drift; everything is found through :mod:`importlib.resources`, so an
installed wheel works like the checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from punie.errors import PunieError

TEMPLATES = "templates"
WORKSPACE = "workspace"


def packaged_dir(name: str) -> Path:
    """The packaged folder ``name`` as a directory on disk; PunieError if the install lacks it."""
    folder = resources.files(__name__) / name
    # A package imported from files gives a real path; copying the workspace and jinja2 need one.
    if not isinstance(folder, Path) or not folder.is_dir():
        raise PunieError(f"punie's packaged folder {name!r} is missing (looked in {folder}). Reinstall punie "
                         "from a wheel built from the repository, or install the checkout with 'pip install -e .'.")
    return folder


def templates_dir() -> Path:
    """The folder of the jinja2 report templates (``templates/`` in the repository)."""
    return packaged_dir(TEMPLATES)


def sample_workspace() -> Path:
    """The sample project the demo's agent works on (``data/workspace/`` in the repository)."""
    return packaged_dir(WORKSPACE)
