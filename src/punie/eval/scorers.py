"""The scorer registry: how each case's output is judged.

A :class:`Scorer` bundles the function that scores one output, the check of
its ``expect`` block (run when the suite loads), and an optional run-level
summary (label balance for ``yes_no``, precision/recall for ``route``, partial
credit for ``tool_call``). Add a scorer by adding an entry to :data:`SCORERS`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from punie.errors import json_error_text
from punie.eval import json_schema, tool_match
from punie.eval.outputs import ModelOutput, Score
from punie.eval.suite import EvalCase

ScoreFn = Callable[[EvalCase, ModelOutput], Score]


@dataclass(frozen=True)
class Scorer:
    name: str
    score: ScoreFn
    check_expect: Callable[[dict[str, Any]], str | None]
    check_case: Callable[[EvalCase], str | None] | None = None
    summarize: Callable[[list[tuple[EvalCase, Score]]], dict[str, Any]] | None = None
    help: str = ""


# --- exact / contains -------------------------------------------------------------------------

def _check_answer(expect: dict[str, Any]) -> str | None:
    if not isinstance(expect.get("answer"), str | int | float) or isinstance(expect.get("answer"), bool):
        return "expected {'answer': '...'}"
    return None


def score_exact(case: EvalCase, output: ModelOutput) -> Score:
    want, got = str(case.expect["answer"]).strip(), output.content.strip()
    if not case.expect.get("case_sensitive", True):
        want, got = want.casefold(), got.casefold()
    if got == want:
        return Score.ok()
    return Score.fail(f"answer {got[:80]!r} is not exactly {want[:80]!r}")


def _check_contains(expect: dict[str, Any]) -> str | None:
    items = expect.get("contains")
    if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
        return "expected {'contains': ['text', ...]} with non-empty strings"
    return None


def score_contains(case: EvalCase, output: ModelOutput) -> Score:
    sensitive = case.expect.get("case_sensitive", False)
    text = output.raw if sensitive else output.raw.casefold()
    wanted = case.expect["contains"]
    missing = [s for s in wanted if (s if sensitive else s.casefold()) not in text]
    if not missing:
        return Score.ok()
    return Score.fail(f"missing {missing}", score=1 - len(missing) / len(wanted))


# --- json -------------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```$", re.S)


def _check_json(expect: dict[str, Any]) -> str | None:
    if "json_schema" not in expect:
        return "expected {'json_schema': {...}}"
    return json_schema.check_schema(expect["json_schema"])


def score_json(case: EvalCase, output: ModelOutput) -> Score:
    text = output.content.strip()
    fenced = _FENCE.match(text)  # a single fenced block is still the model answering in JSON
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Score.fail(f"not valid JSON: {json_error_text(exc)}")
    errors = json_schema.validate(value, case.expect["json_schema"])
    if errors:
        return Score.fail("; ".join(errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""))
    return Score.ok()


# --- numeric ----------------------------------------------------------------------------------

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def extract_answer(text: str) -> str:
    """The last ``<answer>`` tag's content, else the last number, else the last non-empty line."""
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _as_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if len(found) != 1:
        return None
    try:
        return float(found[0].replace(",", ""))
    except ValueError:
        return None


def _check_numeric(expect: dict[str, Any]) -> str | None:
    problem = _check_answer(expect)
    tolerance = expect.get("tolerance", 0)
    if problem is None and (not isinstance(tolerance, int | float) or tolerance < 0):
        problem = "'tolerance' must be a non-negative number"
    return problem


def score_numeric(case: EvalCase, output: ModelOutput) -> Score:
    want_text = str(case.expect["answer"]).strip()
    got_text = extract_answer(output.raw)
    want, got = _as_number(want_text), _as_number(got_text)
    if want is not None and got is not None:
        if math.isclose(got, want, rel_tol=1e-9, abs_tol=float(case.expect.get("tolerance", 0))):
            return Score.ok(extracted=got_text)
        return Score.fail(f"answered {got_text!r}, expected {want_text!r}", extracted=got_text)
    if tool_match.normalize_string(got_text) == tool_match.normalize_string(want_text):
        return Score.ok(extracted=got_text)
    return Score.fail(f"answered {got_text[:80]!r}, expected {want_text!r}", extracted=got_text)


# --- yes_no -----------------------------------------------------------------------------------

_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


def predicted_label(text: str) -> str:
    """'yes', 'no' or 'unknown': the answer tag, else the first word, else the first yes/no word."""
    tags = _ANSWER_TAG.findall(text)
    candidates = [tags[-1]] if tags else [text.strip().split("\n", 1)[0].split(" ", 1)[0], text]
    for candidate in candidates:
        match = _YES_NO.search(candidate)
        if match:
            return match.group(1).lower()
    return "unknown"


def _check_yes_no(expect: dict[str, Any]) -> str | None:
    if str(expect.get("answer", "")).strip().lower() not in ("yes", "no"):
        return "expected {'answer': 'yes'} or {'answer': 'no'}"
    return None


def score_yes_no(case: EvalCase, output: ModelOutput) -> Score:
    want = str(case.expect["answer"]).strip().lower()
    got = predicted_label(output.raw)
    if got == want:
        return Score.ok(label=got, expected=want)
    return Score.fail(f"said {got!r}, expected {want!r}", label=got, expected=want)


def summarize_yes_no(scored: list[tuple[EvalCase, Score]]) -> dict[str, Any]:
    predicted = Counter(s.details.get("label", "unknown") for _, s in scored)
    expected = Counter(s.details.get("expected") for _, s in scored)
    recall = {label: _rate([s.passed for _, s in scored if s.details.get("expected") == label])
              for label in ("yes", "no")}
    top, count = predicted.most_common(1)[0] if predicted else ("", 0)
    one_sided = len(scored) >= 5 and count / len(scored) >= 0.9
    return {"predicted": dict(predicted), "expected": dict(expected), "recall": recall,
            "balanced_accuracy": _mean([r for r in recall.values() if r is not None]),
            "warning": f"answers {top!r} {count}/{len(scored)} times: accuracy says little here" if one_sided
            else None}


# --- route ------------------------------------------------------------------------------------

def _check_route(expect: dict[str, Any]) -> str | None:
    route = expect.get("route")
    if not isinstance(route, list) or not route or not all(isinstance(s, str) and s.strip() for s in route):
        return "expected {'route': ['step', ...]} with non-empty strings"
    return None


def predicted_route(output: ModelOutput) -> list[str]:
    """The plan a model gave: its tool calls' names, a JSON list (or {"route": [...]}), or a written list."""
    if output.tool_calls:
        return [c.name for c in output.tool_calls]
    text = extract_tagged(output.content)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        value = next((value[k] for k in ("route", "plan", "steps") if isinstance(value.get(k), list)), None)
    if isinstance(value, list):
        return [str(v).strip().casefold() for v in value if str(v).strip()]
    parts = re.split(r"\s*(?:->|→|,|\n|;)\s*", text)
    steps = [re.sub(r"^(?:\d+[.)]|[-*•])\s*", "", p).strip().strip(".").casefold() for p in parts]
    return [s for s in steps if s]


def extract_tagged(text: str) -> str:
    tags = _ANSWER_TAG.findall(text)
    return tags[-1].strip() if tags else text.strip()


def score_route(case: EvalCase, output: ModelOutput) -> Score:
    want = [s.strip().casefold() for s in case.expect["route"]]
    got = predicted_route(output)
    common = sum((Counter(want) & Counter(got)).values())
    precision = common / len(got) if got else 0.0
    recall = common / len(want)
    f1 = 2 * precision * recall / (precision + recall) if common else 0.0
    details = {"route": got, "precision": precision, "recall": recall}
    if got == want:
        return Score.ok(**details)
    return Score.fail(f"route {got} is not {want}", score=f1, **details)


def summarize_route(scored: list[tuple[EvalCase, Score]]) -> dict[str, Any]:
    return {"precision": _mean([s.details.get("precision", 0.0) for _, s in scored]),
            "recall": _mean([s.details.get("recall", 0.0) for _, s in scored]),
            "exact_match": _rate([s.passed for _, s in scored])}


def summarize_tool_calls(scored: list[tuple[EvalCase, Score]]) -> dict[str, Any]:
    calls = [(c, s) for c, s in scored if not c.expect.get("no_tool_call")]
    irrelevance = [s.passed for c, s in scored if c.expect.get("no_tool_call")]
    return {"strict_accuracy": _rate([s.passed for _, s in calls]),
            "names_right": _rate([bool(s.details.get("names_right")) for _, s in calls]),
            "names_right_args_wrong": sum(bool(s.details.get("names_right")) and not s.passed for _, s in calls),
            "irrelevance_accuracy": _rate(irrelevance), "irrelevance_cases": len(irrelevance)}


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


SCORERS: dict[str, Scorer] = {
    "tool_call": Scorer("tool_call", tool_match.score_tool_calls, tool_match.check_expect, tool_match.check_case,
                        summarize_tool_calls, "structured tool calls, BFCL-style AST match"),
    "exact": Scorer("exact", score_exact, _check_answer, help="the whole answer equals expect.answer"),
    "contains": Scorer("contains", score_contains, _check_contains, help="the answer contains every expect.contains"),
    "json": Scorer("json", score_json, _check_json, help="the answer is JSON valid against expect.json_schema"),
    "numeric": Scorer("numeric", score_numeric, _check_numeric, help="the extracted number equals expect.answer"),
    "yes_no": Scorer("yes_no", score_yes_no, _check_yes_no, summarize=summarize_yes_no,
                     help="the yes/no label equals expect.answer"),
    "route": Scorer("route", score_route, _check_route, summarize=summarize_route,
                    help="the planned route equals expect.route"),
}
