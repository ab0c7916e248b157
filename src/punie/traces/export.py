"""Export stored traces as mlx-lm ``tools`` training data (train/valid/test.jsonl).

Each line is ``{"messages": [...], "tools": [...], "category": ...}`` in training
form. mlx-lm's ``--mask-prompt`` trains only on the last message of an example,
so a trace with several assistant turns becomes one example per assistant turn:
the conversation up to and including that turn. Every turn is then supervised.

Splits are made per trace (the turns of one conversation never straddle
splits), deterministically for a seed, and stratified by category, with the
algorithm of ``punie data split`` (:func:`punie.data.split.split_groups`): each
category gets its share (within one trace) and the totals match the fractions.

A trace is exported only if every assistant tool call parses, names a declared
tool and, with a tokenizer, renders through the chat template and parses back
as itself (:func:`punie.chat.toolcalls.roundtrip_errors`). Others are reported.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punie import fileio
from punie.chat.toolcalls import TOOL_CALL_START, parse_message, roundtrip_errors
from punie.data.dedupe import record_keys
from punie.data.split import SPLIT_NAMES as SPLITS
from punie.data.split import check_ratios, parse_ratios, split_groups
from punie.errors import DataError
from punie.traces.store import PASSED, Trace, TraceStore

_UNCATEGORIZED = ""


@dataclass
class Rejected:
    trace_id: int | None
    reason: str


@dataclass
class ExportReport:
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    traces: dict[str, int] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    skipped_not_passed: int = 0  # left out by only_passed
    checked_with_tokenizer: bool = False


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> (train, valid, test) shares, parsed as ``punie data split --ratios`` parses them."""
    return _three(parse_ratios(text, option="--split"))


def _three(ratios: tuple[float, ...]) -> tuple[float, float, float]:
    """Two shares mean no test split."""
    train, valid, *test = check_ratios(ratios)
    return train, valid, test[0] if test else 0.0


def training_messages(trace: Trace) -> list[dict[str, Any]]:
    """The trace's messages with only the keys the training format has."""
    out = []
    for message in trace.messages:
        clean: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
        if message["role"] == "assistant" and message.get("tool_calls"):
            clean["tool_calls"] = [{"type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                                   for call in parse_message({"tool_calls": message["tool_calls"]}).tool_calls]
        out.append(clean)
    return out


def trace_problems(trace: Trace, tokenizer: Any = None) -> list[str]:
    """Why a trace cannot be training data; empty when it can."""
    declared = {t.get("function", t).get("name") for t in trace.tools}
    messages = training_messages(trace)
    problems = []
    if not any(m["role"] == "assistant" for m in messages):
        problems.append("it has no assistant turn")
    for index, message in enumerate(trace.messages):
        if message.get("role") != "assistant":
            continue
        where = f"message {index}"
        content = message.get("content") or ""
        if message.get("tool_call_errors") or TOOL_CALL_START in content:
            problems.append(f"{where}: a tool call in it does not parse")
            continue
        parsed = parse_message({"tool_calls": message.get("tool_calls")})
        problems += [f"{where}: {e}" for e in parsed.errors]
        problems += [f"{where}: calls {c.name!r}, which is not among the trace's tools"
                     for c in parsed.tool_calls if c.name not in declared]
        if tokenizer is not None and not parsed.errors:
            problems += [f"{where}: {e}" for e in roundtrip_errors(tokenizer, messages, trace.tools or None, index)]
    return problems


def expand(trace: Trace) -> list[dict[str, Any]]:
    """One example per assistant turn: the conversation up to and including that turn."""
    messages = training_messages(trace)
    examples = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        example: dict[str, Any] = {"messages": messages[: index + 1], "tools": trace.tools}
        if trace.category:
            example["category"] = trace.category
        examples.append(example)
    return examples


def assign_splits(traces: list[Trace], split: tuple[float, ...], seed: int) -> dict[str, list[Trace]]:
    """Stratified by category, deterministic: the algorithm of ``punie data split``, a group per trace.

    Traces that give the same example (up to case, spacing and punctuation, as ``punie data check`` compares
    them: "What files are in tests?" on two projects) form one group, so they never straddle train and eval.
    """
    ordered = sorted(traces, key=lambda t: t.id or 0)
    strata: dict[str, list[list[int]]] = {}
    for group in _duplicate_groups(ordered):
        strata.setdefault(ordered[group[0]].category or _UNCATEGORIZED, []).append(group)
    parts = split_groups(strata, _three(split), seed=seed)
    return {name: [ordered[i] for i in indices] for name, indices in zip(SPLITS, parts, strict=True)}


def _duplicate_groups(traces: list[Trace]) -> list[list[int]]:
    """Indices of ``traces`` grouped by shared near-duplicate examples, in order of each group's first trace."""
    parent = list(range(len(traces)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for index, trace in enumerate(traces):
        for example in expand(trace):
            other = first.setdefault(record_keys(example).near, index)
            parent[root(index)] = root(other)
    groups: dict[int, list[int]] = {}
    for index in range(len(traces)):
        groups.setdefault(root(index), []).append(index)
    return sorted(groups.values(), key=lambda g: g[0])


def export_traces(store: TraceStore, out_dir: Path | str, *, split: tuple[float, ...] = (0.8, 0.1, 0.1),
                  seed: int = 42, only_passed: bool = False, tokenizer: Any = None, source: str | None = None,
                  category: str | None = None, ids: list[int] | None = None) -> ExportReport:
    """Write train/valid/test.jsonl (and export.json, a manifest) from the store into ``out_dir``.

    ``only_passed`` keeps the traces whose outcome is ``passed``: episodes that passed their checks
    (or that a human marked so), not the ones that merely ``finished``.
    """
    split = _three(split)
    out_dir = Path(out_dir)
    report = ExportReport(out_dir=out_dir, checked_with_tokenizer=tokenizer is not None)
    usable = []
    for trace in store.iter_traces(source=source, category=category, ids=ids, with_children=False):
        if only_passed and trace.outcome != PASSED:
            report.skipped_not_passed += 1
            continue
        problems = trace_problems(trace, tokenizer)
        if problems:
            report.rejected.append(Rejected(trace.id, "; ".join(problems)))
        else:
            usable.append(trace)
    if not usable:
        raise DataError(f"no trace in {store.path} can be exported (matching: {report.skipped_not_passed} "
                        f"skipped as not passed, {len(report.rejected)} rejected). See 'punie traces list'.")
    for name, traces in assign_splits(usable, split, seed).items():
        examples = [ex for trace in traces for ex in expand(trace)]
        random.Random(f"{seed}:{name}").shuffle(examples)  # mix categories within the file
        report.traces[name], report.examples[name] = len(traces), len(examples)
        for ex in examples:
            counts = report.categories.setdefault(ex.get("category", _UNCATEGORIZED), dict.fromkeys(SPLITS, 0))
            counts[name] += 1
        _write_split(report, name, examples)
    fileio.write_json(out_dir / "export.json", _manifest(report, split, seed, only_passed, source))
    return report


def _write_split(report: ExportReport, name: str, examples: list[dict[str, Any]]) -> None:
    path = report.out_dir / f"{name}.jsonl"
    if not examples:
        # mlx-lm reads a missing split as empty but fails on an empty file; drop a stale one.
        path.unlink(missing_ok=True)
        return
    fileio.write_text(path, "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples))
    report.files[name] = path


def _manifest(report: ExportReport, split: tuple[float, float, float], seed: int, only_passed: bool,
              source: str | None) -> dict[str, Any]:
    return {"split": list(split), "seed": seed, "only_passed": only_passed, "source": source,
            "checked_with_tokenizer": report.checked_with_tokenizer, "traces": report.traces,
            "examples": report.examples, "categories": dict(sorted(report.categories.items())),
            "skipped_not_passed": report.skipped_not_passed,
            "rejected": [{"trace_id": r.trace_id, "reason": r.reason} for r in report.rejected]}
