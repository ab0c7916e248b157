"""The eval report: results.json rendered into one self-contained report.html.

Everything the page shows is computed here (percentages, colours, SVG paths)
and passed to ``templates/report.html.j2``, which only lays it out. Jinja's
autoescaping escapes every model output, so a ``<script>`` an answer contains
shows as text. The page makes no network requests: CSS, SVG and the small
filter script are inline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from punie import fileio
from punie.eval.results import read_results
from punie.report.templates import render_template

TEMPLATE = "report.html.j2"


def write_report(out_dir: Path | str) -> Path:
    """Render ``out_dir/results.json`` (an eval suite's or a task suite's) into ``out_dir/report.html``;
    return the page's path."""
    out = Path(out_dir)
    results = read_results(out)
    if results.get("kind") == "tasks":
        from punie.report.task_report import render_task_report

        html = render_task_report(results)
    else:
        html = render_report(results)
    path = out / "report.html"
    fileio.write_text(path, html)
    return path


def render_report(results: dict[str, Any]) -> str:
    return render_template(TEMPLATE, **build_context(results))


def build_context(results: dict[str, Any]) -> dict[str, Any]:
    runs = results.get("runs", [])
    comparisons = {c["run"]: c for c in results.get("comparisons", [])}
    batched = timing_mode(results) == "batched"
    return {
        "title": f"punie eval: {Path(results['suite']['path']).name}",
        "meta": {k: results.get(k) for k in ("created", "model", "engine", "max_tokens", "interrupted", "error")}
        | {"suite": results["suite"]["path"], "n_cases": results["suite"]["cases"]},
        "cards": [run_card(run, comparisons.get(run["name"])) | {"timing": _run_timing(run, results, batched)}
                  for run in runs],
        "run_names": [run["name"] for run in runs],
        "categories": category_rows(runs, comparisons),
        "scorer_notes": _scorer_notes(runs),
        "cases": _case_rows(results, batched),
        "curves": [c for c in (loss_curve(run) for run in runs) if c],
    }


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _pp(x: float) -> str:
    return f"{100 * x:+.1f} pp"


def run_card(run: dict[str, Any], comp: dict[str, Any] | None) -> dict[str, Any]:
    summary = run["summary"]
    card = {"name": run["name"], "adapter": run.get("adapter"), "accuracy": pct(summary["accuracy"]),
            "detail": f"{summary['passed']}/{summary['n']} passed"
            + ("" if summary.get("complete", True) else f" (interrupted, {summary['n_suite']} in suite)"),
            "extra": [], "comparison": None}
    if comp:
        lo, hi = comp["ci95"]
        card["comparison"] = {
            "delta": _pp(comp["delta"]), "ci": f"95% CI {_pp(lo)} to {_pp(hi)}",
            "p": f"McNemar p = {comp['p_value']:.3g}" + (f", Holm-adjusted {comp['p_adjusted']:.3g}"
                                                         if comp["p_adjusted"] != comp["p_value"] else ""),
            "changes": f"{comp['improved']} fixed, {comp['regressed']} broken of {comp['n_paired']}",
            "verdict": comp["verdict"], "css": _verdict_css(comp), "note": comp.get("note", ""),
        }
    return card


def _verdict_css(comp: dict[str, Any]) -> str:
    if not comp["significant"]:
        return "neutral"
    return "better" if comp["delta"] > 0 else "worse"


def _delta_css(delta: float, p_value: float) -> str:
    if delta == 0:
        return "zero"
    strength = "strong" if p_value < 0.05 else "weak"
    return f"{'up' if delta > 0 else 'down'} {strength}"


def category_rows(runs: list[dict[str, Any]], comparisons: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    categories = sorted({cat for run in runs for cat in run["summary"]["by_category"]})
    rows = []
    for cat in categories:
        cells = []
        for run in runs:
            stats = run["summary"]["by_category"].get(cat)
            comp = comparisons.get(run["name"], {}).get("by_category", {}).get(cat)
            cell = {"accuracy": pct(stats["accuracy"]) if stats else "–", "n": stats["n"] if stats else 0,
                    "delta": None, "css": ""}
            if comp:
                cell["delta"] = _pp(comp["delta"])
                cell["css"] = _delta_css(comp["delta"], comp["p_value"])
                cell["title"] = f"paired on {comp['n']} cases, McNemar p = {comp['p_value']:.3g} (unadjusted)"
            cells.append(cell)
        rows.append({"category": cat, "cells": cells})
    return rows


def _scorer_notes(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    notes = []
    for run in runs:
        for scorer, metrics in run["summary"].get("scorers", {}).items():
            items = [(k.replace("_", " "), _fmt_metric(v)) for k, v in metrics.items()
                     if k != "warning" and v is not None]
            notes.append({"run": run["name"], "scorer": scorer, "metrics": items, "warning": metrics.get("warning")})
    return notes


def _fmt_metric(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return pct(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt_metric(v)}" for k, v in value.items())
    return str(value)


def timing_mode(results: dict[str, Any]) -> str:
    """``per_case`` or ``batched`` (see :mod:`punie.eval.results`)."""
    if "timing" in results:
        return str(results["timing"])
    # results.json from before the field: the in-process engine stored batch wall time as each case's latency
    return "batched" if results.get("engine") == "inprocess" else "per_case"


def _run_timing(run: dict[str, Any], results: dict[str, Any], batched: bool) -> dict[str, str]:
    """The run's timing line and what it means, for its card."""
    summary = run["summary"]
    elapsed = f"run {summary.get('elapsed_s', 0.0):.1f} s for {summary['n']} cases"
    if not batched:
        mean = summary.get("mean_latency_s")
        text = elapsed if mean is None else f"{mean:.2f} s per case (mean), {elapsed}"
        return {"text": text, "title": "each case was one request on its own, so its latency is its own"}
    size = results.get("batch_size")
    speed = summary.get("tokens_per_s")
    text = elapsed + (f", batched {size} at a time" if size else ", batched")
    if speed is not None:
        text += f", {speed:.1f} generated tokens/s"
    return {"text": text, "title": "cases were generated together, sharing every step, so no case has a latency "
                                   "of its own; this is the whole run's wall time and throughput"}


def _case_rows(results: dict[str, Any], batched: bool) -> list[dict[str, Any]]:
    runs = results.get("runs", [])
    by_run = [{c["id"]: c for c in run["cases"]} for run in runs]
    rows = []
    for case in results.get("cases", []):
        outcomes = [found.get(case["id"]) for found in by_run]
        passed = [o["passed"] for o in outcomes if o is not None]
        prompt = next((m.get("content") or "" for m in reversed(case["messages"]) if m["role"] == "user"), "")
        rows.append({
            "id": case["id"], "category": case["category"], "scorer": case["scorer"], "prompt": prompt,
            "tools": ", ".join(case.get("tools") or []),
            "expect": json.dumps(case["expect"], ensure_ascii=False, indent=1),
            "failed": any(not p for p in passed), "changed": len(set(passed)) > 1,
            "outcomes": [_outcome(o, batched) for o in outcomes],
        })
    return rows


def _outcome(case: dict[str, Any] | None, batched: bool) -> dict[str, Any] | None:
    if case is None:
        return None
    if batched:
        tokens = case.get("generated_tokens")
        timing = {"text": "" if tokens is None else f"{tokens} tokens",
                  "title": "generated in a batch with other cases: see the run's time and tokens/s above"}
    else:
        latency = case.get("latency_s")
        timing = {"text": "" if latency is None else f"{latency:.2f} s",
                  "title": "wall time of this case's own request"}
    return {"passed": case["passed"], "score": f"{case['score']:.2f}", "output": case["output"],
            "tool_calls": [json.dumps(c, ensure_ascii=False) for c in case["tool_calls"]],
            "reason": case.get("reason", ""), "parse_errors": case.get("parse_errors", []),
            "timing": timing}


def read_metrics(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Train and validation loss series from an adapter's metrics.jsonl (unreadable lines are left out)."""
    from punie.training import rundir

    return rundir.loss_series(rundir.read_metrics_file(path, lenient=True))


def loss_curve(run: dict[str, Any]) -> dict[str, Any] | None:
    path = run.get("metrics_path")
    if not path or not Path(path).is_file():
        return None
    series = read_metrics(Path(path))
    points = [p for s in series.values() for p in s]
    if not points:
        return None
    return {"run": run["name"], "source": path} | loss_svg(series)


def loss_svg(series: dict[str, list[tuple[float, float]]], width: int = 560, height: int = 220) -> dict[str, Any]:
    """Polyline points and axis labels for the loss curves, in an SVG box of ``width`` x ``height``."""
    left, right, top, bottom = 48, 12, 12, 28
    points = [p for s in series.values() for p in s]
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def project(x: float, y: float) -> str:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)
        return f"{px:.1f},{py:.1f}"

    lines = [{"name": name.replace("_", " "), "css": name, "points": " ".join(project(x, y) for x, y in s),
              "single": len(s) == 1, "first": project(*s[0]) if s else ""}
             for name, s in series.items() if s]
    return {"width": width, "height": height, "left": left, "top": top, "bottom": height - bottom,
            "right": width - right, "lines": lines,
            "y_max": f"{y1:.3g}", "y_min": f"{y0:.3g}", "x_min": f"{x0:g}", "x_max": f"{x1:g}"}
