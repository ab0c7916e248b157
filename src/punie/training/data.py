"""Training data: read splits, tokenize them with the model's chat template, batch them.

Records are tokenized once, up front, through mlx-lm's dataset classes (so punie
renders exactly what ``mlx_lm.lora`` would). Batches group examples of similar
length to waste little compute on padding, mixed within each length bucket. The
data order is a pure function of (seed, step), so a resumed run sees the same
batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from punie.data.formats import detect_format, read_jsonl
from punie.data.split import REQUIRED_SPLITS, canonical_split
from punie.data.split import SPLIT_NAMES as SPLITS
from punie.errors import DataError
from punie.training.config import TrainConfig


@dataclass
class TokenizedSplit:
    """Token ids and the offset where loss starts, per example."""

    name: str
    tokens: list[list[int]]
    offsets: list[int]
    truncated: int  # examples longer than max_seq_length (cut to it, and reported)
    targets_lost: int  # truncated so far that no token of the target is left to train on
    max_seq_length: int | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def usable(self) -> list[int]:
        """Indices of the examples with some target left after truncation (the others are skipped)."""
        if self.max_seq_length is None:
            return list(range(len(self)))
        return [i for i, offset in enumerate(self.offsets) if offset < self.max_seq_length - 1]

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)


def load_records(config: TrainConfig) -> dict[str, list[dict[str, Any]]]:
    """The records of each split that exists, from DATA_DIR or a datasets dataset."""
    if config.hf_dataset:
        return _load_hf(config.hf_dataset, config.hf_fields)
    assert config.data is not None
    data_dir = Path(config.data)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a directory; pass a directory holding train.jsonl and valid.jsonl.")
    found: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        path = data_dir / f"{split}.jsonl"
        if path.is_file():
            found[split] = read_jsonl(path)
    _require_splits(found, str(data_dir))
    return found


def _require_splits(found: dict[str, list[dict[str, Any]]], where: str) -> None:
    for split in REQUIRED_SPLITS:
        if split not in found:
            raise DataError(f"{where}: no {split} split ({split}.jsonl). Create train/valid/test files with "
                            "'punie data split ALL.jsonl --out DIR'.")
        if not found[split]:
            raise DataError(f"{where}: {split}.jsonl has no records.")


def _load_hf(name: str, fields: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    from punie.data.importer import load_rows

    try:
        splits = load_rows(name)  # the one loader of datasets: a saved directory, a file or a hub name
    except DataError as exc:
        raise DataError(f"--hf-dataset {name!r}: {exc}") from exc
    found: dict[str, list[dict[str, Any]]] = {}
    for split_name, rows in splits.items():
        if (ours := canonical_split(split_name)) is not None:
            found[ours] = [_map_fields(row, fields) for row in rows]
    _require_splits(found, f"--hf-dataset {name}")
    return found


def _map_fields(row: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """Rename dataset columns to punie's fields (``fields`` maps punie name -> column)."""
    out = dict(row)
    for ours, column in fields.items():
        if column not in row:
            raise DataError(f"--hf-field {ours}={column}: the dataset has no column {column!r} "
                            f"(columns: {', '.join(sorted(row))}).")
        out[ours] = out.pop(column)
    return out


def data_format(records: dict[str, list[dict[str, Any]]]) -> str:
    """The one format all splits share; DataError naming the first record that differs."""
    formats: dict[str, str] = {}
    for split, rows in records.items():
        for i, row in enumerate(rows, start=1):
            try:
                fmt = detect_format(row)
            except DataError as exc:
                raise DataError(f"{split}.jsonl record {i}: {exc}") from exc
            formats.setdefault(fmt, f"{split}.jsonl record {i}")
    if len(formats) > 1:
        raise DataError("the data mixes formats: " + ", ".join(f"{f} (first at {w})" for f, w in formats.items())
                        + ". Use one format for all files.")
    fmt = next(iter(formats))
    if fmt == "preference":
        raise DataError("these are preference pairs (chosen/rejected); train them with 'punie dpo'.")
    return fmt


def tokenize_split(name: str, rows: list[dict[str, Any]], tokenizer: Any, fmt: str, *,
                   mask_prompt: bool, max_seq_length: int) -> TokenizedSplit:
    from mlx_lm.tuner.datasets import ChatDataset, CompletionsDataset, TextDataset

    dataset: Any
    if fmt in ("chat", "tools"):
        dataset = ChatDataset(rows, tokenizer, mask_prompt=mask_prompt)
    elif fmt == "completions":
        dataset = CompletionsDataset(rows, tokenizer, "prompt", "completion", mask_prompt)
    else:
        dataset = TextDataset(rows, tokenizer)
    tokens, offsets = [], []
    for i in range(len(dataset)):
        ids, offset = dataset.process(dataset[i])
        tokens.append(list(ids))
        offsets.append(int(offset))
    truncated = sum(len(t) > max_seq_length for t in tokens)
    lost = sum(offset >= max_seq_length - 1 for offset in offsets)
    return TokenizedSplit(name, tokens, offsets, truncated, lost, max_seq_length)


LENGTH_BUCKET = 64  # examples within one bucket of lengths are batched in random order


def batch_plan(split: TokenizedSplit, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Example indices per batch: grouped by length bucket, shuffled within it, cut into full batches.

    Sorting strictly by length (as mlx-lm does) wastes the least padding but makes
    each batch a run of look-alike examples (in agent data, one kind of task), so
    each step pulls the model one way. Shuffling within 64-token buckets keeps
    batches mixed for a few percent more padding.
    """
    usable = split.usable()
    if len(usable) < batch_size:
        raise DataError(f"{split.name}.jsonl has {len(usable)} examples to train on, fewer than --batch-size "
                        f"{batch_size}; add data or lower --batch-size.")
    tie_break = np.random.default_rng([seed, len(split)]).permutation(len(split))
    order = sorted(usable, key=lambda i: (len(split.tokens[i]) // LENGTH_BUCKET, tie_break[i]))
    return [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def batch_for_step(plan: list[list[int]], seed: int, step: int) -> list[int]:
    """The batch used at 0-based ``step``: each epoch is a fresh permutation of the plan."""
    epoch, position = divmod(step, len(plan))
    permutation = np.random.default_rng([seed, epoch]).permutation(len(plan))
    return plan[int(permutation[position])]


def make_batch(split: TokenizedSplit, indices: list[int], max_seq_length: int) -> tuple[Any, Any]:
    """(tokens [B, L], lengths [B, 2] = (loss start, length)) as mlx-lm's loss expects."""
    import mlx.core as mx

    lengths = [min(len(split.tokens[i]), max_seq_length) for i in indices]
    pad_to = 32  # round up to limit the number of distinct shapes the compiled step sees
    width = min(1 + pad_to * ((max(lengths) + pad_to - 1) // pad_to), max_seq_length)
    arr = np.zeros((len(indices), width), np.int32)
    for row, (i, n) in enumerate(zip(indices, lengths, strict=True)):
        arr[row, :n] = split.tokens[i][:n]
    spans = [(split.offsets[i], n) for i, n in zip(indices, lengths, strict=True)]
    return mx.array(arr), mx.array(spans)


def validation_batches(split: TokenizedSplit, batch_size: int, limit: int) -> Iterator[list[int]]:
    """A fixed set of validation batches (the same every evaluation)."""
    plan = batch_plan(split, min(batch_size, len(split.usable())))
    yield from plan if limit == -1 else plan[:limit]
