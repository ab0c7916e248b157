"""``punie sweep``: choose training settings by held-out accuracy, not by loss, within a budget.

Modules: ``space`` (the search space and its candidates), ``schedule`` (grid and
successive-halving rungs, pure functions), ``units`` (train a candidate to a
step, score it on the selection suite, the budget), ``final`` (the one test-suite
evaluation), ``summary`` (summary.json), ``run`` (the orchestrator). Every
candidate is an ordinary ``punie train`` run scored by ``punie eval``'s
in-process engine; the HTML page is :mod:`punie.report.sweep_report`.
"""

from __future__ import annotations

from punie.sweep.run import SweepConfig, SweepResult, sweep

__all__ = ["SweepConfig", "SweepResult", "sweep"]
