"""Paired comparison statistics for pass/fail results on the same cases.

An adapter and the baseline answer the same cases, so their results are paired:
what matters is the discordant cases, ``b`` (adapter passed, baseline failed)
and ``c`` (the reverse). This module gives

* the exact McNemar test: under "no difference" each discordant case is a fair
  coin, so ``b ~ Binomial(b + c, 1/2)``; the two-sided p-value doubles the
  smaller tail (capped at 1), as R's ``binom.test`` and ``mcnemar.exact`` do;
* a 95% confidence interval for the accuracy difference by Newcombe's (1998)
  square-and-add method for paired data (his method 10), built from Wilson
  score intervals of the two accuracies and their correlation; it behaves well
  at small ``n`` and at accuracies near 0 or 1, unlike the Wald interval;
* Holm's step-down adjustment when several adapters are compared at once.

Written with ``math`` only (no scipy); checked against published values in
tests/test_eval_stats.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


@dataclass(frozen=True)
class PairedTable:
    """Counts of paired outcomes: ``both`` passed, ``only_new``, ``only_old``, ``neither``."""

    both: int
    only_new: int
    only_old: int
    neither: int

    @classmethod
    def from_pairs(cls, old: list[bool], new: list[bool]) -> PairedTable:
        if len(old) != len(new):
            raise ValueError(f"paired results need equal lengths, got {len(old)} and {len(new)}")
        pairs = list(zip(old, new, strict=True))
        return cls(both=sum(o and n for o, n in pairs), only_new=sum(n and not o for o, n in pairs),
                   only_old=sum(o and not n for o, n in pairs), neither=sum(not o and not n for o, n in pairs))

    @property
    def n(self) -> int:
        return self.both + self.only_new + self.only_old + self.neither

    @property
    def delta(self) -> float:
        """Accuracy of the new run minus the old one."""
        return (self.only_new - self.only_old) / self.n if self.n else 0.0


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integer arithmetic, then one division)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf_half(min(b, c), n))


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired_interval(table: PairedTable, z: float = Z95) -> tuple[float, float]:
    """Newcombe's square-and-add interval for ``p_new - p_old`` on paired data."""
    n = table.n
    if n == 0:
        return -1.0, 1.0
    new_pass = table.both + table.only_new
    old_pass = table.both + table.only_old
    p1, p2 = new_pass / n, old_pass / n
    l1, u1 = wilson_interval(new_pass, n, z)
    l2, u2 = wilson_interval(old_pass, n, z)
    phi = _corrected_phi(table, new_pass, old_pass)
    delta = p1 - p2
    lower = delta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = delta + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def _corrected_phi(table: PairedTable, new_pass: int, old_pass: int) -> float:
    # Newcombe's continuity-corrected correlation: a positive association is shrunk by n/2
    # (and set to 0 when smaller than that); a negative one is left as is.
    n = table.n
    margins = new_pass * (n - new_pass) * old_pass * (n - old_pass)
    if margins == 0:
        return 0.0
    a = float(table.both * table.neither - table.only_new * table.only_old)
    if a > n / 2:
        a -= n / 2
    elif a >= 0:
        a = 0.0
    return a / math.sqrt(margins)


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def min_discordant_for_significance(alpha: float = 0.05) -> int:
    """The fewest discordant cases for which exact McNemar can reach ``p < alpha`` at all."""
    n = 1
    while mcnemar_exact(n, 0) >= alpha:
        n += 1
    return n
