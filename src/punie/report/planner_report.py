"""The planner eval report: results.json of ``punie planner eval`` rendered into one report.html.

Computed here, laid out by ``templates/planner.html.j2``: the plan-metrics table, the routing and
end-to-end tables at the main ``lam``, and the cost-quality plane (mean cost per workflow against
success rate) with one line per assigner over the ``lam`` sweep, as inline SVG. No network requests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from punie import fileio
from punie.errors import DataError
from punie.report.templates import render_template

TEMPLATE = "planner.html.j2"
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 320, 52, 170, 14, 36
COLOURS = ("#3a6fd8", "#e07b00", "#1e7b34", "#b00020", "#7b3fb0", "#008b8b", "#8a5a00", "#c2185b", "#555", "#6b8e23",
           "#1f4e79", "#d2691e")


def write_planner_report(out_dir: Path | str) -> Path:
    """Render ``out_dir/results.json`` (a planner eval) into ``out_dir/report.html``; return its path."""
    out = Path(out_dir)
    path = out / "results.json"
    if not path.is_file():
        raise DataError(f"{out} has no results.json; run 'punie planner eval --out {out}' first.")
    results = json.loads(path.read_text(encoding="utf-8"))
    if results.get("kind") != "planner-eval":
        raise DataError(f"{path} is not the results of 'punie planner eval' (kind {results.get('kind')!r}).")
    page = out / "report.html"
    fileio.write_text(page, render_template(TEMPLATE, **planner_context(results)))
    return page


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _row(name: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "kind": row["kind"], "cells": [
        _fmt(row["success"], ".3f"), _fmt(row["expected_success"], ".3f"), _fmt(row["cost"], ".1f"),
        _fmt(row["latency_s"], ".2f"), _fmt(row["reward"], ".3f"), _fmt(row.get("worker_accuracy"), ".3f"),
        _fmt(row.get("apgr"), ".3f"), _fmt(row.get("gap_closed"), ".3f")]}


def _plane(lines: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Success against mean cost, one polyline per assigner (its points in order of cost)."""
    costs = [p["cost"] for _, curve in lines for p in curve] or [0.0, 1.0]
    x0, x1 = min(costs), max(costs)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 1.0, x1 + 1.0
    successes = [p["success"] for _, curve in lines for p in curve] or [0.0]
    y1 = max(0.05, min(1.0, max(successes) * 1.15))

    def xy(p: dict[str, Any]) -> tuple[float, float]:
        x = LEFT + (p["cost"] - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)
        y = TOP + (1 - p["success"] / y1) * (HEIGHT - TOP - BOTTOM)
        return round(x, 1), round(y, 1)

    drawn = []
    for k, (name, curve) in enumerate(lines):
        points = sorted(curve, key=lambda p: (p["cost"], p["success"]))
        dots = [{"x": xy(p)[0], "y": xy(p)[1], "title": f"{name} lam={p['lam']}: success {p['success']:.3f}, "
                 f"cost {p['cost']:.1f}"} for p in points]
        drawn.append({"name": name, "colour": COLOURS[k % len(COLOURS)], "dots": dots,
                      "points": " ".join(f"{d['x']},{d['y']}" for d in dots), "legend_y": TOP + 12 + 15 * k})
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP,
            "bottom": HEIGHT - BOTTOM, "x_min": f"{x0:.0f}", "x_max": f"{x1:.0f}", "y_max": f"{y1:.2f}",
            "lines": drawn, "legend_x": WIDTH - RIGHT + 12}


def planner_context(results: dict[str, Any]) -> dict[str, Any]:
    routing, end_to_end = results["routing"], results["end_to_end"]
    lines = [(name, row["curve"]) for name, row in routing.items()]
    lines += [(f"{name} (end to end)", row["curve"]) for name, row in end_to_end.items()]
    settings = results["settings"]
    return {
        "title": "punie planner eval", "results": results, "settings": settings,
        "plans": [{"name": n, **{k: _fmt(v, ".3f") if isinstance(v, float) else v for k, v in p.items()}}
                  for n, p in results["plans"].items()],
        "routing": [_row(n, r) for n, r in routing.items()],
        "end_to_end": [_row(n, r) for n, r in end_to_end.items()],
        "plane": _plane(lines), "single": results["single"],
        "workers": results["workers"], "run_names": [],  # _style.html.j2 sizes the eval report's grid by it
    }
