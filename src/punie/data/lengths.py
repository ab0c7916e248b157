"""Token lengths as training sees them, and their histogram.

A record is rendered and tokenized exactly as mlx-lm's datasets do: chat,
tools, completions and preference records through the tokenizer's chat
template (a preference pair counts as its longer reply); text records encoded
as they are, plus the end-of-sequence token.
"""

from __future__ import annotations

import math
from typing import Any

from punie.chat.template import render
from punie.data.formats import conversations


def has_chat_template(tokenizer: Any) -> bool:
    has = getattr(tokenizer, "has_chat_template", None)
    if has is None:
        has = getattr(tokenizer, "chat_template", None) is not None
    return bool(has)


def sequence_length(tokenizer: Any, record: dict[str, Any], fmt: str) -> int:
    """Tokens training would see for this record (before any truncation)."""
    if fmt == "text":
        ids = tokenizer.encode(record["text"])
        return len(ids) + (0 if ids and ids[-1] == tokenizer.eos_token_id else 1)
    tools = record.get("tools") or None
    return max(len(tokenizer.encode(render(tokenizer, messages, tools), add_special_tokens=False))
               for messages in conversations(record, fmt))


def length_stats(lengths: list[int], max_seq_length: int, bins: int = 10) -> dict[str, Any]:
    """Summary and histogram of token lengths; the last bin holds those over ``max_seq_length``."""
    if not lengths:
        return {"count": 0, "max_seq_length": max_seq_length, "too_long": 0, "histogram": []}
    ordered = sorted(lengths)
    # Bins span the lengths that fit (shortest to longest, capped at max_seq_length); one more holds the rest.
    low, top = ordered[0], min(ordered[-1], max_seq_length)
    fitting = [n for n in ordered if n <= max_seq_length]
    histogram: list[dict[str, Any]] = []
    if fitting:
        width = max(1, math.ceil((top - low + 1) / bins))
        counts = [0] * math.ceil((top - low + 1) / width)  # no bin starts past the top
        for n in fitting:
            counts[(n - low) // width] += 1
        for i, c in enumerate(counts):
            lo, hi = low + i * width, min(low + (i + 1) * width - 1, top)
            histogram.append({"label": f"{lo}-{hi}" if hi > lo else str(lo), "count": c})
    over = len(ordered) - len(fitting)
    histogram.append({"label": f"> {max_seq_length}", "count": over})
    return {
        "count": len(ordered),
        "min": ordered[0],
        "mean": round(sum(ordered) / len(ordered), 1),
        "p50": _percentile(ordered, 50),
        "p95": _percentile(ordered, 95),
        "max": ordered[-1],
        "max_seq_length": max_seq_length,
        "too_long": over,
        "histogram": histogram,
    }


def _percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
