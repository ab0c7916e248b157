"""The ``tool_call`` scorer: BFCL-style AST matching of structured calls.

A predicted call matches an expected one when the function name is the same,
every required argument is present, no argument is missing from the tool's
schema, each value has the declared JSON type, and each expected value equals
the predicted one after normalisation (strings trimmed, whitespace collapsed and
case-folded; numbers compared by value; ``{"one_of": [...]}`` accepts any listed
value, and ``null`` among them lets the argument be omitted). Several expected
calls match in any order (a maximum bipartite matching); the case passes only
when every expected call is matched and no extra call was made.
"""

from __future__ import annotations

from typing import Any

from punie.chat.toolcalls import ToolCall
from punie.eval.outputs import ModelOutput, Score
from punie.eval.suite import EvalCase

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}


def check_expect(expect: dict[str, Any]) -> str | None:
    if expect.get("no_tool_call") is True:
        return None if set(expect) == {"no_tool_call"} else "'no_tool_call' cannot be combined with other keys"
    calls = expect.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return "expected {'tool_calls': [{'name': ..., 'arguments': {...}}, ...]} or {'no_tool_call': true}"
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return f"tool_calls[{i}] needs a string 'name'"
        if not isinstance(call.get("arguments", {}), dict):
            return f"tool_calls[{i}].arguments must be an object"
        for key, value in call.get("arguments", {}).items():
            if isinstance(value, dict) and "one_of" in value and not isinstance(value["one_of"], list):
                return f"tool_calls[{i}].arguments.{key}.one_of must be a list"
    return None


def check_case(case: EvalCase) -> str | None:
    """An expected call must name an offered tool and only arguments its schema declares."""
    if not case.tools or case.expect.get("no_tool_call"):
        return None
    for call in case.expect["tool_calls"]:
        schema = case.tool_schema(call["name"])
        if schema is None:
            return f"expected tool {call['name']!r} is not among the case's tools"
        declared = schema.get("parameters", {}).get("properties", {})
        extra = sorted(set(call.get("arguments", {})) - set(declared))
        if extra:
            return f"expected call {call['name']!r} has argument(s) {extra} that its schema does not declare"
    return None


def score_tool_calls(case: EvalCase, output: ModelOutput) -> Score:
    predicted = output.tool_calls
    names = [c.name for c in predicted]
    if case.expect.get("no_tool_call"):
        if predicted or output.parse_errors:
            what = f"called {names}" if predicted else f"tried to call a tool ({output.parse_errors[0]})"
            return Score.fail(f"{what} but no tool call was expected", predicted_calls=len(predicted))
        return Score.ok(predicted_calls=0)
    expected = [ToolCall(c["name"], c.get("arguments", {})) for c in case.expect["tool_calls"]]
    problems = [[call_problems(case, exp, got) for got in predicted] for exp in expected]
    full = _max_matching([[not p for p in row] for row in problems])
    by_name = _max_matching([[exp.name == got.name for got in predicted] for exp in expected])
    details = {"expected_calls": len(expected), "predicted_calls": len(predicted), "matched_calls": full,
               "name_matches": by_name, "names_right": by_name == len(expected) == len(predicted)}
    if full == len(expected) == len(predicted):
        return Score.ok(**details)
    score = full / max(len(expected), len(predicted))
    return Score.fail(_explain(expected, predicted, problems, output), score, **details)


def call_problems(case: EvalCase, expected: ToolCall, got: ToolCall) -> list[str]:
    """Why ``got`` does not match ``expected`` (empty when it does)."""
    if got.name != expected.name:
        return [f"called {got.name!r} instead of {expected.name!r}"]
    problems: list[str] = []
    schema = case.tool_schema(got.name)
    if schema is None and case.tools:
        problems.append(f"{got.name!r} is not among the offered tools")
    params = (schema or {}).get("parameters", {})
    declared = params.get("properties", {})
    for name in params.get("required", []):
        if name not in got.arguments:
            problems.append(f"missing required argument {name!r}")
    for name, value in got.arguments.items():
        if schema is not None and name not in declared:
            problems.append(f"argument {name!r} is not declared by the schema")
        elif name in declared:
            type_problem = _type_problem(value, declared[name])
            if type_problem:
                problems.append(f"argument {name!r} {type_problem}")
    for name, want in expected.arguments.items():
        if name not in got.arguments:
            if not _may_be_omitted(want) and name not in params.get("required", []):
                problems.append(f"missing argument {name!r}")
        elif not values_match(got.arguments[name], want):
            problems.append(f"{name}={got.arguments[name]!r}, expected {_show(want)}")
    return problems


def values_match(got: Any, want: Any) -> bool:
    """Equality after normalisation; ``{"one_of": [...]}`` accepts any alternative."""
    if isinstance(want, dict) and set(want) == {"one_of"}:
        return any(values_match(got, alt) for alt in want["one_of"])
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(want, bool) and isinstance(got, bool) and want == got
    if isinstance(want, int | float) and isinstance(got, int | float):
        return float(want) == float(got)
    if isinstance(want, str) and isinstance(got, str):
        return normalize_string(want) == normalize_string(got)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(values_match(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, dict) and isinstance(got, dict):
        return set(want) == set(got) and all(values_match(got[k], want[k]) for k in want)
    return bool(want is None and got is None)


def normalize_string(text: str) -> str:
    return " ".join(text.split()).casefold()


def _may_be_omitted(want: Any) -> bool:
    return isinstance(want, dict) and set(want) == {"one_of"} and None in want["one_of"]


def _type_problem(value: Any, prop: dict[str, Any]) -> str | None:
    declared = prop.get("type")
    if declared is not None:
        types = declared if isinstance(declared, list) else [declared]
        ok = False
        for name in types:
            allowed = _JSON_TYPES.get(name)
            if allowed is None:
                ok = True  # a type this checker does not know is not held against the model
            elif isinstance(value, bool) and name not in ("boolean",):
                continue
            elif isinstance(value, allowed):
                ok = True
        if not ok:
            return f"should be {'/'.join(types)}, got {type(value).__name__} {value!r:.60}"
    enum = prop.get("enum")
    if isinstance(enum, list) and not any(values_match(value, e) for e in enum):
        return f"= {value!r:.60} is not one of {enum}"
    return None


def _show(want: Any) -> str:
    if isinstance(want, dict) and set(want) == {"one_of"}:
        return "one of " + ", ".join(repr(w) for w in want["one_of"])
    return repr(want)


def _max_matching(ok: list[list[bool]]) -> int:
    """Size of a maximum bipartite matching (Kuhn's augmenting paths; rows = expected calls)."""
    owner: dict[int, int] = {}

    def augment(row: int, seen: set[int]) -> bool:
        for col, good in enumerate(ok[row]):
            if good and col not in seen:
                seen.add(col)
                if col not in owner or augment(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    return sum(augment(row, set()) for row in range(len(ok)))


def _explain(expected: list[ToolCall], predicted: list[ToolCall], problems: list[list[list[str]]],
             output: ModelOutput) -> str:
    if not predicted:
        why = f" ({output.parse_errors[0]})" if output.parse_errors else ""
        return f"no tool call; expected {[c.name for c in expected]}{why}"
    parts = []
    if len(predicted) != len(expected):
        parts.append(f"made {len(predicted)} call(s), expected {len(expected)}")
    for exp, row in zip(expected, problems, strict=True):
        if any(not p for p in row):
            continue
        same_name: list[list[str]] = [p for p, got in zip(row, predicted, strict=True) if got.name == exp.name]
        if same_name:
            fewest = min(same_name, key=len)
            parts.append(f"{exp.name}: " + "; ".join(fewest))
        else:
            parts.append(f"no call to {exp.name!r} (called {[c.name for c in predicted]})")
    return "; ".join(parts) or "extra tool call(s)"
