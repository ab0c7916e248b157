"""``punie serve``: start, list, stop and follow managed mlx_lm.server processes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from punie.cli.console import err, out

app = typer.Typer(help="Run mlx_lm.server in the background and keep track of it.", no_args_is_help=True)

ModelOpt = Annotated[str | None, typer.Option(help="Model: 'default', a directory, a cached name or a repo id.")]
AdapterOpt = Annotated[Path | None, typer.Option(help="A LoRA adapter directory (adapter_config.json inside).")]
PortOpt = Annotated[str, typer.Option(help="Port number, or 'auto' for a free one.")]
HostOpt = Annotated[str, typer.Option(help="Address to bind. Anything but loopback exposes an unauthenticated API.")]
NameOpt = Annotated[str | None, typer.Option(help="Name for the server (default: from the model).")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for the model to load and answer.")]
GraceOpt = Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL.")]


def _options(model, adapter, port, host, name, timeout):  # type: ignore[no-untyped-def]
    from punie.serve.manager import ServeOptions, is_loopback

    if not is_loopback(host):
        err.print(f"[yellow]Warning:[/] binding {host}: mlx_lm.server has no authentication; anyone who can reach "
                  "this address can use the model.")
    return ServeOptions(model=model, adapter=adapter, port=port, host=host, name=name, timeout=timeout)


@app.command("start")
def start(
    *,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    port: PortOpt = "auto",
    host: HostOpt = "127.0.0.1",
    name: NameOpt = None,
    timeout: TimeoutOpt = 180.0,
) -> None:
    """Start mlx_lm.server in the background and wait until it answers."""
    from punie.serve.manager import start_server

    options = _options(model, adapter, port, host, name, timeout)
    with err.status("Starting mlx_lm.server ..."):
        record = start_server(options).record
    out.print(f"Started '{record.name}' at {record.url} (pid {record.pid})")
    out.print(f"  model   {record.model}" + (f"\n  adapter {record.adapter}" if record.adapter else ""))
    out.print(f"  log     {record.log}")
    out.print(f"Stop it with: punie serve stop {record.name}")


@app.command("run")
def run(
    *,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    port: PortOpt = "auto",
    host: HostOpt = "127.0.0.1",
    name: NameOpt = None,
    timeout: TimeoutOpt = 180.0,
) -> None:
    """Run mlx_lm.server in the foreground, showing its log; Ctrl-C stops it."""
    from punie.errors import ServeError
    from punie.serve import ServerProcess
    from punie.serve.manager import follow_log

    options = _options(model, adapter, port, host, name, timeout)
    server = ServerProcess(options.model, options.adapter, port=options.port, host=options.host,
                           name=options.name, timeout=options.timeout)
    # Ctrl-C at any moment (during the start, or before the log is followed) is a clean stop, exit 0.
    try:
        with err.status("Starting mlx_lm.server ..."):
            server.start()
        with server:
            err.print(f"Serving '{server.name}' at {server.url} (pid {server.pid}). Press Ctrl-C to stop.")
            for line in follow_log(server.log, until_gone=server.record, offset=0):
                print(line, flush=True)
            code = server.exit_code(wait=5.0)
    except KeyboardInterrupt:
        err.print(f"Stopping '{server.name}' ...")
        server.stop()  # already stopped when the signal came inside the block; safe twice
        return
    raise ServeError(f"server '{server.name}' (pid {server.pid}) exited on its own (status {code}); "
                     "see its log above.")


@app.command("status")
def status() -> None:
    """List managed servers with live health; entries of servers that are gone are removed."""
    from punie.serve.manager import statuses

    found = statuses()
    if not found:
        out.print("No servers. Start one with 'punie serve start'.")
        return
    # One line of short fields per server (aligned), its model and adapter on the next: the values users
    # copy (name, pid, URL, paths) are never cut, and it reads in an 80-column terminal.
    name_w = max(len(s.record.name) for s in found)
    pid_w = max(len(str(s.record.pid or "-")) for s in found)
    url_w = max(len(s.record.url) for s in found)
    for s in found:
        r = s.record
        health = s.health + (" (entry removed)" if s.removed else f", up {_duration(s.uptime)}")
        style = "green" if s.health == "ok" else "red" if s.removed else "yellow"
        out.print(f" [bold]{escape(r.name.ljust(name_w))}[/]  pid {str(r.pid or '-').ljust(pid_w)}  "
                  f"{r.url.ljust(url_w)}  [{style}]{escape(health)}[/]")
        indent = " " * (name_w + 3)
        # soft_wrap: a path longer than the terminal stays one line for the terminal to wrap (and copy)
        out.print(f"{indent}model {_short_model(r.model)}", markup=False, style="dim", soft_wrap=True)
        if r.adapter:
            out.print(f"{indent}adapter {r.adapter}", markup=False, style="dim", soft_wrap=True)


@app.command("stop")
def stop(
    name: Annotated[str | None, typer.Argument(help="The server's name (see 'punie serve status').")] = None,
    *,
    all_: Annotated[bool, typer.Option("--all", help="Stop every managed server.")] = False,
    grace: GraceOpt = 10.0,
) -> None:
    """Stop a server: SIGTERM, then SIGKILL after the grace period."""
    from punie.errors import ConfigError, ServeError
    from punie.serve.manager import stop_all, stop_server

    if all_ == (name is not None):
        raise ConfigError("give either a server NAME or --all.")
    results = [stop_server(name, grace=grace)] if name is not None else stop_all(grace=grace)
    if not results:
        out.print("No servers to stop.")
    for r in results:
        if r.error is not None:
            out.print(f"Failed: {r.error}")
        elif r.was_running:
            out.print(f"Stopped '{r.record.name}' (pid {r.record.pid}).")
        else:
            out.print(f"Removed the entry of '{r.record.name}': its process (pid {r.record.pid}) was already gone.")
    failures = [r for r in results if r.error is not None]
    if failures:
        raise ServeError(f"{len(failures)} of {len(results)} servers could not be stopped (see above).")


@app.command("logs")
def logs(
    name: Annotated[str, typer.Argument(help="The server's name.")],
    *,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines while it runs.")] = False,
    lines: Annotated[int, typer.Option(help="Print only the last N lines (0: all).")] = 0,
) -> None:
    """Print a server's log (kept under PUNIE_HOME/logs, also after it stopped)."""
    from punie.serve import state
    from punie.serve.manager import follow_log, log_file

    path = log_file(name)
    data = path.read_bytes()
    shown = data.decode(errors="replace").splitlines()
    for line in shown[-lines:] if lines > 0 else shown:
        print(line)
    record = state.find(name)
    if not follow or record is None:
        return
    try:
        for line in follow_log(path, until_gone=record, offset=len(data)):
            print(line, flush=True)
    except KeyboardInterrupt:
        pass


def _short_model(model: str) -> str:
    """A model directory's name; a repo id as is."""
    return Path(model).name if Path(model).is_absolute() else model


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"

