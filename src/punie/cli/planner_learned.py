"""``punie planner train``/``rl`` and ``punie plan``: the learned planner; display only, the work is in punie.planner.

Registered on the ``punie planner`` app by :mod:`punie.cli.planner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.tree import Tree

from punie.cli.console import err, out
from punie.planner.rl import RLConfig
from punie.planner.train import PlannerTrainConfig


def _train_help(name: str) -> str:
    return PlannerTrainConfig.model_fields[name].description or ""


def _rl_help(name: str) -> str:
    return RLConfig.model_fields[name].description or ""


# ---- punie planner train -----------------------------------------------------------------------
def train(
    data: Annotated[Path, typer.Argument(metavar="DATA_DIR", help=_train_help("data"))],
    *,
    output: Annotated[Path, typer.Option("--output", "-o", help=_train_help("output"))],
    workers: Annotated[Path | None, typer.Option(help=_train_help("workers"))] = None,
    dims: Annotated[int | None, typer.Option(help=_train_help("dims"))] = None,
    layers: Annotated[int | None, typer.Option(help=_train_help("layers"))] = None,
    heads: Annotated[int | None, typer.Option(help=_train_help("heads"))] = None,
    max_words: Annotated[int | None, typer.Option(help=_train_help("max_words"))] = None,
    max_subtasks: Annotated[int | None, typer.Option(help=_train_help("max_subtasks"))] = None,
    iters: Annotated[int | None, typer.Option(help=_train_help("iters"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_train_help("batch_size"))] = None,
    learning_rate: Annotated[float | None, typer.Option(help=_train_help("learning_rate"))] = None,
    word_dropout: Annotated[float | None, typer.Option(help=_train_help("word_dropout"))] = None,
    connective_dropout: Annotated[float | None, typer.Option(help=_train_help("connective_dropout"))] = None,
    lam: Annotated[float | None, typer.Option(help=_train_help("lam"))] = None,
    mu: Annotated[float | None, typer.Option(help=_train_help("mu"))] = None,
    decoder_types: Annotated[bool | None, typer.Option("--decoder-types/--no-decoder-types",
                                                       help=_train_help("decoder_types"))] = None,
    seed: Annotated[int | None, typer.Option(help=_train_help("seed"))] = None,
    steps_per_eval: Annotated[int | None, typer.Option(help=_train_help("steps_per_eval"))] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --output planner directory.")] = False,
) -> None:
    """Train the planner by supervision on DATA_DIR/train.jsonl, validating on DATA_DIR/valid.jsonl."""
    from punie.planner.train import resolve_train_config, train_planner

    given = {k: v for k, v in locals().items() if k in PlannerTrainConfig.model_fields and v is not None}
    config = resolve_train_config(given)
    with ProgressDisplay("planner train", config.iters) as display:
        result = train_planner(config, display, force=force)
    best = result.best
    worker = f"; worker accuracy {best['val_worker_accuracy']:.3f}" if "val_worker_accuracy" in best else ""
    out.print(f"Planner: {result.output} (best step {result.best_step}); val loss {best['val_loss']:.3f}; type "
              f"accuracy {best['val_type_accuracy']:.3f}; edge F1 {best['val_edge_f1']:.3f}; exact plans "
              f"{best['val_plan_match']:.3f}{worker}")


# ---- punie planner rl --------------------------------------------------------------------------
def rl(
    planner: Annotated[Path, typer.Argument(metavar="PLANNER_DIR", help=_rl_help("planner"))],
    *,
    workers: Annotated[Path, typer.Option(help=_rl_help("workers"))],
    data: Annotated[Path, typer.Option(help=_rl_help("data"))],
    output: Annotated[Path | None, typer.Option("--output", "-o", help=_rl_help("output") +
                                                " Default: PLANNER_DIR-rl.")] = None,
    lam: Annotated[float | None, typer.Option(help=_rl_help("lam"))] = None,
    lam_max: Annotated[float | None, typer.Option(help=_rl_help("lam_max"))] = None,
    mu: Annotated[float | None, typer.Option(help=_rl_help("mu"))] = None,
    algo: Annotated[str | None, typer.Option(help=_rl_help("algo"))] = None,
    reward: Annotated[str | None, typer.Option(help=_rl_help("reward"))] = None,
    group: Annotated[int | None, typer.Option(help=_rl_help("group"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_rl_help("batch_size"))] = None,
    iters: Annotated[int | None, typer.Option(help=_rl_help("iters"))] = None,
    learning_rate: Annotated[float | None, typer.Option(help=_rl_help("learning_rate"))] = None,
    entropy: Annotated[float | None, typer.Option(help=_rl_help("entropy"))] = None,
    jitter: Annotated[float | None, typer.Option(help=_rl_help("jitter"))] = None,
    seed: Annotated[int | None, typer.Option(help=_rl_help("seed"))] = None,
) -> None:
    """Improve PLANNER_DIR's worker choices by policy gradient in the simulator; writes a new planner."""
    from punie.planner.rl import resolve_rl_config, train_rl

    given = {k: v for k, v in locals().items() if k in RLConfig.model_fields and v is not None}
    given.setdefault("output", planner.with_name(planner.name + "-rl"))
    config = resolve_rl_config(given)
    with ProgressDisplay(f"planner rl ({config.algo})", config.iters) as display:
        result = train_rl(config, display)
    out.print(f"Planner: {result.output}")
    for price, before in result.before.items():
        out.print(f"expected reward at lam {price}: {before:.4f} -> {result.after[price]:.4f}")


class ProgressDisplay:
    """A bar with the latest training numbers; validation and expected-reward lines printed as they come.

    The bar appears with the first report, once the data and settings have been checked, so a refusal
    is the only line printed.
    """

    def __init__(self, title: str, iters: int):
        self.progress = Progress(TextColumn(f"[bold]{title}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=err)
        self.task = self.progress.add_task(title, total=iters, status="")
        self.started = False

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            self.progress.__exit__(*exc)

    def on_report(self, report: dict[str, Any]) -> None:
        if not self.started:
            self.progress.__enter__()
            self.started = True
        it = report["iteration"]
        if "val_loss" in report:
            worker = f", worker {report['val_worker_accuracy']:.3f}" if "val_worker_accuracy" in report else ""
            err.print(f"step {it}: val loss {report['val_loss']:.3f}, types {report['val_type_accuracy']:.3f}, edge "
                      f"F1 {report['val_edge_f1']:.3f}, exact {report['val_plan_match']:.3f}{worker}"
                      + (" (best)" if report.get("best") else ""))
        elif "expected_reward" in report:
            rewards = ", ".join(f"lam {k}: {v:.4f}" for k, v in report["expected_reward"].items())
            err.print(f"step {it}: expected reward {rewards}")
        if "loss" in report and "plan_loss" in report:
            status = f"loss {report['loss']:.3f} (plan {report['plan_loss']:.3f}, edges {report['edge_loss']:.3f}, " \
                     f"workers {report['worker_loss']:.3f})"
            self.progress.update(self.task, completed=it, status=status)
        elif "reward" in report:
            self.progress.update(self.task, completed=it, status=f"reward {report['reward']:.4f}")


# ---- punie plan --------------------------------------------------------------------------------
def plan(
    instruction: Annotated[str, typer.Argument(help="What to do, in plain words.")],
    *,
    planner: Annotated[Path, typer.Option(help="A planner directory ('punie planner train' or 'rl').")],
    workers: Annotated[Path | None, typer.Option(help="workers.json: choose a worker per subtask.")] = None,
    lam: Annotated[float, typer.Option(help="Price of cost when choosing workers.")] = 0.0,
    mu: Annotated[float, typer.Option(help="Price of latency when choosing workers.")] = 0.0,
    execute: Annotated[bool, typer.Option(help="Run the plan: each subtask through the agent with its worker "
                                               "(needs --workers and --workspace).")] = False,
    workspace: Annotated[Path | None, typer.Option(help="The directory the agent's tools work in (--execute).")] = None,
    max_steps: Annotated[int, typer.Option(help="Most assistant turns per subtask (--execute).")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per assistant turn (--execute).")] = 256,
    sandbox: Annotated[bool, typer.Option(help="Run commands in the OS sandbox (--execute).")] = True,
) -> None:
    """Plan INSTRUCTION as a DAG of subtasks and print it as a tree, with a worker per subtask."""
    from punie.errors import ConfigError
    from punie.planner.model import load_planner
    from punie.planner.workers import read_workers

    if execute and (workers is None or workspace is None):
        raise ConfigError("--execute needs --workers (who runs each subtask) and --workspace (where).")
    learned = load_planner(planner)
    workflow = learned.plan(instruction)
    worker_set = read_workers(workers) if workers else None
    assignment = learned.assign(workflow, worker_set, lam, mu) if worker_set else {}
    out.print(plan_tree(workflow, assignment))
    if execute and worker_set is not None and workspace is not None:
        _execute(workflow, assignment, worker_set, workspace, max_steps, max_tokens, sandbox)


def plan_tree(workflow: Any, assignment: dict[str, str]) -> Tree:
    """The DAG from its first steps down; a subtask with several dependencies is drawn in full under the
    first and named under the others ("see above")."""
    from punie.planner.execute import dependents

    roots, children = dependents(workflow)
    by_id = {s.id: s for s in workflow.subtasks}
    tree = Tree(f"[bold]{workflow.instruction}[/]")
    drawn: set[str] = set()

    def add(parent: Tree, node: str) -> None:
        subtask = by_id[node]
        worker = f"  [cyan]-> {assignment[node]}[/]" if node in assignment else ""
        if node in drawn:
            parent.add(f"{node} (see above)", style="dim")
            return
        drawn.add(node)
        branch = parent.add(f"[bold]{node}[/] {subtask.type}: {subtask.description}{worker}")
        for child in children[node]:
            add(branch, child)

    for root in roots:
        add(tree, root)
    return tree


def _execute(workflow: Any, assignment: dict[str, str], workers: Any, workspace: Path, max_steps: int,
             max_tokens: int, sandbox: bool) -> None:
    from punie.errors import ConfigError
    from punie.planner.execute import WorkerEngines, execute_plan
    from punie.traces.sandbox import UNAVAILABLE
    from punie.traces.store import TraceStore
    from punie.traces.tools import Workspace, make_tools

    ws = Workspace(workspace, sandbox="auto" if sandbox else "none")
    if ws.sandbox_level is None:
        raise ConfigError(UNAVAILABLE)
    engines = WorkerEngines(max_tokens=max_tokens)
    with TraceStore() as store:
        try:
            with err.status("Running the plan ..."):
                results = execute_plan(workflow, assignment, workers, tools=make_tools(ws), engines=engines,
                                       store=store, max_steps=max_steps,
                                       on_step=lambda s: err.print(f"{s.subtask} [cyan]{s.worker}[/]: {s.outcome}"))
        finally:
            engines.close()
    for step in results:
        answer = (step.answer or "").strip().replace("\n", " ")
        out.print(f"{step.subtask} ({step.worker}) {step.outcome}, trace {step.trace_id}: {answer[:200]}",
                  markup=False)
