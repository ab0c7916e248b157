"""summary.json: what a sweep tried, how each candidate did, what won and how it did on the test suite.

Shape (``format`` 1)::

    {"kind": "punie sweep", "status": "running" | "interrupted" | "budget" | "complete",
     "settings": {...}, "space": {setting: [values]}, "baseline": {"selection": {...}},
     "candidates": [{"id", "config", "settings", "seed", "adapter", "status", "steps", "train_seconds",
                     "tokens_per_second", "peak_memory_gb", "best_val_loss", "wall_s",
                     "selection": [{"steps", "accuracy", "passed", "n", "ci95", "results"}], "error"?}],
     "configs": [{"index", "settings", "candidates", "scores": [{"rung", "steps", "score"}], "selection_accuracy"}],
     "rungs": [{"rung", "fraction", "keep", "scores", "kept", "complete"}],
     "reference": {...} | null, "winner": {...} | null, "test": {...} | null, "budget": {...}}

A config's score at a rung is the mean selection accuracy of its seeds; ``ci95``
is each candidate's Wilson interval on the selection suite.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from punie.sweep import schedule


def build_summary(state: Any) -> dict[str, Any]:
    config = state.config
    return {
        "format": 1, "kind": "punie sweep", "status": state.status,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": json.loads(config.model_dump_json()), "space": config.space,
        "baseline": {"selection": state.baseline},
        "candidates": list(state.records.values()),
        "configs": _configs(state),
        "rungs": [{"rung": r.rung.index, "fraction": r.rung.fraction, "keep": r.rung.keep,
                   "scores": {str(i): s for i, s in r.scores.items()}, "kept": r.kept, "complete": r.complete}
                  for r in state.history],
        "reference": _reference(state),
        "winner": _winner(state),
        "test": state.test,
        "budget": {"minutes": config.budget_minutes, "elapsed_s": round(state.budget.elapsed(), 1),
                   "stopped": bool(state.stopped), "message": state.stopped},
    }


def _configs(state: Any) -> list[dict[str, Any]]:
    rows = []
    for index, settings in enumerate(state.grid):
        members = state.by_config.get(index, [])
        scores = [{"rung": r.rung.index, "fraction": r.rung.fraction, "score": r.scores[index]}
                  for r in state.history if index in r.scores]
        rows.append({"index": index, "settings": settings, "candidates": [c.id for c in members],
                     "scores": scores, "selection_accuracy": scores[-1]["score"] if scores else None,
                     "rung": scores[-1]["rung"] if scores else None})
    return rows


def _reference(state: Any) -> dict[str, Any] | None:
    if state.config.reference is None:
        return None
    members = (state.by_config.get(state.reference_config, []) if state.reference_config is not None
               else state.reference)
    accuracies = [state.records[c.id]["selection"][-1]["accuracy"] for c in members
                  if state.records[c.id]["selection"]]
    return {"recipe": state.config.reference, "config": state.reference_config,
            "candidates": [c.id for c in members],
            "selection_accuracy": sum(accuracies) / len(accuracies) if accuracies else None}


def _winner(state: Any) -> dict[str, Any] | None:
    if state.winner is None:
        return None
    last = next(r for r in reversed(state.history) if state.winner in r.scores)
    best = last.scores[state.winner]
    ties = [i for i, s in last.scores.items() if s == best and i != state.winner]
    return {"config": state.winner, "settings": state.grid[state.winner], "rung": last.rung.index,
            "selection_accuracy": best, "candidates": [c.id for c in state.by_config[state.winner]],
            "tied_with": ties, "ranking": schedule.ranked(last.scores)}
