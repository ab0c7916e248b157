"""``punie data balance``: make every value of a label equally common in train.jsonl.

Only the training split changes; valid.jsonl and test.jsonl are copied as they
are, since a rebalanced evaluation set would no longer measure the real
distribution. The result goes to a new directory: the original is never touched.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from punie import fileio
from punie.data.formats import detect_format, raw_jsonl_lines
from punie.data.labels import label_of
from punie.errors import ConfigError, DataError

BALANCE_METHODS = ("upsample", "downsample")


def balance_indices(labels: list[str | None], method: str, seed: int = 42, max_ratio: float = 1.0) -> list[int]:
    """Indices of the records to keep (with repeats when upsampling) so every label value is equally common.

    Records without a label are kept once, untouched. Upsampling repeats each
    minority record in turn (whole passes first, then a seeded random choice for
    the remainder); downsampling keeps a seeded random subset of each value, of at
    most ``max_ratio`` times the rarest value's count (1: all equal).
    The result keeps the original order, repeats after their originals' block.
    """
    if method not in BALANCE_METHODS:
        raise ConfigError(f"--method {method!r}: expected one of {', '.join(BALANCE_METHODS)}")
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if label is not None:
            groups.setdefault(label, []).append(i)
    if not groups:
        return list(range(len(labels)))
    rng = random.Random(seed)
    target = (max if method == "upsample" else min)(len(g) for g in groups.values())
    keep = [i for i, label in enumerate(labels) if label is None]
    extra: list[int] = []
    for label in sorted(groups):
        members = groups[label]
        if method == "downsample":
            keep += sorted(rng.sample(members, min(len(members), int(max_ratio * target))))
            continue
        keep += members
        whole, rest = divmod(target - len(members), len(members))
        extra += members * whole + sorted(rng.sample(members, rest))
    return sorted(keep) + extra


@dataclass
class BalanceResult:
    out_dir: Path
    before: dict[str, int]
    after: dict[str, int]
    unlabeled: int


def balance_dir(data_dir: Path, out_dir: Path, *, field: str, method: str = "upsample", seed: int = 42,
                force: bool = False) -> BalanceResult:
    """Write ``out_dir`` with a balanced train.jsonl and the other splits copied verbatim."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if method not in BALANCE_METHODS:
        raise ConfigError(f"--method {method!r}: expected one of {', '.join(BALANCE_METHODS)}")
    if out_dir.resolve() == data_dir.resolve():
        raise DataError(f"--out {out_dir} is the data directory itself; write the balanced copy elsewhere")
    train = data_dir / "train.jsonl"
    if not train.is_file():
        raise DataError(f"{train} is missing; balance works on a data directory ('punie data split' makes one)")
    lines = raw_jsonl_lines(train)
    records = [json.loads(line) for line in lines]
    labels = [label_of(r, _format(r), field) for r in records]
    if all(label is None for label in labels):
        raise DataError(f"no record in {train} has a label {field!r}; --field takes a top-level field such as "
                        "category, or 'answer' (yes/no replies) or 'tool'")
    copies = [p for p in (data_dir / "valid.jsonl", data_dir / "test.jsonl") if p.is_file()]
    for path in [out_dir / "train.jsonl", *(out_dir / p.name for p in copies)]:
        if path.exists() and not force:
            raise DataError(f"{path} already exists; pass --force to replace it, or choose another --out")
    keep = balance_indices(labels, method, seed)
    fileio.write_text(out_dir / "train.jsonl", "".join(lines[i] + "\n" for i in keep))
    for path in copies:
        fileio.write_bytes(out_dir / path.name, path.read_bytes())
    present = [label for label in labels if label is not None]
    return BalanceResult(out_dir=out_dir, before=dict(Counter(present).most_common()),
                         after=dict(Counter(str(labels[i]) for i in keep if labels[i] is not None).most_common()),
                         unlabeled=len(labels) - len(present))


def _format(record: dict) -> str | None:
    try:
        return detect_format(record)
    except DataError:
        return None
