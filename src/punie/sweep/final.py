"""The sweep's one look at the test suite: baseline, the winner's seeds and the reference's, paired.

Every adapter is compared with the baseline (exact McNemar, Holm-adjusted, as
``punie eval`` does), and each winner seed with the reference seed of the same
number, so "better than the recipe we had" is a paired test too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from punie.eval.results import compare, finish_comparisons
from punie.sweep.space import Candidate


class _Run:
    """A results.json run as :func:`punie.eval.results.compare` reads it."""

    def __init__(self, run: dict[str, Any]):
        self.name = run["name"]
        self.cases = [_Case(c) for c in run["cases"]]


class _Case:
    def __init__(self, case: dict[str, Any]):
        self.id, self.category, self.passed = case["id"], case["category"], bool(case["passed"])


def evaluate_test(config: Any, out: Path, winners: list[Candidate], reference: list[Candidate],
                on_written: Callable[[Path], object] | None = None) -> dict[str, Any]:
    """Evaluate on ``config.test_suite`` (reusing a finished evaluation of the same adapters) and compare."""
    from punie.eval import run_eval
    from punie.sweep.units import finished_results

    adapters = [c.train.output_dir() for c in winners + reference]
    results = finished_results(out)
    if results is not None and [r["adapter"] for r in results["runs"][1:]] != [str(a) for a in adapters]:
        results = None  # a resumed sweep whose winner changed (a bigger budget): test the new one
    if results is None:
        evaluated = run_eval(config.test_suite, model=config.model, adapters=adapters, max_tokens=config.max_tokens,
                             out_dir=out, batch_size=config.batch_size, force=(out / "results.json").exists(),
                             on_written=on_written)
        if evaluated.interrupted:
            raise KeyboardInterrupt
        results = evaluated.to_dict()
    runs = {r["adapter"]: r for r in results["runs"]}
    names = {c.id: runs[str(c.train.output_dir())]["name"] for c in winners + reference}
    pairs = [(r, w) for r in reference for w in winners if w.seed == r.seed]
    head_to_head = finish_comparisons([compare(_Run(runs[str(r.train.output_dir())]),
                                               _Run(runs[str(w.train.output_dir())])) for r, w in pairs])
    return {"results": str(out / "results.json"), "report": str(out / "report.html"),
            "suite": results["suite"],
            "accuracy": {r["name"]: r["summary"]["accuracy"] for r in results["runs"]},
            "winner_runs": [names[c.id] for c in winners], "reference_runs": [names[c.id] for c in reference],
            "vs_baseline": results["comparisons"], "winner_vs_reference": head_to_head}
