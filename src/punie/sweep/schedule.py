"""How a sweep spends its training: the rungs of successive halving, as pure functions.

Successive halving (Jamieson & Talwalkar 2016) trains every config a short
way, scores each, keeps the best ``1/eta`` of them and continues only those, so
most of the training goes to the configs that look best. With ``n`` configs
there are ``ceil(log_eta(n)) + 1`` rungs; rung ``k`` trains to ``eta**(k - R)``
of each config's ``iters`` (the last rung to all of them) and keeps
``ceil(count / eta)``. A grid (or random) search is the one-rung case: every
config trained fully, scored once.

:func:`run_rungs` drives the schedule with any scoring function, so the same
code the sweep runs is tested on a synthetic score. A scorer that raises
:class:`OutOfBudget` ends the schedule where it stands.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rung:
    index: int
    fraction: float  # of each config's iters trained by the end of this rung
    keep: int  # configs that go on to the next rung (the last rung keeps its best one)


@dataclass
class RungResult:
    rung: Rung
    scores: dict[int, float | None] = field(default_factory=dict)  # config -> score (None: failed)
    kept: list[int] = field(default_factory=list)
    complete: bool = True  # False: the budget ran out during this rung


class OutOfBudget(Exception):
    """Raised by a scorer that may not start: the budget would be exceeded. ``str()`` says why."""


def halving_rungs(n: int, eta: int = 2) -> list[Rung]:
    """The rungs for ``n`` configs, each keeping the best ``1/eta`` (rounded up) until one is left."""
    if n < 1 or eta < 2:
        raise ValueError(f"successive halving needs at least one config and eta >= 2, got n={n}, eta={eta}")
    counts = [n]
    while counts[-1] > 1:
        counts.append(math.ceil(counts[-1] / eta))
    last = len(counts) - 1
    return [Rung(k, float(eta) ** (k - last), counts[k + 1] if k < last else 1) for k in range(len(counts))]


def one_rung(n: int) -> list[Rung]:
    """Grid or random search: every config trained fully and scored once."""
    return [Rung(0, 1.0, 1)]


def rung_steps(iters: int, fraction: float, multiple: int = 1) -> int:
    """Steps a config of ``iters`` has trained by a rung: at least one update, a whole number of updates."""
    steps = math.ceil(iters * fraction)
    steps = max(multiple, math.ceil(steps / multiple) * multiple)
    return min(steps, iters)


def ranked(scores: Mapping[int, float | None]) -> list[int]:
    """Configs best first; a failed one (None) last; ties keep the configs' order."""
    return sorted(scores, key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))


def run_rungs(n: int, rungs: list[Rung], score: Callable[[int, Rung], float | None]) -> tuple[list[RungResult], str]:
    """Score the surviving configs rung by rung (best of the previous rung first); return the rungs' results
    and, when the budget stopped it, why ('' otherwise)."""
    alive = list(range(n))
    history: list[RungResult] = []
    for rung in rungs:
        result = RungResult(rung)
        history.append(result)
        try:
            for i in alive:
                result.scores[i] = score(i, rung)
        except OutOfBudget as stop:
            result.complete = False
            return history, str(stop)
        result.kept = ranked(result.scores)[:rung.keep] if rung.index < len(rungs) - 1 else []
        alive = result.kept
    return history, ""


def winner(history: list[RungResult]) -> int | None:
    """The best config of the furthest rung that scored any (scores compare only at equal training)."""
    for result in reversed(history):
        scored = {i: s for i, s in result.scores.items() if s is not None}
        if scored:
            return ranked(scored)[0]
    return None
