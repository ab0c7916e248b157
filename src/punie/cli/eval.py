"""``punie eval``: the baseline and each adapter on a suite, compared with paired statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from punie.cli.console import err, out


def eval_command(
    *,
    suite: Annotated[Path | None, typer.Option(help="The suite: a JSONL file, one case per line (scores one "
                                                    "assistant turn per case).")] = None,
    tasks: Annotated[Path | None, typer.Option(help="A task suite instead: a JSONL file, one agent task per line, "
                                                    "each run as a whole episode and judged by its checks.")] = None,
    model: Annotated[str | None, typer.Option(help="Base model: 'default', a directory, or a repo id.")] = None,
    adapter: Annotated[list[Path] | None, typer.Option(
        help="A LoRA adapter directory to compare with the baseline (repeat for several).")] = None,
    engine: Annotated[str, typer.Option(
        help="inprocess (one model in memory, batched) or server (one punie serve per run).")] = "inprocess",
    endpoint: Annotated[str | None, typer.Option(
        help="Evaluate an OpenAI-compatible server at this URL instead (one run, no adapters).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens generated per case (per turn with --tasks).")] = 256,
    batch_size: Annotated[int, typer.Option(help="Cases (episodes' turns) generated together (inprocess "
                                                 "engine).")] = 16,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Output directory for results.json and report.html (default: a new one under runs/).")] = None,
    force: Annotated[bool, typer.Option(help="Replace results already in --out; evaluate an adapter on a base "
                                             "model other than the one it records.")] = False,
    sandbox: Annotated[bool, typer.Option(help="With --tasks: run commands in the OS sandbox (bubblewrap / "
                                               "sandbox-exec); --no-sandbox runs them unconfined.")] = True,
    timeout: Annotated[float, typer.Option(help="With --tasks: seconds a command may take.")] = 10.0,
    record: Annotated[bool, typer.Option(help="With --tasks: store every episode in the trace store (source "
                                              "'eval', outcome passed/failed). Exported, a held-out suite's "
                                              "episodes would become training data for it.")] = False,
    keep_workspaces: Annotated[bool, typer.Option(help="With --tasks: keep each episode's workspace under "
                                                       "OUT/workspaces/RUN/ instead of removing it.")] = False,
) -> None:
    """Run the baseline and each --adapter on the same cases (or tasks) and report what changed."""
    from punie.errors import ConfigError
    from punie.report.eval_report import write_report

    if (suite is None) == (tasks is None):
        raise ConfigError("give one of --suite (cases scored on one turn) or --tasks (agent tasks judged by checks).")
    if suite is not None and (record or keep_workspaces):
        raise ConfigError("--record and --keep-workspaces apply to --tasks episodes, not to --suite cases.")
    progress = _ProgressBars()
    with progress.bars:
        if tasks is not None:
            from punie.eval.task_eval import TaskEvalOptions, run_task_eval

            options = TaskEvalOptions(sandbox="auto" if sandbox else "none", timeout_s=timeout, record=record,
                                      keep_workspaces=keep_workspaces)
            if not sandbox:
                err.print("[yellow]Warning:[/] --no-sandbox: run_command runs programs unconfined, as your user.")
            results: Any = run_task_eval(tasks, model=model, adapters=adapter or [], engine=engine,
                                         max_tokens=max_tokens, out_dir=out_dir, progress=progress, endpoint=endpoint,
                                         batch_size=batch_size, on_written=write_report, force=force, options=options)
        else:
            from punie.eval import run_eval

            assert suite is not None
            results = run_eval(suite, model=model, adapters=adapter or [], engine=engine, max_tokens=max_tokens,
                               out_dir=out_dir, progress=progress, endpoint=endpoint, batch_size=batch_size,
                               on_written=write_report, force=force)
    for warning in results.warnings:
        err.print(f"[yellow]Warning:[/] {warning}")
    data = results.to_dict()
    out.print(_summary_table(data))
    for comp in data["comparisons"]:
        if comp.get("note"):
            out.print(f"[yellow]{comp['run']}: {comp['note']}[/]")
    folder = results.out_dir or Path(".")
    out.print(f"Results: {folder / 'results.json'}\nReport:  {folder / 'report.html'}  (punie report open {folder})")
    if results.interrupted:
        done = sum(len(r.cases) for r in results.runs)
        err.print(f"Interrupted: kept {done} finished {'episode' if tasks else 'case'}(s) in {folder}.")
        raise SystemExit(130)


class _ProgressBars:
    """The rich progress display, fed by run_eval's progress callback."""

    def __init__(self) -> None:
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[passed]} passed"), TimeElapsedColumn(), console=err)
        self.tasks: dict[str, Any] = {}
        self.passed: dict[str, int] = {}

    def __call__(self, event: Any) -> None:
        if event.run not in self.tasks:
            self.passed[event.run] = 0
            self.tasks[event.run] = self.bars.add_task(f"{event.run} ({event.run_index + 1}/{event.runs})",
                                                       total=event.total, passed=0)
        if event.passed:
            self.passed[event.run] += 1
        self.bars.update(self.tasks[event.run], completed=event.done, passed=self.passed[event.run])


def _summary_table(data: dict[str, Any]) -> Table:
    comps = {c["run"]: c for c in data["comparisons"]}
    tasks = data.get("kind") == "tasks"
    what = "tasks" if tasks else "cases"
    table = Table(title=f"{data['suite']['path']} ({data['suite']['cases']} {what})")
    columns = ["run", "task success" if tasks else "accuracy", *(["95% CI"] if tasks else []), "delta",
               "delta 95% CI" if tasks else "95% CI",
               "p (McNemar)", "verdict", *(["steps", "calls", "tokens", "s/task"] if tasks else [])]
    for col in columns:
        table.add_column(col, justify="left" if col in ("run", "verdict") else "right")
    for run in data["runs"]:
        s = run["summary"]
        cells = [run["name"], f"{100 * s['accuracy']:.1f}% ({s['passed']}/{s['n']})"]
        if tasks:
            cells.append(f"{100 * s['ci95'][0]:.0f} to {100 * s['ci95'][1]:.0f}%")
        c = comps.get(run["name"])
        if c is None:
            cells += ["", "", "", ""]
        else:
            colour = {"better": "green", "worse": "red"}.get(c["verdict"], "white")
            cells += [f"{100 * c['delta']:+.1f} pp", f"{100 * c['ci95'][0]:+.1f} to {100 * c['ci95'][1]:+.1f}",
                      f"{c['p_adjusted']:.3g}", f"[{colour}]{c['verdict']}[/]"]
        if tasks:
            cells += [_num(s["mean_steps"], ".1f"), _num(s["mean_tool_calls"], ".1f"), _num(s["mean_tokens"], ".0f"),
                      _num(s["time_per_task_s"], ".1f")]
        table.add_row(*cells)
    return table


def _num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)
