"""The sweep report: summary.json rendered into one self-contained report.html.

Computed here, laid out by ``templates/sweep.html.j2``: the sortable candidate
table, selection accuracy against each swept setting, each config's selection
accuracy over its training steps (the halving rungs), the training loss curves
(the eval report's), and the test suite's cards (the eval report's, from the
test results.json). No network requests: CSS, SVG and the sorting script are inline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from punie import fileio
from punie.errors import DataError
from punie.report.eval_report import build_context, loss_curve, pct
from punie.report.templates import render_template
from punie.training.rundir import METRICS

TEMPLATE = "sweep.html.j2"
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 420, 200, 44, 12, 12, 30


def write_sweep_report(out_dir: Path | str) -> Path:
    """Render ``out_dir/summary.json`` of a punie sweep into ``out_dir/report.html``; return its path."""
    out = Path(out_dir)
    path = out / "summary.json"
    if not path.is_file():
        raise DataError(f"{out} has no summary.json; it is not a punie sweep directory.")
    page = out / "report.html"
    fileio.write_text(page, render_template(TEMPLATE, **sweep_context(json.loads(path.read_text()), out)))
    return page


def sweep_context(summary: dict[str, Any], out: Path) -> dict[str, Any]:
    """The page's context; files are read from the sweep directory ``out`` (its paths in summary.json are
    relative to where the sweep ran)."""
    settings = summary["settings"]
    varied = [k for k, values in summary["space"].items() if len(values) > 1]
    candidates = summary["candidates"]
    test = summary.get("test")
    test_context = build_context(json.loads((out / "test" / "results.json").read_text())) if test else None
    return {
        "title": f"punie sweep: {Path(settings['output']).name}",
        "summary": summary, "settings": settings, "varied": varied,
        "baseline": _score(summary["baseline"]["selection"]),
        "winner": summary.get("winner"), "winner_score": pct((summary.get("winner") or {}).get("selection_accuracy")),
        "reference": summary.get("reference"),
        "rows": [_row(c, varied, summary.get("winner")) for c in candidates],
        "by_setting": [_by_setting(name, [c for c in candidates if c["config"] >= 0], summary["space"][name])
                       for name in varied],
        "first_rung": len(summary["rungs"]) > 1,
        "rungs": _rung_plot(summary) if len(summary["rungs"]) > 1 else None,
        "curves": [c for c in (loss_curve({"name": r["id"], "metrics_path": str(out / "runs" / r["id"] / METRICS)})
                               for r in candidates) if c],
        "test": test, "test_cards": test_context["cards"] if test_context else [],
        "head_to_head": [_head_to_head(c) for c in (test or {}).get("winner_vs_reference", [])],
        "run_names": [],
    }


def _score(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    lo, hi = record["ci95"]
    return {"accuracy": pct(record["accuracy"]), "detail": f"{record['passed']}/{record['n']}",
            "ci": f"{100 * lo:.0f}–{100 * hi:.0f}%", "value": record["accuracy"]}


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _row(record: dict[str, Any], varied: list[str], winner: dict[str, Any] | None) -> dict[str, Any]:
    last = record["selection"][-1] if record["selection"] else None
    score = _score(last)
    cells = [{"text": str(record["settings"].get(k, "")), "sort": json.dumps(record["settings"].get(k))}
             for k in varied]
    numbers = [(_num(record.get("steps"), "d"), record.get("steps")),
               (score["accuracy"] if score else "–", last["accuracy"] if last else -1),
               (score["ci"] if score else "", last["ci95"][0] if last else -1),
               (_num(record.get("train_seconds"), ".1f"), record.get("train_seconds")),
               (_num(record.get("tokens_per_second"), ".0f"), record.get("tokens_per_second")),
               (_num(record.get("peak_memory_gb"), ".3f"), record.get("peak_memory_gb")),
               (_num(record.get("best_val_loss"), ".3f"), record.get("best_val_loss"))]
    won = winner is not None and record["id"] in winner["candidates"]
    return {"id": record["id"], "seed": record["seed"], "cells": cells, "won": won,
            "numbers": [{"text": t, "sort": -1e300 if v is None else v} for t, v in numbers],
            "status": record.get("error") or record.get("status") or "not started"}


def _box(y0: float = 0.0, y1: float = 1.0) -> dict[str, Any]:
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP,
            "bottom": HEIGHT - BOTTOM, "y_min": pct(y0), "y_max": pct(y1)}


def _y(accuracy: float) -> float:
    return TOP + (1 - accuracy) * (HEIGHT - TOP - BOTTOM)


def _by_setting(name: str, candidates: list[dict[str, Any]], values: list[Any]) -> dict[str, Any]:
    """Each candidate's first selection accuracy at its value of ``name`` (the values as categories): with
    halving, the first rung's, where every config had the same share of its training."""
    span = (WIDTH - LEFT - RIGHT) / len(values)
    ticks, points = [], []
    for k, value in enumerate(values):
        x = LEFT + span * (k + 0.5)
        ticks.append({"x": f"{x:.1f}", "label": str(value)})
        scores = [c["selection"][0]["accuracy"] for c in candidates
                  if c["selection"] and c["settings"].get(name) == value]
        for j, accuracy in enumerate(scores):
            jitter = (j - (len(scores) - 1) / 2) * min(6.0, span / (2 * max(len(scores), 1)))
            points.append({"x": f"{x + jitter:.1f}", "y": f"{_y(accuracy):.1f}", "title": pct(accuracy), "mean": False})
        if scores:
            mean = sum(scores) / len(scores)
            points.append({"x": f"{x:.1f}", "y": f"{_y(mean):.1f}", "title": f"mean {pct(mean)}", "mean": True})
    return {"name": name, "ticks": ticks, "points": points} | _box()


def _rung_plot(summary: dict[str, Any]) -> dict[str, Any]:
    """Each config's mean selection accuracy against the steps it had trained (successive halving)."""
    lines = []
    series = []
    for config in summary["configs"]:
        members = [c for c in summary["candidates"] if c["id"] in config["candidates"]]
        steps = sorted({s["steps"] for c in members for s in c["selection"]})
        points = []
        for n in steps:
            scores = [s["accuracy"] for c in members for s in c["selection"] if s["steps"] == n]
            points.append((n, sum(scores) / len(scores)))
        series.append((config, points))
    x1 = max([n for _, points in series for n, _ in points] or [1])
    for config, points in series:
        def project(n: float, accuracy: float) -> str:
            return f"{LEFT + n / x1 * (WIDTH - LEFT - RIGHT):.1f},{_y(accuracy):.1f}"

        label = ", ".join(f"{k}={v}" for k, v in config["settings"].items()
                          if len(summary["space"].get(k, [])) > 1)
        lines.append({"points": " ".join(project(n, a) for n, a in points),
                      "label": label or f"config {config['index']}",
                      "dots": [project(n, a).split(",") for n, a in points],
                      "won": (summary.get("winner") or {}).get("config") == config["index"]})
    return {"lines": lines, "x_max": x1} | _box()


def _head_to_head(comp: dict[str, Any]) -> str:
    lo, hi = comp["ci95"]
    return (f"{comp['run']} vs {comp['baseline']}: {pct(comp['baseline_accuracy'])} -> {pct(comp['accuracy'])} "
            f"({100 * comp['delta']:+.1f} pp, 95% CI {100 * lo:+.1f} to {100 * hi:+.1f}; {comp['improved']} fixed, "
            f"{comp['regressed']} broken, McNemar p = {comp['p_value']:.3g}): {comp['verdict']}")
