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
    suite: Annotated[Path, typer.Option(help="The suite: a JSONL file, one case per line.")],
    model: Annotated[str | None, typer.Option(help="Base model: 'default', a directory, or a repo id.")] = None,
    adapter: Annotated[list[Path] | None, typer.Option(
        help="A LoRA adapter directory to compare with the baseline (repeat for several).")] = None,
    engine: Annotated[str, typer.Option(
        help="inprocess (one model in memory, batched) or server (one punie serve per run).")] = "inprocess",
    endpoint: Annotated[str | None, typer.Option(
        help="Evaluate an OpenAI-compatible server at this URL instead (one run, no adapters).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens generated per case.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Cases generated together (inprocess engine).")] = 16,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Output directory for results.json and report.html (default: a new one under runs/).")] = None,
    force: Annotated[bool, typer.Option(help="Replace results already in --out; evaluate an adapter on a base "
                                             "model other than the one it records.")] = False,
) -> None:
    """Run the baseline and each --adapter on the same cases and report what changed."""
    from punie.eval import run_eval
    from punie.report.eval_report import write_report

    progress = _ProgressBars()
    with progress.bars:
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
        err.print(f"Interrupted: kept {done} finished case(s) in {folder}.")
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
    table = Table(title=f"{data['suite']['path']} ({data['suite']['cases']} cases)")
    for col in ("run", "accuracy", "delta", "95% CI", "p (McNemar)", "verdict"):
        table.add_column(col, justify="left" if col in ("run", "verdict") else "right")
    for run in data["runs"]:
        s = run["summary"]
        acc = f"{100 * s['accuracy']:.1f}% ({s['passed']}/{s['n']})"
        c = comps.get(run["name"])
        if c is None:
            table.add_row(run["name"], acc, "", "", "", "")
            continue
        colour = {"better": "green", "worse": "red"}.get(c["verdict"], "white")
        table.add_row(run["name"], acc, f"{100 * c['delta']:+.1f} pp",
                      f"{100 * c['ci95'][0]:+.1f} to {100 * c['ci95'][1]:+.1f}",
                      f"{c['p_adjusted']:.3g}", f"[{colour}]{c['verdict']}[/]")
    return table
