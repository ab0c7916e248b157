"""Save and restore stock snapshots as JSON files."""

import json
from pathlib import Path

SNAPSHOT_DIR = Path("snapshots")


def save_snapshot(items, label):
    SNAPSHOT_DIR.mkdir(exist_ok=True)
    path = SNAPSHOT_DIR / f"{label}.json"
    path.write_text(json.dumps([vars(item) for item in items], indent=2))
    return path


def load_snapshot(label):
    return json.loads((SNAPSHOT_DIR / f"{label}.json").read_text())
