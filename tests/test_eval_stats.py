"""Paired statistics checked against published values."""

from __future__ import annotations

import math

import pytest

from punie.eval import stats
from punie.eval.results import CaseResult, RunResult, compare, finish_comparisons


def test_exact_mcnemar_matches_binomial_test_values():
    # R: binom.test(2, 12)$p.value == 0.03857422 (= 2 * 79 / 4096)
    assert stats.mcnemar_exact(10, 2) == pytest.approx(0.0385742, abs=1e-7)
    assert stats.mcnemar_exact(2, 10) == stats.mcnemar_exact(10, 2)
    # Fagerland et al., Cavo et al. (2012) data: b=6, c=16 -> exact conditional p = 0.0525
    assert stats.mcnemar_exact(6, 16) == pytest.approx(0.052479, abs=1e-6)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(3, 3) == 1.0  # the doubled tail is capped at 1
    assert stats.mcnemar_exact(5, 0) == pytest.approx(2 / 32)


def test_minimum_discordant_cases_for_significance():
    # 5 one-sided changes give p = 0.0625; 6 give 0.03125
    assert stats.min_discordant_for_significance(0.05) == 6


def test_wilson_interval_known_value():
    # Newcombe (1998) single-proportion example: 81/263 -> 0.2553 to 0.3662
    lo, hi = stats.wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4)
    assert hi == pytest.approx(0.3662, abs=1e-4)


def test_newcombe_paired_interval_matches_published_example():
    # Fagerland, Lydersen & Laake, ch. 8 (Cavo et al. 2012): table [[59, 6], [16, 80]]
    # Newcombe square-and-add: estimate -0.0621, 95% CI -0.1186 to -0.0046
    table = stats.PairedTable(both=59, only_new=6, only_old=16, neither=80)
    assert table.delta == pytest.approx(-0.0621, abs=1e-4)
    lo, hi = stats.newcombe_paired_interval(table)
    assert lo == pytest.approx(-0.1186, abs=1e-4)
    assert hi == pytest.approx(-0.0046, abs=1e-4)


def test_newcombe_interval_is_symmetric_and_bounded():
    table = stats.PairedTable(both=0, only_new=0, only_old=0, neither=10)
    lo, hi = stats.newcombe_paired_interval(table)
    assert -1 <= lo < 0 < hi <= 1
    assert lo == pytest.approx(-hi)
    lo, hi = stats.newcombe_paired_interval(stats.PairedTable(0, 20, 0, 0))
    assert hi == 1.0 and 0 < lo < 1


def test_paired_table_from_pairs():
    old = [True, True, False, False, True]
    new = [True, False, True, True, True]
    table = stats.PairedTable.from_pairs(old, new)
    assert (table.both, table.only_new, table.only_old, table.neither) == (2, 2, 1, 0)
    with pytest.raises(ValueError):
        stats.PairedTable.from_pairs([True], [True, False])


def test_holm_adjustment():
    # Holm (1979) step-down: sorted p (0.01, 0.03, 0.04) * (3, 2, 1) -> 0.03, 0.06, 0.06 (monotone)
    assert stats.holm_adjust([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert stats.holm_adjust([0.5]) == [0.5]
    assert stats.holm_adjust([0.9, 0.8]) == [1.0, 1.0]


def _run(name: str, passed: list[bool], adapter: str | None = "x") -> RunResult:
    cases = [CaseResult(id=f"c{i}", category="a" if i % 2 else "b", scorer="exact", passed=p, score=float(p),
                        output="", tool_calls=[], latency_s=0.0) for i, p in enumerate(passed)]
    return RunResult(name=name, adapter=adapter, cases=cases, complete=True)


def test_small_difference_is_not_called_an_improvement():
    base = _run("baseline", [False] * 4 + [True] * 16, adapter=None)
    better = _run("a", [True] * 4 + [True] * 16)  # +20 pp, but only 4 cases changed
    comp = finish_comparisons([compare(base, better)])[0]
    assert comp["delta"] == pytest.approx(0.2)
    assert comp["p_value"] == pytest.approx(0.125)
    assert not comp["significant"]
    assert comp["verdict"] == "no significant difference"
    assert "at least 6" in comp["note"]


def test_large_paired_improvement_is_significant():
    base = _run("baseline", [False] * 12 + [True] * 8, adapter=None)
    better = _run("a", [True] * 12 + [True] * 8)
    comp = finish_comparisons([compare(base, better)])[0]
    assert comp["significant"] and comp["verdict"] == "better"
    assert comp["ci95"][0] > 0
    assert comp["changed"] == [f"c{i}" for i in range(12)]
    assert set(comp["by_category"]) == {"a", "b"}


def test_holm_applies_across_adapters():
    base = _run("baseline", [False] * 7 + [True] * 13, adapter=None)
    a = _run("a", [True] * 7 + [True] * 13)  # p = 2/128 = 0.0156
    b = _run("b", [False] * 7 + [True] * 13)  # no change
    c = _run("c", [False] * 7 + [True] * 13)
    comps = finish_comparisons([compare(base, r) for r in (a, b, c)])
    assert comps[0]["p_value"] == pytest.approx(2 / 128)
    assert comps[0]["p_adjusted"] == pytest.approx(3 * 2 / 128)
    assert comps[0]["significant"]
    assert not any(math.isnan(x["p_adjusted"]) for x in comps)


def test_comparison_uses_only_cases_both_runs_finished():
    base = _run("baseline", [True, False, True], adapter=None)
    partial = _run("a", [True, True])
    comp = compare(base, partial)
    assert comp["n_paired"] == 2
    assert comp["improved"] == 1 and comp["regressed"] == 0
