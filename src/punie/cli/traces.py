"""``punie traces``: list, show, mark and export recorded traces; record through a proxy; make demo data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from punie.cli.console import err, out

app = typer.Typer(help="Recorded agent traces: inspect, export as training data, record via a proxy.",
                  no_args_is_help=True)

_ROLE_STYLE = {"system": "magenta", "user": "bold cyan", "assistant": "bold green", "tool": "yellow"}


@app.command("list")
def list_traces(
    *,
    limit: Annotated[int, typer.Option(help="Show at most this many (newest first).")] = 30,
    source: Annotated[str | None, typer.Option(help="Only this source: agent, proxy, demo or eval.")] = None,
    category: Annotated[str | None, typer.Option(help="Only this task category.")] = None,
) -> None:
    """Show the newest traces in the store."""
    from punie.traces.store import TraceStore

    with TraceStore() as store:
        traces = list(store.iter_traces(source=source, category=category, limit=limit, newest_first=True))
        total = store.count()
    if not traces:
        out.print("No traces yet. Record some with 'punie agent run', 'punie traces proxy' or "
                  "'punie traces demo-data'.")
        return
    # Short columns, readable in an 80-column terminal. The model needs room beside the task, so
    # narrow terminals leave it out ('punie traces show ID' has it).
    with_model = out.width >= 110
    headers = ["id", "created", "source", "category", "outcome", "turns", "calls", *(["model"] if with_model else [])]
    rows = []
    for t in traces:
        turns = sum(m["role"] == "assistant" for m in t.messages)
        model = Path(t.model).name if t.model and "/" in t.model else (t.model or "")
        # MM-DD HH:MM: the year rarely matters in a list of recent runs
        rows.append([str(t.id), (t.created_at or "")[5:16].replace("T", " "), t.source, t.category or "", t.outcome,
                     str(turns), str(len(t.tool_calls)), *([_cut(model, 24)] if with_model else []), t.task or ""])
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(headers)]
    # Borderless, two spaces between columns; the task gets the width left over and is cut with an ellipsis.
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False)
    for name in headers:
        table.add_column(name, no_wrap=True)
    table.add_column("task", no_wrap=True, overflow="ellipsis",
                     max_width=max(12, out.width - sum(widths) - 2 * len(widths)))
    for row in rows:
        table.add_row(*row)
    out.print(table)
    out.print(f"{len(traces)} of {total} traces shown.")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("show")
def show(
    trace_id: Annotated[int, typer.Argument(help="The trace id (see 'punie traces list').")],
    *,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored trace as JSON.")] = False,
) -> None:
    """Print one trace as a conversation."""
    from dataclasses import asdict

    from punie.traces.store import TraceStore

    with TraceStore() as store:
        trace = store.get(trace_id)
    if as_json:
        out.print_json(json.dumps(asdict(trace), ensure_ascii=False))
        return
    duration = f"{trace.duration_s:.2f} s" if trace.duration_s is not None else "?"
    out.print(f"[bold]Trace {trace.id}[/] ({trace.source}, {trace.created_at}) outcome [bold]{trace.outcome}[/], "
              f"{duration}, category {trace.category or '-'}")
    out.print(f"model {trace.model or '?'}" + (f", adapter {trace.adapter}" if trace.adapter else ""))
    out.print(f"tools: {', '.join(t.get('function', t).get('name', '?') for t in trace.tools) or 'none'}")
    for message in trace.messages:
        _print_message(message)
    if error := trace.meta.get("error"):
        out.print(f"[red]error:[/] {error}", markup=True)


def _print_message(message: dict[str, Any]) -> None:
    role = message.get("role", "?")
    out.print(f"[{_ROLE_STYLE.get(role, 'bold')}]{role}[/]")
    if message.get("content"):
        out.print(message["content"], markup=False)
    for call in message.get("tool_calls") or []:
        fn = call.get("function", call)
        out.print(f"-> {fn.get('name')}({json.dumps(fn.get('arguments'), ensure_ascii=False)})", markup=False)


@app.command("mark")
def mark(
    trace_id: Annotated[int, typer.Argument(help="The trace id.")],
    *,
    outcome: Annotated[str, typer.Option(help="passed (it did the job) or failed (also: finished, max_steps, "
                                              "error, incomplete).")],
) -> None:
    """Record your verdict on a trace (export --only-passed keeps 'passed')."""
    from punie.traces.store import TraceStore

    with TraceStore() as store:
        store.set_outcome(trace_id, outcome)
    out.print(f"Trace {trace_id}: {outcome}")


@app.command("export")
def export(
    *,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for train/valid/test.jsonl.")],
    split: Annotated[str, typer.Option(help="train,valid,test fractions.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 42,
    only_passed: Annotated[bool, typer.Option(help="Only traces that passed their checks (outcome 'passed', from "
                                                   "'punie eval --tasks --record' or 'punie traces mark'); "
                                                   "'finished' only means the agent stopped.")] = False,
    only_successful: Annotated[bool, typer.Option(help="Old name of --only-passed, kept as an alias: it now keeps "
                                                       "'passed' traces, not every one that ended.")] = False,
    source: Annotated[str | None, typer.Option(help="Only this source: agent, proxy, demo or eval.")] = None,
    category: Annotated[str | None, typer.Option(help="Only this task category.")] = None,
    model: Annotated[str | None, typer.Option(help="Model whose chat template the tool calls are checked "
                                                   "against.")] = None,
    check: Annotated[bool, typer.Option(help="Check every tool call round-trips through the model's "
                                             "template.")] = True,
) -> None:
    """Write traces as mlx-lm 'tools' data, one example per assistant turn, split by category."""
    from punie.models.loading import load_tokenizer
    from punie.traces.export import export_traces, parse_split
    from punie.traces.store import TraceStore

    fractions = parse_split(split)
    tokenizer = load_tokenizer(model) if check else None
    with TraceStore() as store:
        report = export_traces(store, out_dir, split=fractions, seed=seed, only_passed=only_passed or only_successful,
                               tokenizer=tokenizer, source=source, category=category)
    _print_export(report)


def _print_export(report: Any) -> None:
    table = Table("split", "traces", "examples", "file")
    for name, count in report.examples.items():
        table.add_row(name, str(report.traces[name]), str(count), str(report.files.get(name, "(empty, not written)")))
    out.print(table)
    if report.skipped_not_passed:
        out.print(f"{report.skipped_not_passed} traces skipped (outcome not 'passed').")
    for rejected in report.rejected:
        err.print(f"[yellow]not exported:[/] trace {rejected.trace_id}: {rejected.reason}")
    if not report.checked_with_tokenizer:
        err.print("[yellow]Tool calls were not checked against a chat template (--no-check).[/]")


@app.command("proxy")
def proxy(
    *,
    upstream: Annotated[str, typer.Option(help="The OpenAI-compatible server to forward to, e.g. "
                                               "http://127.0.0.1:8080.")],
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1 only).")] = 8900,
    category: Annotated[str | None, typer.Option(help="Category to store with every trace.")] = None,
) -> None:
    """Forward requests to UPSTREAM and record every chat completion as a trace (Ctrl-C stops)."""
    from punie.traces.proxy import RecordingProxy
    from punie.traces.store import TraceStore

    with TraceStore() as store:
        server = RecordingProxy(upstream, store, port=port, category=category, log=err.file)
        out.print(f"Recording proxy on {server.url}/v1 -> {upstream}; traces go to {store.path}. Ctrl-C stops.")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            out.print("Stopped.")
        finally:
            server.close()


@app.command("demo-data")
def demo_data(
    *,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for train/valid/test.jsonl and "
                                                        "suite.jsonl.")] = Path("data/agent"),
    seed: Annotated[int, typer.Option(help="Seed for task sampling and the split.")] = 42,
    model: Annotated[str | None, typer.Option(help="Model whose chat template the data is checked "
                                                   "against.")] = None,
    workspace: Annotated[Path | None, typer.Option(help="The sample workspace (default: punie's "
                                                        "data/workspace).")] = None,
) -> None:
    """Regenerate the demo traces (scripted policy, real tools), record them and export them."""
    from punie.models.loading import load_tokenizer
    from punie.traces import demo_data as generator
    from punie.traces.store import TraceStore

    tokenizer = load_tokenizer(model)
    with TraceStore() as store, err.status("Recording demo traces ..."):
        data = generator.generate(out_dir, seed=seed, store=store, tokenizer=tokenizer, workspace=workspace)
    out.print(f"Recorded {data.traces} demo traces (source 'demo') in the trace store.")
    _print_export(data.export)
    for name, cases in data.suites.items():
        if name in data.task_suites:
            out.print(f"Task suite: {cases} held-out agent tasks in {data.files[name]} (workspaces under "
                      f"{data.tasks_dir})")
        elif name == "improve":
            out.print(f"Training suite of punie improve: {cases} new requests in {data.files[name]}")
        else:
            out.print(f"Eval suite: {cases} held-out cases in {data.files[name]}")
