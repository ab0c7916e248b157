"""The task report: a ``punie eval --tasks`` results.json rendered into one self-contained report.html.

The cards, the per-category table and the loss curves are the eval report's
(:mod:`punie.report.eval_report`), on the same summary keys: a run's ``accuracy``
is its task success rate. Below them, each task's episodes stand side by side,
baseline first: every assistant turn, tool call and tool result, the final
answer, and each check with why it failed. As in the eval report, Jinja
autoescapes every model output and tool result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from punie.report.eval_report import category_rows, loss_curve, pct, run_card
from punie.report.templates import render_template

TEMPLATE = "tasks.html.j2"


def render_task_report(results: dict[str, Any]) -> str:
    return render_template(TEMPLATE, **build_task_context(results))


def build_task_context(results: dict[str, Any]) -> dict[str, Any]:
    runs = results.get("runs", [])
    comparisons = {c["run"]: c for c in results.get("comparisons", [])}
    batched = results.get("timing") == "batched"
    return {
        "title": f"punie eval --tasks: {Path(results['suite']['path']).name}",
        "meta": {k: results.get(k) for k in ("created", "model", "engine", "max_tokens", "interrupted", "error",
                                             "sandbox")}
        | {"suite": results["suite"]["path"], "n_tasks": results["suite"]["cases"]},
        "cards": [run_card(run, comparisons.get(run["name"])) | {"extra": _extra(run["summary"]),
                                                              "timing": _run_timing(run["summary"], batched)}
                  for run in runs],
        "run_names": [run["name"] for run in runs],
        "categories": category_rows(runs, comparisons),
        "metrics": [_metrics_row(run) for run in runs],
        "tasks": _task_rows(results),
        "curves": [c for c in (loss_curve(run) for run in runs) if c],
    }


def _num(value: float | None, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def _extra(summary: dict[str, Any]) -> list[str]:
    lo, hi = summary["ci95"]
    return [f"task success, 95% CI {pct(lo)} to {pct(hi)}"]


def _run_timing(summary: dict[str, Any], batched: bool) -> dict[str, str]:
    per_task = _num(summary.get("time_per_task_s"))
    text = f"{per_task} s per task, run {summary.get('elapsed_s', 0.0):.1f} s for {summary['n']} tasks"
    if batched:
        return {"text": text + ", batched", "title": "episodes stepped together, each step one batched generation, "
                                                     "so the time per task is the run's wall time over its tasks"}
    return {"text": text, "title": "episodes ran one after another: the time per task is their own mean"}


def _metrics_row(run: dict[str, Any]) -> dict[str, Any]:
    s = run["summary"]
    lo, hi = s["ci95"]
    return {"name": run["name"], "success": f"{pct(s['accuracy'])} ({s['passed']}/{s['n']})",
            "ci": f"{pct(lo)} to {pct(hi)}", "steps": _num(s["mean_steps"]), "calls": _num(s["mean_tool_calls"]),
            "tool_errors": _num(s["mean_tool_errors"]), "tokens": _num(s["mean_tokens"], ".0f"),
            "time": _num(s["time_per_task_s"]),
            "failed_checks": ", ".join(f"{name} ×{n}" for name, n in s.get("failed_checks", {}).items()) or "–"}


def _task_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    by_run = [{e["id"]: e for e in run["episodes"]} for run in results.get("runs", [])]
    rows = []
    for task in results.get("tasks", []):
        episodes = [found.get(task["id"]) for found in by_run]
        passed = [e["passed"] for e in episodes if e is not None]
        rows.append({
            "id": task["id"], "category": task["category"], "instruction": task["instruction"],
            "tools": ", ".join(task.get("tools") or []) or "all",
            "checks": [json.dumps(c, ensure_ascii=False) for c in task["checks"]],
            "failed": any(not p for p in passed), "changed": len(set(passed)) > 1,
            "episodes": [_episode(e) if e is not None else None for e in episodes],
        })
    return rows


def _episode(episode: dict[str, Any]) -> dict[str, Any]:
    tokens = episode.get("tokens")
    stats = [_count(episode["steps"], "step"), _count(episode["tool_calls"], "tool call"),
             *([_count(episode["tool_errors"], "tool error")] if episode["tool_errors"] else []),
             *([_count(tokens, "token")] if tokens is not None else [])]
    return {"passed": episode["passed"], "outcome": episode["outcome"], "stats": " · ".join(stats),
            "checks": [{"type": c["type"], "passed": c["passed"], "reason": c["reason"]} for c in episode["checks"]],
            "error": episode.get("error"), "turns": _turns(episode.get("messages", [])),
            "answer": episode.get("answer"), "workspace": episode.get("workspace")}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation after the instruction: assistant turns (text, tool calls) and tool results."""
    start = next((i + 1 for i, m in enumerate(messages) if m["role"] == "user"), 0)
    turns = []
    for message in messages[start:]:
        if message["role"] == "assistant":
            calls = [f"{c['function']['name']}({json.dumps(c['function'].get('arguments'), ensure_ascii=False)})"
                     for c in message.get("tool_calls") or []]
            broken = bool(message.get("tool_call_errors"))
            final = not calls and not broken
            turns.append({"kind": "answer" if final else "assistant", "text": message.get("content") or "",
                          "calls": calls, "broken": broken})
        else:
            text = message.get("content") or ""
            turns.append({"kind": "tool", "text": text, "calls": [], "broken": text.startswith("Error:")})
    return turns
