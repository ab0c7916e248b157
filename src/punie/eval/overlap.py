"""Held-out checks: a suite a result is reported (or chosen) on must share no prompt with what was trained on.

A prompt is a case's messages, compared exactly (key order ignored). A
training record contributes every prompt it shows the model: each of its
conversations cut before each assistant turn, so a multi-turn trace's middle
turns count as well as its last. ``punie improve`` refuses a held-out suite
sharing a prompt with its training suite; ``punie sweep`` refuses a selection
suite that shares one with the test suite or the training data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from punie.errors import DataError
from punie.eval.suite import EvalCase


def prompt_key(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages, sort_keys=True)


def suite_prompts(cases: Iterable[EvalCase]) -> set[str]:
    return {prompt_key(c.messages) for c in cases}


def data_prompts(path: Path) -> set[str]:
    """Every prompt the records of a training data file (JSONL, any punie format) show the model."""
    from punie.data.formats import conversations, detect_format, read_jsonl

    prompts: set[str] = set()
    for record in read_jsonl(path):
        for messages in conversations(record, detect_format(record)):
            prompts.update(prompt_key(messages[:i]) for i, m in enumerate(messages)
                           if i and isinstance(m, dict) and m.get("role") == "assistant")
    return prompts


def check_disjoint(held_out: list[EvalCase], held_path: Path, other: set[str], other_path: Path, *,
                   what: str = "a held-out suite must not contain training cases") -> None:
    """DataError naming the shared cases when any case of ``held_out`` has a prompt in ``other``."""
    ids = [c.id for c in held_out if prompt_key(c.messages) in other]
    if ids:
        raise DataError(f"{held_path} shares {len(ids)} prompt(s) with {other_path} (cases "
                        f"{', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}); {what}.")
