"""Preference pairs as token ids: one prompt, two completions, rendered by punie's chat template.

A pair is rendered exactly as ``punie train`` renders a chat record (mlx-lm's
``ChatDataset``: the tokenizer's chat template over prompt + reply); the prompt
is the conversation up to the generation prompt, so both replies share its
tokens and the model runs it once per pair. Batches are built from a
:class:`punie.training.data.TokenizedSplit` view so training's batch plan (length
buckets, a data order that is a pure function of seed and step) applies as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from punie.data.formats import preference_turns, scan_jsonl
from punie.errors import DataError
from punie.training.data import TokenizedSplit

PAD_TO = 32  # widths are rounded up to this, so the compiled step sees few shapes


@dataclass
class PairSplit:
    name: str
    prompts: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]
    lines: list[int]  # the JSONL line of each pair, for reports
    truncated: int = 0  # pairs whose replies were cut to fit max_seq_length
    skipped: list[int] | None = None  # lines of pairs whose prompt alone does not fit

    def __len__(self) -> int:
        return len(self.prompts)

    def as_tokenized(self) -> TokenizedSplit:
        """Training's view (prompt + longer reply per pair) for batch_plan's length buckets."""
        tokens = [p + max(c, r, key=len) for p, c, r in zip(self.prompts, self.chosen, self.rejected, strict=True)]
        return TokenizedSplit(self.name, tokens, [len(p) for p in self.prompts], self.truncated, 0)

    def subset(self, keep: list[int]) -> PairSplit:
        return PairSplit(self.name, [self.prompts[i] for i in keep], [self.chosen[i] for i in keep],
                         [self.rejected[i] for i in keep], [self.lines[i] for i in keep], self.truncated,
                         self.skipped)


def read_pairs(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, record) of every preference pair in a JSONL file; DataError ``FILE:LINE`` otherwise."""
    records, problems = scan_jsonl(path)
    bad = [p for p in problems if p.code != "blank-line"]
    if bad:
        raise DataError(f"{path}:{bad[0].line}: {bad[0].message}")
    for line, record in records:
        if "chosen" not in record or "rejected" not in record:
            raise DataError(f"{path}:{line}: not a preference pair (needs 'chosen' and 'rejected'); train "
                            "chat, tools or completions data with 'punie train'.")
    if not records:
        raise DataError(f"{path}: no preference pairs in it.")
    return records


def tokenize_pairs(name: str, path: Path, tokenizer: Any, max_seq_length: int) -> PairSplit:
    split = PairSplit(name, [], [], [], [], skipped=[])
    for line, record in read_pairs(path):
        try:
            prompt, chosen, rejected = _pair_tokens(tokenizer, record)
        except DataError as exc:
            raise DataError(f"{path}:{line}: {exc}") from exc
        room = max_seq_length - len(prompt)
        if room < 1:
            assert split.skipped is not None
            split.skipped.append(line)
            continue
        if len(chosen) > room or len(rejected) > room:
            split.truncated += 1
        split.prompts.append(prompt)
        split.chosen.append(chosen[:room])
        split.rejected.append(rejected[:room])
        split.lines.append(line)
    return split


def _pair_tokens(tokenizer: Any, record: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
    messages, chosen, rejected = preference_turns(record)
    tools = record.get("tools") or None
    prompt = list(tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                return_dict=False))
    replies = []
    for side, reply in (("chosen", chosen), ("rejected", rejected)):
        full = list(tokenizer.apply_chat_template(messages + [reply], tools=tools, return_dict=False))
        if full[:len(prompt)] != prompt:
            raise DataError(f"the chat template does not render the prompt as a prefix of the {side} "
                            "conversation, so the prompt cannot be shared; use a model with punie's template")
        if len(full) == len(prompt):
            raise DataError(f"the {side} reply renders to no tokens")
        replies.append(full[len(prompt):])
    return prompt, replies[0], replies[1]


@dataclass
class PairBatch:
    """Prompts left-padded to one width (so every prompt ends at the same position), replies right-padded.

    ``prompts`` [B, P] and ``prompt_valid`` [B, P]; ``replies`` [2B, C] holds the
    chosen replies, then the rejected ones, with their lengths in ``reply_lengths`` [2B].
    """

    prompts: Any
    prompt_valid: Any
    replies: Any
    reply_lengths: Any

    @property
    def pairs(self) -> int:
        return int(self.prompts.shape[0])


def _round_up(n: int) -> int:
    return PAD_TO * ((n + PAD_TO - 1) // PAD_TO)


def make_pair_batch(split: PairSplit, indices: list[int]) -> PairBatch:
    import mlx.core as mx

    width = _round_up(max(len(split.prompts[i]) for i in indices))
    prompts = np.zeros((len(indices), width), np.int32)
    valid = np.zeros((len(indices), width), bool)
    for row, i in enumerate(indices):
        p = split.prompts[i]
        prompts[row, width - len(p):] = p
        valid[row, width - len(p):] = True
    replies = [split.chosen[i] for i in indices] + [split.rejected[i] for i in indices]
    reply_width = _round_up(max(map(len, replies)))
    reply_arr = np.zeros((len(replies), reply_width), np.int32)
    for row, r in enumerate(replies):
        reply_arr[row, :len(r)] = r
    return PairBatch(mx.array(prompts), mx.array(valid), mx.array(reply_arr),
                     mx.array([len(r) for r in replies], dtype=mx.int32))
