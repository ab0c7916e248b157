"""Evaluation: suites, scorers, engines and paired comparison statistics.

``run_eval`` answers a suite with the baseline and each adapter, scores every
case, compares each adapter with the baseline on the same cases (exact McNemar,
Newcombe 95% interval), and writes results.json and report.html.
"""

from punie.eval.results import EvalResults, read_results
from punie.eval.runner import EvalProgress, run_eval
from punie.eval.scorers import SCORERS
from punie.eval.suite import EvalCase, Suite, load_suite

__all__ = ["SCORERS", "EvalCase", "EvalProgress", "EvalResults", "Suite", "load_suite", "read_results", "run_eval"]
