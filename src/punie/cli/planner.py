"""``punie planner``: workflow data, worker profiles and the evaluation of planners against baselines (the learned
planner's train and rl commands are in :mod:`punie.cli.planner_learned`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from punie.cli import planner_learned
from punie.cli.console import err, out

app = typer.Typer(help="The task planner: plan an instruction as a DAG of subtasks with a worker for each; its "
                       "workflow data, worker profiles, training, RL in the simulator, and evaluation against "
                       "routers' baselines.", no_args_is_help=True)
app.command("train")(planner_learned.train)
app.command("rl")(planner_learned.rl)


@app.command("data")
def data(
    *,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write train/valid/test.jsonl and manifest.json.")]
    = Path("data/planner"),
    workers: Annotated[Path, typer.Option(help="workers.json whose profiles choose each subtask's worker.")]
    = Path("data/planner/workers.json"),
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
    lam: Annotated[float, typer.Option(help="Price of a cost unit in the supervision's reward.")] = 0.0,
    mu: Annotated[float, typer.Option(help="Price of a second of latency in the supervision's reward.")] = 0.0,
    train: Annotated[int, typer.Option(help="Training workflows.")] = 400,
    valid: Annotated[int, typer.Option(help="Validation workflows.")] = 100,
    test: Annotated[int, typer.Option(help="Test workflows.")] = 100,
) -> None:
    """Generate the SYNTHETIC workflow splits (held-out templates and phrasings in valid and test)."""
    from punie.planner.generate import write_synthetic

    written = write_synthetic(out_dir, workers, seed=seed, lam=lam, mu=mu,
                              counts={"train": train, "valid": valid, "test": test})
    for name, (path, n) in written.items():
        out.print(f"{name}: {n} workflows -> {path}")


@app.command("from-traces")
def from_traces(
    output: Annotated[Path, typer.Argument(help="The workflow JSONL file to write.")],
    *,
    source: Annotated[str | None, typer.Option(help="Only traces of this source: agent, proxy, demo or eval.")] = None,
    category: Annotated[str | None, typer.Option(help="Only traces of this task category.")] = None,
    workers: Annotated[Path | None, typer.Option(help="workers.json: label each subtask with the trace's worker.")]
    = None,
) -> None:
    """Convert stored agent traces into workflows (tool steps as subtasks, data dependencies as edges)."""
    from punie.planner.convert import traces_to_workflows

    written, rejected = traces_to_workflows(output, source=source, category=category, workers=workers)
    for trace_id, why in rejected:
        err.print(f"trace {trace_id} left out: {why}")
    out.print(f"{written} workflows -> {output} ({len(rejected)} traces left out)")


@app.command("profile")
def profile(
    *,
    results: Annotated[list[Path], typer.Option(help="A results.json of 'punie eval' (repeat for several).")],
    out_path: Annotated[Path, typer.Option("--out", help="The workers.json to write.")] = Path("workers.json"),
    price: Annotated[list[str] | None, typer.Option(help="NAME=PRICE: a worker's price per token (default 1.0).")]
    = None,
    name: Annotated[list[str] | None, typer.Option(help="RUN=WORKER: name the worker of an eval run "
                                                  "(default: the run's name).")] = None,
) -> None:
    """Write worker profiles (success, tokens, latency per subtask type) from eval results."""
    from punie.planner.profile import parse_names, parse_prices, profile_workers
    from punie.planner.workers import write_workers

    profiled = profile_workers(results, parse_prices(price or []), parse_names(name or []))
    write_workers(out_path, profiled.workers)
    for category, n in sorted(profiled.ignored.items()):
        err.print(f"left out {n} case(s) of category {category!r}: not a subtask type")
    for w in profiled.workers.workers:
        rates = ", ".join(f"{t} {v:.2f}" for t, v in w.success.items())
        out.print(f"{w.name}: {rates}")
    out.print(f"Wrote {out_path}")


@app.command("eval")
def eval_planner(
    planner_dir: Annotated[Path | None, typer.Argument(help="A trained planner directory (omit: baselines only).")]
    = None,
    *,
    data: Annotated[Path, typer.Option(help="The held-out workflows (JSONL).")] = Path("data/planner/test.jsonl"),
    workers: Annotated[Path, typer.Option(help="workers.json.")] = Path("data/planner/workers.json"),
    train: Annotated[Path | None, typer.Option(help="Training workflows the best single worker is chosen on "
                                               "(default: train.jsonl beside --data).")] = None,
    planner: Annotated[list[str] | None, typer.Option(help="Also evaluate this planner directory; repeatable. "
                                                      "'rules' (the keyword planner) is always evaluated.")] = None,
    lam: Annotated[float, typer.Option(help="Price of a cost unit (a local token) in the reward.")] = 0.0,
    mu: Annotated[float, typer.Option(help="Price of a second of latency in the reward.")] = 0.0,
    lams: Annotated[str | None, typer.Option(help="The λ sweep of the cost-quality curve, comma-separated.")] = None,
    episodes: Annotated[int, typer.Option(help="Simulated episodes per workflow.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the common random draws.")] = 0,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write results.json and report.html "
                                                 "(default: a new planner-eval-DATE under PUNIE_HOME/runs).")] = None,
    force: Annotated[bool, typer.Option(help="Replace results already in --out.")] = False,
) -> None:
    """Score planners and the routers' baselines on held-out workflows; write results.json and report.html."""
    from punie.planner.evaluate import run_eval

    # The keyword planner is a baseline: always scored, beside any trained planner.
    specs = list(dict.fromkeys(["rules", *(planner or []), *([str(planner_dir)] if planner_dir else [])]))
    results, page = run_eval(data, workers, specs=specs, train=train, lam=lam, mu=mu, lams=lams,
                             episodes=episodes, seed=seed, out_dir=out_dir, force=force)
    _print_eval(results)
    out.print(f"Wrote {page.parent / 'results.json'} and {page}")


def _print_eval(results: dict) -> None:
    from rich.table import Table

    def f(v: float | None, spec: str = ".3f") -> str:
        return "–" if v is None else format(v, spec)

    for name, p in results["plans"].items():
        out.print(f"{name}: type acc {f(p['type_accuracy'])}, edge F1 {f(p['edge_f1'])}, exact {f(p['exact_match'])}, "
                  f"DAG valid {f(p['dag_validity'])}")
    table = Table(title=f"routing on the reference plans (λ={results['settings']['lam']})", box=None)
    for column in ("assigner", "success", "cost", "latency s", "reward", "worker acc", "APGR", "gap closed"):
        table.add_column(column, justify="left" if column == "assigner" else "right", no_wrap=column == "assigner")
    rows = [*results["routing"].items(), *((f"{n} (end to end)", r) for n, r in results["end_to_end"].items())]
    for name, r in rows:
        table.add_row(name, f(r["success"]), f(r["cost"], ".1f"), f(r["latency_s"], ".2f"), f(r["reward"]),
                      f(r["worker_accuracy"]), f(r["apgr"]), f(r["gap_closed"]))
    out.print(table)
    if results["single"]["apgr_undefined"]:
        out.print(f"APGR undefined: {results['single']['apgr_undefined']}.")
