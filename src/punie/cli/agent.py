"""``punie agent run``: the tool-using agent on a workspace, recorded as a trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from punie.cli.console import err, out

app = typer.Typer(help="Run the tool-using agent (read_file, write_file, list_dir, search, run_command).",
                  no_args_is_help=True)


@app.command("run")
def run(
    task: Annotated[str, typer.Argument(help="What the agent should do.")],
    *,
    workspace: Annotated[Path, typer.Option(help="The directory the tools may read, write and run in.")],
    model: Annotated[str | None, typer.Option(help="Model: 'default', a directory, or a repo id.")] = None,
    adapter: Annotated[Path | None, typer.Option(help="A LoRA adapter directory.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Use an OpenAI-compatible server (e.g. 'punie serve') "
                                                      "instead of loading the model.")] = None,
    max_steps: Annotated[int, typer.Option(help="Most assistant turns before stopping.")] = 8,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per assistant turn.")] = 256,
    category: Annotated[str | None, typer.Option(help="Task category to store with the trace.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds run_command may take.")] = 10.0,
    record: Annotated[bool, typer.Option(help="Store the run in the trace store.")] = True,
    sandbox: Annotated[bool, typer.Option(help="Run commands in the OS sandbox (bubblewrap / sandbox-exec). "
                                               "--no-sandbox runs them unconfined, as your user.")] = True,
    check_answer_contains: Annotated[list[str] | None, typer.Option(
        help="Judge the run: the final answer must contain this text (case-insensitive; repeat for several). "
             "With a check the trace's outcome is passed or failed; without, only finished.")] = None,
    check_answer_matches: Annotated[list[str] | None, typer.Option(
        help="Judge the run: this regular expression must match the final answer (repeat for several).")] = None,
) -> None:
    """Let the model work on TASK with real tools confined to --workspace."""
    from punie.errors import ConfigError
    from punie.traces.agent import ChatCompletionsEngine, local_engine, run_agent
    from punie.traces.sandbox import UNAVAILABLE
    from punie.traces.store import TraceStore
    from punie.traces.tools import Workspace, make_tools

    ws = Workspace(workspace, timeout_s=timeout, sandbox="auto" if sandbox else "none")
    if ws.sandbox_level is None:  # refuse before loading anything, rather than fail every command
        raise ConfigError(UNAVAILABLE)
    if ws.sandbox_level == "none":
        err.print("[yellow]Warning:[/] --no-sandbox: run_command runs programs unconfined, as your user.")
    tools = make_tools(ws)
    judge = _judge(ws.root, check_answer_contains or [], check_answer_matches or [])  # bad checks fail first
    if endpoint:
        engine: Any = ChatCompletionsEngine.at(endpoint, model=model, adapter=str(adapter) if adapter else None,
                                               max_tokens=max_tokens)
    else:
        with err.status("Loading the model ..."):
            engine = local_engine(model, adapter, max_tokens=max_tokens)
    store = TraceStore() if record else None
    try:
        result = run_agent(task, engine=engine, tools=tools, max_steps=max_steps, store=store, category=category,
                           on_message=_print_message, judge=judge)
    finally:
        if store is not None:
            store.close()
        if endpoint:
            engine.close()
    saved = f"; stored as trace {result.trace.id} ('punie traces show {result.trace.id}')" if record else ""
    out.print(f"[bold]{result.outcome}[/] after {result.steps} steps{saved}")
    for failed in result.trace.meta.get("failed_checks", []):
        out.print(f"[red]failed check[/] {failed['type']}: {failed['reason']}", highlight=False)


def _judge(root: Path, contains: list[str], matches: list[str]) -> Any:
    """The run's judge for the --check-... options (None without any)."""
    from punie.eval.tasks import Episode, check_from_dict, judge

    checks = [check_from_dict({"type": "answer_contains", "value": v}) for v in contains]
    checks += [check_from_dict({"type": "answer_matches", "pattern": p}) for p in matches]
    if not checks:
        return None
    return judge(checks, lambda result: Episode(answer=result.answer, trace=result.trace,
                                                parse_errors=list(result.errors), workspace=root, pristine=root))


def _print_message(message: dict[str, Any]) -> None:
    if message["role"] == "assistant":
        if message.get("content"):
            out.print("[bold green]assistant[/]")
            out.print(message["content"], markup=False)
        for call in message.get("tool_calls") or []:
            fn = call["function"]
            out.print(f"[bold green]->[/] {fn['name']}({json.dumps(fn['arguments'], ensure_ascii=False)})")
    else:
        text = message["content"]
        out.print("[yellow]tool[/]")
        out.print(text if len(text) < 1500 else text[:1500] + " ...", markup=False, style="dim")
