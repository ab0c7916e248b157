"""``punie data split``: one JSONL file into train/valid/test, deterministic and stratified.

How records are assigned:

1. Records that are duplicates (exact or near, see :mod:`punie.data.dedupe`)
   form one group and go to the same split, so a split never leaks its copies
   into another.
2. With ``stratify``, groups are sorted by the label of their first record
   (``(none)`` for records without one); each label's groups are shuffled with
   the seeded RNG.
3. Walking the groups in that order, each goes to the split furthest below its
   share so far (largest ``ratio * records_so_far - assigned``). Every prefix of
   the walk, and so every label's block, is split in the ratios to within about
   one group per split.

Records are written back verbatim (no re-serialisation) in their original order
within each split, so every input line appears in exactly one output file.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punie import fileio
from punie.data.dedupe import record_keys
from punie.data.formats import detect_format, raw_jsonl_lines
from punie.data.labels import label_of
from punie.errors import ConfigError, DataError

SPLIT_NAMES = ("train", "valid", "test")
REQUIRED_SPLITS = ("train", "valid")  # training needs both; test is optional
NO_LABEL = "(none)"
# What datasets (Hugging Face and others) call punie's three splits.
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "valid", "valid": "valid", "val": "valid",
                 "dev": "valid", "test": "test", "testing": "test"}


def canonical_split(name: str) -> str | None:
    """punie's name (train, valid or test) for a dataset's split name, or None if it is none of them."""
    return SPLIT_ALIASES.get(name.strip().lower())


def parse_ratios(text: str, *, option: str = "--ratios") -> tuple[float, ...]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1): two or three non-negative shares summing to 1, train's above 0."""
    try:
        ratios = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r}: expected numbers like 0.8,0.1,0.1") from exc
    return check_ratios(ratios, where=f"{option} {text!r}")


def check_ratios(ratios: tuple[float, ...], *, where: str | None = None) -> tuple[float, ...]:
    """``ratios`` if they are shares of train, valid[, test]; ConfigError naming ``where`` otherwise."""
    where = where or f"split ratios {','.join(f'{r:g}' for r in ratios)}"
    if len(ratios) not in (2, 3) or any(r < 0 for r in ratios) or ratios[0] <= 0:
        raise ConfigError(f"{where}: expected 2 or 3 non-negative shares (train, valid[, test]) with train above 0")
    if abs(sum(ratios) - 1) > 1e-6:
        raise ConfigError(f"{where} sums to {sum(ratios):g}; the shares must sum to 1")
    return tuple(ratios)


def _format_or_none(record: dict[str, Any]) -> str | None:
    try:
        return detect_format(record)
    except DataError:
        return None


def split_records(records: list[dict[str, Any]], ratios: tuple[float, ...], *, stratify: str | None = None,
                  seed: int = 42) -> list[list[int]]:
    """Indices of ``records`` per split (ascending), one list per ratio; every index in exactly one list."""
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record_keys(record).near, []).append(i)
    strata: dict[str, list[list[int]]] = {}
    for members in groups.values():
        first = records[members[0]]
        label = label_of(first, _format_or_none(first), stratify) if stratify else None
        strata.setdefault(label if label is not None else NO_LABEL, []).append(members)
    return split_groups(strata, ratios, seed=seed)


def split_groups(strata: dict[str, list[list[int]]], ratios: tuple[float, ...], *, seed: int = 42) -> list[list[int]]:
    """Steps 2 and 3 of the module docstring: groups of indices, by label, dealt out in the ratios.

    Returns the indices per split (ascending), one list per ratio; a group's members stay together.
    """
    rng = random.Random(seed)
    assigned = [0] * len(ratios)
    chosen: list[list[int]] = [[] for _ in ratios]
    seen = 0
    for label in sorted(strata):
        block = list(strata[label])
        rng.shuffle(block)
        for members in block:
            seen += len(members)
            deficits = [r * seen - a for r, a in zip(ratios, assigned, strict=True)]
            j = deficits.index(max(deficits))
            assigned[j] += len(members)
            chosen[j].extend(members)
    return [sorted(indices) for indices in chosen]


@dataclass
class SplitResult:
    paths: dict[str, Path]
    counts: dict[str, int]
    strata: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> split -> records


def split_file(file: Path, out_dir: Path, *, ratios: tuple[float, ...] = (0.8, 0.1, 0.1),
               stratify: str | None = None, seed: int = 42, force: bool = False) -> SplitResult:
    """Split a JSONL file into ``out_dir``/{train,valid,test}.jsonl (splits with ratio 0 are not written)."""
    file, out_dir = Path(file), Path(out_dir)
    lines = raw_jsonl_lines(file)
    records = [json.loads(line) for line in lines]
    if not records:
        raise DataError(f"{file} holds no records")
    names = SPLIT_NAMES[: len(ratios)]
    targets = {name: out_dir / f"{name}.jsonl" for name, r in zip(names, ratios, strict=True) if r > 0}
    _refuse_overwrite(file, list(targets.values()), force)
    labels = _labels(file, records, stratify)
    parts = dict(zip(names, split_records(records, ratios, stratify=stratify, seed=seed), strict=True))
    for name in targets:
        if not parts[name]:
            raise DataError(f"{file} has {len(records)} records; with --ratios {','.join(map(str, ratios))} the "
                            f"{name} split would be empty (duplicates stay together). Add records or raise its share.")
    for name, path in targets.items():
        fileio.write_text(path, "".join(lines[i] + "\n" for i in parts[name]))
    strata: dict[str, dict[str, int]] = {}
    if stratify:
        for name, indices in parts.items():
            for i in indices:
                row = strata.setdefault(labels[i], dict.fromkeys(targets, 0))
                row[name] = row.get(name, 0) + 1
    return SplitResult(paths=targets, counts={n: len(parts[n]) for n in targets}, strata=dict(sorted(strata.items())))


def _labels(file: Path, records: list[dict[str, Any]], stratify: str | None) -> list[str]:
    if not stratify:
        return [NO_LABEL] * len(records)
    labels = [label_of(r, _format_or_none(r), stratify) for r in records]
    if all(label is None for label in labels):
        fields = sorted({k for r in records for k in r})
        raise DataError(f"no record in {file} has a label {stratify!r} (fields: {', '.join(fields)}); --stratify "
                        "takes a top-level field such as category, or 'answer' (yes/no replies) or 'tool'")
    return [label if label is not None else NO_LABEL for label in labels]


def _refuse_overwrite(source: Path, targets: list[Path], force: bool) -> None:
    for path in targets:
        if path.exists() and path.resolve() == source.resolve():
            raise DataError(f"{source} would be overwritten by its own split; choose another --out directory")
        if path.exists() and not force:
            raise DataError(f"{path} already exists; pass --force to replace it, or choose another --out directory")
