"""Worker profiles from ``punie eval`` results: each evaluated run becomes a worker.

A results.json (see :mod:`punie.eval.results`) holds ``runs``, each with a ``name`` (``baseline``,
an adapter's run name), its ``adapter`` and per-case records (``category``, ``passed``,
``generated_tokens``, ``latency_s``). A run's cases give its worker's success rate per category
(= subtask type), the case counts behind each rate, and the mean tokens and seconds per case.

Several results files (one per suite) are merged per run name: the base model evaluated on a
tool suite and on a no-tool suite is one worker whose rates pool the cases of both. Two runs with
one name but different adapters are an error, not a merge.

Latency. With per-case timing (the HTTP engines) a case's ``latency_s`` is its own wall time.
The in-process engine batches cases, so ``latency_s`` is null and only the run's ``elapsed_s``
(``summary``) is known; each case is then charged that time in proportion to the tokens it
generated (``elapsed_s * tokens / run tokens``): decode time dominates and grows with tokens, and
the charges add up to the run's wall time.

Cases whose category is not a subtask type are left out and reported (:attr:`Profiled.ignored`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punie.errors import ConfigError, DataError, json_error_text
from punie.planner.workers import WorkerProfile, WorkerSet
from punie.planner.workflow import SUBTASK_TYPES


@dataclass
class _Tally:
    adapter: str | None
    model: str | None
    sources: list[str] = field(default_factory=list)
    passed: dict[str, int] = field(default_factory=dict)
    cases: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, category: str, passed: bool, tokens: float, seconds: float) -> None:
        self.cases[category] = self.cases.get(category, 0) + 1
        self.passed[category] = self.passed.get(category, 0) + int(passed)
        self.tokens[category] = self.tokens.get(category, 0.0) + tokens
        self.seconds[category] = self.seconds.get(category, 0.0) + seconds


@dataclass
class Profiled:
    workers: WorkerSet
    ignored: dict[str, int]  # category -> cases left out because it is not a subtask type


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such results file; run 'punie eval --suite FILE --out DIR' first.") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({json_error_text(exc, line=True)}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise DataError(f"{path}: has no 'runs'; it is not the results.json of a 'punie eval' run.")
    return data


def _case_seconds(path: Path, run: dict[str, Any]) -> list[float]:
    """Each case's wall seconds: its own latency, or its token share of the run's elapsed time (batched)."""
    cases = run["cases"]
    if all(c.get("latency_s") is not None for c in cases):
        return [float(c["latency_s"]) for c in cases]
    elapsed = (run.get("summary") or {}).get("elapsed_s")
    total = sum(c["generated_tokens"] for c in cases)
    if elapsed is None or total <= 0:
        raise DataError(f"{path}: run {run.get('name')!r} times neither its cases (latency_s) nor itself "
                        "(summary.elapsed_s with generated tokens); re-run 'punie eval' with this punie.")
    return [elapsed * c["generated_tokens"] / total for c in cases]


def _tally_run(path: Path, data: dict[str, Any], run: dict[str, Any], tallies: dict[str, _Tally],
               ignored: dict[str, int]) -> None:
    name = run.get("name")
    if not name or not isinstance(run.get("cases"), list) or not run["cases"]:
        raise DataError(f"{path}: a run has no name or no cases (got name {name!r}).")
    for case in run["cases"]:
        if case.get("generated_tokens") is None:
            raise DataError(f"{path}: run {name!r} case {case.get('id')!r} has no generated_tokens (the engine "
                            "did not report usage); profile results from an engine that counts tokens.")
    tally = tallies.setdefault(name, _Tally(adapter=run.get("adapter"), model=data.get("model")))
    if tally.adapter != run.get("adapter"):
        raise DataError(f"{path}: run {name!r} has adapter {run.get('adapter')!r}, but an earlier results file "
                        f"gave {name!r} adapter {tally.adapter!r}; one name must be one worker.")
    tally.sources.append(str(path))
    for case, seconds in zip(run["cases"], _case_seconds(path, run), strict=True):
        category = case.get("category")
        if category not in SUBTASK_TYPES:
            ignored[str(category)] = ignored.get(str(category), 0) + 1
            continue
        tally.add(category, bool(case.get("passed")), float(case["generated_tokens"]), seconds)


def profile_workers(results: Sequence[Path], prices: Mapping[str, float] | None = None,
                    names: Mapping[str, str] | None = None) -> Profiled:
    """One worker per run name across ``results``; ``prices`` (worker -> price per token) for endpoints;
    ``names`` renames runs (``baseline`` -> ``base``): prices name the new names."""
    if not results:
        raise DataError("no results file given; pass --results runs/NAME/results.json (one or more).")
    tallies: dict[str, _Tally] = {}
    ignored: dict[str, int] = {}
    for path in results:
        data = _read(Path(path))
        for run in data["runs"]:
            _tally_run(Path(path), data, run, tallies, ignored)
    not_runs = sorted(set(names or {}) - set(tallies))
    if not_runs:
        raise DataError(f"--name renames {', '.join(not_runs)}, which no results file has as a run; "
                        f"the runs are {', '.join(tallies)}.")
    tallies = {(names or {}).get(run, run): tally for run, tally in tallies.items()}
    unknown = sorted(set(prices or {}) - set(tallies))
    if unknown:
        raise DataError(f"--price names {', '.join(unknown)}, which no results file has as a run; "
                        f"the runs are {', '.join(tallies)}.")
    profiles = []
    for name, tally in tallies.items():
        missing = [t for t in SUBTASK_TYPES if not tally.cases.get(t)]
        if missing:
            raise DataError(f"worker {name!r} has no case of subtask type(s) {', '.join(missing)} in "
                            f"{', '.join(tally.sources)}; evaluate it on a suite with those categories too.")
        profiles.append(WorkerProfile.model_validate({
            "name": name, "model": tally.model, "adapter": tally.adapter, "sources": tally.sources,
            "success": {t: tally.passed[t] / tally.cases[t] for t in SUBTASK_TYPES},
            "cases": {t: tally.cases[t] for t in SUBTASK_TYPES},
            "tokens": {t: tally.tokens[t] / tally.cases[t] for t in SUBTASK_TYPES},
            "latency_s": {t: tally.seconds[t] / tally.cases[t] for t in SUBTASK_TYPES},
            "price_per_token": (prices or {}).get(name, 1.0)}))
    return Profiled(WorkerSet(workers=profiles), ignored)


def parse_names(items: Sequence[str]) -> dict[str, str]:
    """``["baseline=base", ...]`` -> {"baseline": "base"}; ConfigError naming the bad item."""
    names = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ConfigError(f"--name {item!r}: expected RUN=WORKER (e.g. baseline=base).")
        names[old] = new
    if len(set(names.values())) != len(names):
        raise ConfigError(f"--name gives two runs one worker name: {', '.join(items)}")
    return names


def parse_prices(items: Sequence[str]) -> dict[str, float]:
    """``["remote=20", ...]`` -> {"remote": 20.0}; ConfigError naming the bad item."""
    prices: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not sep or not name or price < 0:
            raise ConfigError(f"--price {item!r}: expected NAME=PRICE with a price per token >= 0 (e.g. remote=20).")
        prices[name] = price
    return prices
