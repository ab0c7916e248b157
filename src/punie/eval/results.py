"""Eval results: per-case records, run summaries, paired comparisons, results.json.

``results.json`` is the one artifact everything else (the HTML report, CI
checks, a later ``punie report``) reads. Its shape::

    {"suite": {...}, "model": ..., "engine": ..., "interrupted": false,
     "timing": "per_case" | "batched", "batch_size": ...,
     "runs": [{"name", "adapter", "summary": {"accuracy", "by_category", ...}, "cases": [...]}],
     "comparisons": [{"run", "baseline", "delta", "ci95", "p_value", "significant", "verdict", ...}]}

Timing: with ``"per_case"`` (the HTTP engines, one request at a time) each case's
``latency_s`` is its own wall time and a run's ``mean_latency_s`` their mean.
With ``"batched"`` (the in-process engine) cases share generation steps, so
``latency_s`` and ``mean_latency_s`` are null and a run's time is stated as
``elapsed_s`` (the run's wall time, every batch) with ``generated_tokens`` and
``tokens_per_s`` over that time. Per-case runs state ``tokens_per_s`` over the
sum of their latencies, when the server reports ``usage.completion_tokens``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from punie import fileio
from punie.errors import DataError, json_error_text
from punie.eval import stats
from punie.eval.scorers import SCORERS
from punie.eval.suite import EvalCase

ALPHA = 0.05
BASELINE = "baseline"


@dataclass
class CaseResult:
    id: str
    category: str
    scorer: str
    passed: bool
    score: float
    output: str
    tool_calls: list[dict[str, Any]]
    latency_s: float | None  # None when the engine does not time cases one by one (see the module docstring)
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    parse_errors: list[str] = field(default_factory=list)
    error: str | None = None
    generated_tokens: int | None = None


@dataclass
class RunResult:
    name: str
    adapter: str | None
    cases: list[CaseResult] = field(default_factory=list)
    complete: bool = False
    elapsed_s: float = 0.0
    metrics_path: str | None = None

    def summary(self, suite_cases: list[EvalCase]) -> dict[str, Any]:
        by_id = {c.id: c for c in suite_cases}
        by_category: dict[str, list[bool]] = defaultdict(list)
        for case in self.cases:
            by_category[case.category].append(case.passed)
        scorer_metrics = {}
        for name, scorer in SCORERS.items():
            scored = [(by_id[c.id], _as_score(c)) for c in self.cases if c.scorer == name and c.id in by_id]
            if scored and scorer.summarize:
                scorer_metrics[name] = scorer.summarize(scored)
        passed = sum(c.passed for c in self.cases)
        return {"n": len(self.cases), "n_suite": len(suite_cases), "passed": passed,
                "accuracy": passed / len(self.cases) if self.cases else 0.0,
                "mean_score": sum(c.score for c in self.cases) / len(self.cases) if self.cases else 0.0,
                "errors": sum(c.error is not None for c in self.cases),
                "by_category": {cat: {"n": len(v), "passed": sum(v), "accuracy": sum(v) / len(v)}
                                for cat, v in sorted(by_category.items())},
                "scorers": scorer_metrics, **self.timing(), "complete": self.complete}

    def timing(self) -> dict[str, Any]:
        """The run's wall time, mean per-case latency (None unless every case was timed alone) and tokens/s."""
        latencies = [c.latency_s for c in self.cases]
        timed = bool(self.cases) and all(t is not None for t in latencies)
        counts = [c.generated_tokens for c in self.cases]
        tokens = sum(t for t in counts if t is not None) if self.cases and None not in counts else None
        # Timed cases: throughput over the requests' own time (a run's time also holds the server's start).
        busy = sum(t for t in latencies if t is not None) if timed else self.elapsed_s
        return {"elapsed_s": self.elapsed_s,
                "mean_latency_s": busy / len(latencies) if timed else None,
                "generated_tokens": tokens,
                "tokens_per_s": tokens / busy if tokens is not None and busy > 0 else None}


def _as_score(case: CaseResult) -> Any:
    from punie.eval.outputs import Score

    return Score(case.passed, case.score, case.reason, case.details)


class _Scored(Protocol):
    id: str
    category: str
    passed: bool


class ScoredRun(Protocol):
    """A run of pass/fail items keyed by id: an eval run's cases, or a task run's episodes."""

    @property
    def name(self) -> str: ...

    @property
    def cases(self) -> Sequence[_Scored]: ...


def compare(baseline: ScoredRun, run: ScoredRun) -> dict[str, Any]:
    """Paired comparison of ``run`` against ``baseline`` on the cases (tasks) both finished."""
    old = {c.id: c for c in baseline.cases}
    pairs = [(old[c.id], c) for c in run.cases if c.id in old]
    table = stats.PairedTable.from_pairs([o.passed for o, _ in pairs], [n.passed for _, n in pairs])
    lo, hi = stats.newcombe_paired_interval(table)
    by_category: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for before, after in pairs:
        by_category[after.category].append((before.passed, after.passed))
    n = table.n
    return {
        "run": run.name, "baseline": baseline.name, "n_paired": n,
        "baseline_accuracy": (table.both + table.only_old) / n if n else 0.0,
        "accuracy": (table.both + table.only_new) / n if n else 0.0,
        "delta": table.delta, "ci95": [lo, hi],
        "improved": table.only_new, "regressed": table.only_old,
        "p_value": stats.mcnemar_exact(table.only_new, table.only_old),
        "by_category": {cat: _category_delta(v) for cat, v in sorted(by_category.items())},
        "changed": [nw.id for o, nw in pairs if o.passed != nw.passed],
    }


def _category_delta(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    old = sum(o for o, _ in pairs) / len(pairs)
    new = sum(n for _, n in pairs) / len(pairs)
    b = sum(n and not o for o, n in pairs)
    c = sum(o and not n for o, n in pairs)
    return {"n": len(pairs), "baseline_accuracy": old, "accuracy": new, "delta": new - old,
            "p_value": stats.mcnemar_exact(b, c)}


def finish_comparisons(comparisons: list[dict[str, Any]], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Holm-adjust the p-values across adapters and state a verdict that never calls noise a change."""
    adjusted = stats.holm_adjust([c["p_value"] for c in comparisons])
    floor = stats.min_discordant_for_significance(alpha)
    for comp, p_adj in zip(comparisons, adjusted, strict=True):
        comp["p_adjusted"] = p_adj
        comp["alpha"] = alpha
        comp["significant"] = p_adj < alpha and comp["improved"] != comp["regressed"]
        if comp["significant"]:
            comp["verdict"] = "better" if comp["delta"] > 0 else "worse"
        else:
            comp["verdict"] = "no significant difference"
        discordant = comp["improved"] + comp["regressed"]
        comp["note"] = (f"only {discordant} case(s) changed; at least {floor} must change before any difference "
                        "can be significant" if discordant < floor else "")
    return comparisons


@dataclass
class EvalResults:
    suite_path: str
    suite_sha256: str
    model: str
    engine: str
    max_tokens: int
    cases: list[EvalCase]
    timing: str = "per_case"  # or "batched"; see the module docstring
    batch_size: int | None = None
    runs: list[RunResult] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None
    created: str = ""
    out_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. an adapter evaluated on another base (--force)

    def comparisons(self) -> list[dict[str, Any]]:
        base = next((r for r in self.runs if r.adapter is None), None)
        if base is None:
            return []
        return finish_comparisons([compare(base, r) for r in self.runs if r is not base and r.cases])

    def run(self, name: str) -> RunResult:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1, "created": self.created,
            "suite": {"path": self.suite_path, "sha256": self.suite_sha256, "cases": len(self.cases)},
            "model": self.model, "engine": self.engine, "max_tokens": self.max_tokens,
            "timing": self.timing, "batch_size": self.batch_size,
            "interrupted": self.interrupted, "error": self.error,
            "warnings": self.warnings,
            "runs": [{"name": r.name, "adapter": r.adapter, "metrics_path": r.metrics_path,
                      "summary": r.summary(self.cases), "cases": [asdict(c) for c in r.cases]} for r in self.runs],
            "comparisons": self.comparisons(),
            "cases": [{"id": c.id, "category": c.category, "scorer": c.scorer, "messages": c.messages,
                       "expect": c.expect, "tools": [t.get("function", t).get("name") for t in c.tools or []]}
                      for c in self.cases],
        }

    def write(self, out_dir: Path) -> Path:
        path = Path(out_dir) / "results.json"
        fileio.write_json(path, self.to_dict())
        return path

    def finish(self, out_dir: Path, on_written: Callable[[Path], object] | None = None) -> None:
        """Put each run's cases in suite order, write results.json and tell ``on_written``."""
        order = {c.id: i for i, c in enumerate(self.cases)}
        for run in self.runs:
            run.cases.sort(key=lambda c: order[c.id])
        self.write(out_dir)
        if on_written is not None:
            on_written(out_dir)


def read_results(out_dir: Path) -> dict[str, Any]:
    """The results.json of an eval output directory."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise DataError(f"{out_dir} has no results.json; run 'punie eval --suite FILE --out {out_dir}' first.")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({json_error_text(exc, line=True)}).") from exc
    return data
