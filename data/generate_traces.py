#!/usr/bin/env python
"""Regenerate data/agent/ from the sample workspace (see data/README.md).

The same as ``punie traces demo-data --out data/agent``: a scripted policy drives
the real tools on a copy of data/workspace, every run is recorded in the trace
store (source "demo", replacing earlier demo traces), and the traces are exported
with ``punie traces export``'s code. Extra arguments are passed on, e.g. --seed.
"""

import sys
from pathlib import Path

from punie.cli.entry import main

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.argv = ["punie", "traces", "demo-data", "--out", str(here / "agent"), "--workspace", str(here / "workspace"),
                *sys.argv[1:]]
    main()
