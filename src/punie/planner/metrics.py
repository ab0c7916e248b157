"""Plan metrics (a decoded plan against the reference workflow) and the router literature's summaries.

Plans are compared position by position after :meth:`Workflow.ordered` (both sides in topological
order, ties in listed order), the order a planner decodes in and the synthetic data lists in:

- type accuracy: positions whose types agree, over the longer of the two plans (a plan with a
  step too many or too few loses that step);
- edge precision / recall / F1 over the sets of (earlier, later) position pairs, micro-averaged
  over workflows (a workflow without edges adds nothing to either count);
- exact match: the same types in the same order and the same edges;
- executes: the same types in order and every reference edge kept (extra edges only serialise
  steps that could run in parallel, a missing one runs a step before its input exists). A plan
  that does not execute fails in simulation.

APGR and "gap closed" summarise cost-quality curves, see :func:`apgr` and :func:`gap_closed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from punie.planner.workflow import Workflow


@dataclass
class PlanCounts:
    """Sums over workflows, so the metrics are micro-averages."""

    plans: int = 0
    valid: int = 0  # plans that were DAGs (a planner that fails to give one counts here as invalid)
    type_hits: int = 0
    type_slots: int = 0
    edge_hits: int = 0
    edges_predicted: int = 0
    edges_reference: int = 0
    exact: int = 0
    executes: int = 0

    def add(self, predicted: Workflow | None, reference: Workflow) -> None:
        self.plans += 1
        ref = reference.ordered()
        if predicted is None:  # no valid plan: every reference step and edge is missed
            self.type_slots += len(ref.subtasks)
            self.edges_reference += len(ref.edges)
            return
        self.valid += 1
        pred = predicted.ordered()
        self.type_hits += sum(a == b for a, b in zip(pred.types(), ref.types(), strict=False))
        self.type_slots += max(len(pred.subtasks), len(ref.subtasks))
        pe, re_ = pred.edge_positions(), ref.edge_positions()
        self.edge_hits += len(pe & re_)
        self.edges_predicted += len(pe)
        self.edges_reference += len(re_)
        same_types = pred.types() == ref.types()
        self.exact += same_types and pe == re_
        self.executes += same_types and re_ <= pe

    def summary(self) -> dict[str, float | int | None]:
        precision = _ratio(self.edge_hits, self.edges_predicted)
        recall = _ratio(self.edge_hits, self.edges_reference)
        f1 = (None if precision is None or recall is None else
              0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
        return {"plans": self.plans, "dag_validity": _ratio(self.valid, self.plans),
                "type_accuracy": _ratio(self.type_hits, self.type_slots), "edge_precision": precision,
                "edge_recall": recall, "edge_f1": f1, "exact_match": _ratio(self.exact, self.plans),
                "executes": _ratio(self.executes, self.plans)}


def executes(predicted: Workflow, reference: Workflow) -> bool:
    pred, ref = predicted.ordered(), reference.ordered()
    return pred.types() == ref.types() and ref.edge_positions() <= pred.edge_positions()


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def apgr(curve: Sequence[tuple[float, float]], cheap: tuple[float, float], strong: tuple[float, float]) -> float | None:
    """The average performance gap recovered of a cost-quality curve, as RouteLLM computes it.

    RouteLLM (lm-sys/RouteLLM, ``routellm/evals/evaluate.py``, ``apgr_metric``) integrates a router's
    quality over its cost axis (the share of calls to the strong model, 0 to 1) with the trapezoid
    rule and normalises it between the weak and the strong model's quality integrated over the same
    axis: ``(AUC - weak AUC) / (strong AUC - weak AUC)``. Our cost axis is the mean cost per workflow,
    rescaled so the cheapest single worker is 0 and the strongest single worker is 1 (the two ends of
    RouteLLM's axis). A router's sweep gives points (cost, quality); the curve starts at the cheapest
    worker's point (RouteLLM's curves start at 0% strong calls, the weak model), joins the points in
    order of cost (mixing two settings across workflows realises every point between them), holds
    its last quality beyond its dearest point, and is read on [0, 1]. Points dearer than the strongest
    worker count at 1 only through the interpolation. 1.0 recovers the whole gap at every budget.

    ``cheap`` and ``strong`` are the (cost, quality) of the two single workers; None when the
    cheapest worker is also the strongest, or as dear (no cost axis), or as good (no gap).
    """
    (c0, q0), (c1, q1) = cheap, strong
    if c1 <= c0 or q1 <= q0:
        return None
    points = sorted(((c - c0) / (c1 - c0), q) for c, q in curve)
    if not points or points[0][0] > 0:
        points.insert(0, (0.0, q0))
    grid = [x for x, _ in points if 0 < x < 1]
    xs = [0.0, *grid, 1.0]
    ys = [_interpolate(points, x) for x in xs]
    area = sum((xs[k + 1] - xs[k]) * (ys[k + 1] + ys[k]) / 2 for k in range(len(xs) - 1))
    return (area - q0) / (q1 - q0)  # the weak and strong "curves" are flat: their areas on [0, 1] are q0, q1


def _interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear through ``points`` (sorted by x), flat beyond both ends."""
    if x <= points[0][0]:
        return points[0][1]
    for (xa, ya), (xb, yb) in zip(points, points[1:], strict=False):
        if xa <= x <= xb:
            return ya if xb == xa else ya + (yb - ya) * (x - xa) / (xb - xa)
    return points[-1][1]


def gap_closed(planner: float, single: float, oracle: float) -> float | None:
    """(planner - best single) / (oracle - best single): the share of the routing headroom a planner took."""
    return None if oracle <= single else (planner - single) / (oracle - single)
