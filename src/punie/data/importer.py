"""``punie data import``: rows from a ``datasets`` dataset, CSV, JSON(L) or Parquet into a punie format.

Columns are mapped onto a format's fields with ``FIELD=COLUMN`` pairs; a field
whose column has the same name needs no mapping. Chat data can be built from
``system``/``user``/``assistant`` columns. Columns holding ``messages``,
``tools`` or preference replies may be JSON strings (as in a CSV). Pairs whose
field is not a format field rename a metadata column (``category=topic``), and
``id``, ``category``, ``label`` and ``route`` columns are kept when present.

Rows are converted, never dropped: a row with an empty or missing value is
written as it is and reported, so ``punie data check`` can point at it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punie import fileio
from punie.data.findings import ERROR, Finding, severity
from punie.data.formats import FORMATS, read_jsonl
from punie.data.schema import validate_record
from punie.data.split import canonical_split
from punie.errors import ConfigError, DataError

TURN_FIELDS = ("system", "user", "assistant")
JSON_FIELDS = frozenset({"messages", "tools", "chosen", "rejected"})
TEXT_FIELDS = frozenset({"prompt", "completion", "text", "chosen", "rejected", *TURN_FIELDS})
METADATA_COLUMNS = ("id", "category", "label", "route")
ALL_FILE = "all.jsonl"
Rows = list[dict[str, Any]]


def parse_mapping(items: list[str], *, option: str = "--map") -> dict[str, str]:
    """``["prompt=question", ...]`` -> ``{"prompt": "question"}`` (``--map`` here, ``--hf-field`` for training)."""
    mapping = {}
    for item in items:
        target, sep, column = item.partition("=")
        if not sep or not target.strip() or not column.strip():
            raise ConfigError(f"{option} {item!r}: expected FIELD=COLUMN, e.g. {option} prompt=question")
        mapping[target.strip()] = column.strip()
    return mapping


def load_rows(source: str, *, split: str | None = None) -> dict[str, Rows]:
    """Rows per source split: a saved ``datasets`` directory, a CSV/JSON/JSONL/Parquet file, or a hub name."""
    path = Path(source).expanduser()
    if path.is_dir():
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise DataError(f"{path} is not a dataset saved with save_to_disk: {exc}") from exc
    elif path.is_file():
        loaded = {"train": _read_file(path)}
    else:
        loaded = _load_hub(source)
    if isinstance(loaded, dict) or hasattr(loaded, "keys"):
        splits = {name: _to_rows(loaded[name]) for name in loaded}
    else:
        splits = {"train": _to_rows(loaded)}
    if split is not None:
        if split not in splits:
            raise DataError(f"{source} has no split {split!r} (splits: {', '.join(splits)})")
        return {split: splits[split]}
    return splits


def _to_rows(data: Any) -> Rows:
    return data if isinstance(data, list) else data.to_list()


def _read_file(path: Path) -> Rows:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh))
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return read_jsonl(path)  # JSON Lines saved with a .json name
        if isinstance(data, list) and all(isinstance(row, dict) for row in data):
            return data
        raise DataError(f"{path} must hold a JSON list of objects (one per row), or one object per line")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise DataError(f"{path}: unknown file type {suffix!r}; import reads .csv, .json, .jsonl, .parquet "
                    "or a directory saved with datasets' save_to_disk")


def _load_hub(name: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(name)
    except Exception as exc:  # the hub client raises many types (connection, not found, auth)
        raise DataError(f"{name!r} is not a local file or directory, and loading it from the Hugging Face hub "
                        f"failed ({type(exc).__name__}: {exc}). Give a path, or a hub name where the hub is "
                        "reachable.") from exc


def plan_columns(fmt: str, columns: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """Which column fills each field of ``fmt`` (DataError naming the missing one and the columns there are)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    for target, column in mapping.items():
        if column not in columns:
            raise DataError(f"--map {target}={column}: there is no column {column!r} (columns: {', '.join(columns)})")

    def has(name: str) -> bool:
        return mapping.get(name, name) in columns

    def need(*names: str) -> dict[str, str]:
        for name in names:
            if not has(name):
                raise DataError(f"{fmt} data needs a {name!r} field but there is no column {name!r} "
                                f"(columns: {', '.join(columns)}); map one with --map {name}=COLUMN"
                                + (" or give user=COLUMN and assistant=COLUMN" if name == "messages" else ""))
        return {name: mapping.get(name, name) for name in names}

    def optional(*names: str) -> dict[str, str]:
        return {name: mapping.get(name, name) for name in names if has(name)}

    def turns() -> dict[str, str]:
        if has("messages") or not (has("user") or has("assistant")):
            return need("messages")  # the message names the fix; user/assistant columns also work
        return {**optional("system"), **need("user", "assistant")}

    plans = {
        "chat": turns,
        "tools": lambda: {**turns(), **need("tools")},
        "completions": lambda: {**need("prompt", "completion"), **optional("tools")},
        "text": lambda: need("text"),
        "preference": lambda: {**(need("messages") if has("messages") else need("prompt")),
                               **need("chosen", "rejected"), **optional("tools")},
    }
    return plans[fmt]()


def convert_row(row: dict[str, Any], plan: dict[str, str], metadata: dict[str, str], where: str) -> dict[str, Any]:
    """One source row as a punie record."""
    values = {name: _value(name, row.get(column), where) for name, column in plan.items()}
    if "user" in values:
        turns = [{"role": role, "content": values.pop(role)} for role in TURN_FIELDS if role in values]
        values = {"messages": turns, **values}
    record = dict(values)
    for name, column in metadata.items():
        if row.get(column) is not None:
            record.setdefault(name, row[column])
    return record


def _value(name: str, value: Any, where: str) -> Any:
    if name in JSON_FIELDS and isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: {name!r} looks like JSON but does not parse: {exc.msg}") from exc
    if name in TEXT_FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


@dataclass
class ImportResult:
    paths: dict[str, Path]
    counts: dict[str, int]
    problems: list[Finding] = field(default_factory=list)  # error-level problems in the written records


def import_dataset(source: str, out_dir: Path, *, fmt: str, mapping: dict[str, str] | None = None,
                   keep: tuple[str, ...] = (), split: str | None = None, force: bool = False) -> ImportResult:
    """Convert ``source`` into JSONL files in ``out_dir``: train/valid/test.jsonl when the source has those
    splits, else ``all.jsonl`` (for ``punie data split``)."""
    mapping = dict(mapping or {})
    splits = load_rows(source, split=split)
    targets = _targets(source, splits, Path(out_dir), force)
    columns = list(dict.fromkeys(col for rows in splits.values() for row in rows[:1] for col in row))
    plan = plan_columns(fmt, columns, mapping)
    missing = [col for col in keep if col not in columns]
    if missing:
        raise DataError(f"--keep {','.join(missing)}: no such column (columns: {', '.join(columns)})")
    metadata = {col: col for col in (*METADATA_COLUMNS, *keep) if col in columns and col not in plan.values()}
    metadata |= {name: col for name, col in mapping.items() if name not in plan}
    result = ImportResult(paths={}, counts={})
    for target, names in targets.items():
        rows = [(name, i, row) for name in names for i, row in enumerate(splits[name], start=1)]
        records = [convert_row(row, plan, metadata, f"{source} [{name}] row {i}") for name, i, row in rows]
        path = Path(out_dir) / target
        fileio.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        result.paths[target], result.counts[target] = path, len(records)
        for line, record in enumerate(records, start=1):
            for problem in validate_record(record)[1]:
                if severity(problem.code) == ERROR:
                    result.problems.append(Finding(str(path), line, problem.code, problem.message))
    return result


def _targets(source: str, splits: dict[str, Rows], out_dir: Path, force: bool) -> dict[str, list[str]]:
    """Output file -> source splits written to it."""
    known = {name: canonical_split(name) for name in splits}
    if len(splits) > 1 and all(known.values()) and "train" in known.values():
        targets: dict[str, list[str]] = {}
        for name, punie_name in known.items():
            targets.setdefault(f"{punie_name}.jsonl", []).append(name)
    elif len(splits) == 1:
        targets = {ALL_FILE: list(splits)}
    else:
        raise DataError(f"{source} has splits {', '.join(splits)}, which do not map onto train/valid/test; "
                        "import one with --split NAME")
    for name in targets:
        if (out_dir / name).exists() and not force:
            raise DataError(f"{out_dir / name} already exists; pass --force to replace it, or choose another --out")
    return targets
