"""Start, stop and list managed mlx_lm.server processes (the core of ``punie serve``)."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from punie.errors import ConfigError, ServeError
from punie.models.loading import check_adapter_dir
from punie.serve import client, launch, procinfo, state
from punie.serve.state import ServerRecord

DEFAULT_HOST = "127.0.0.1"
AUTO_PORT_ATTEMPTS = 3  # an auto-chosen port can be taken by another program before the server binds it


@dataclass(frozen=True)
class ServeOptions:
    """What to serve and where; the defaults here are the CLI's and the library's."""

    model: str | None = None  # 'default'/None, a model directory, a cached name or a repo id
    adapter: Path | str | None = None
    port: int | str = "auto"
    host: str = DEFAULT_HOST
    name: str | None = None  # default: 'default' or the model directory's name, made unique
    timeout: float = 180.0  # seconds to wait for the model to load and answer
    extra_args: tuple[str, ...] = field(default_factory=tuple)  # passed to mlx_lm.server as is


@dataclass(frozen=True)
class Started:
    record: ServerRecord
    process: subprocess.Popen


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_port(port: int | str) -> int | None:
    """None for 'auto', else the port number; ConfigError otherwise."""
    if isinstance(port, str) and port.strip().lower() == "auto":
        return None
    try:
        number = int(port)
    except (TypeError, ValueError):
        number = -1
    if not 1 <= number <= 65535:
        raise ConfigError(f"--port must be 'auto' or a number from 1 to 65535, got {port!r}.")
    return number


def check_adapter(adapter: Path | str | None) -> str | None:
    """The adapter directory as an absolute path; ModelError before anything starts if it is not one."""
    if adapter is None:
        return None
    check_adapter_dir(adapter)
    return str(Path(adapter).expanduser().resolve())


def start_server(options: ServeOptions, *, owned: bool = False) -> Started:
    """Start mlx_lm.server and return once it answers; on failure nothing is left running.

    ``owned`` ties the server's life to this process (it exits when this process is gone).
    """
    from punie.models.registry import resolve_model

    if options.host == "localhost":  # one address family for the port check, the server and the URL
        options = replace(options, host="127.0.0.1")
    model = resolve_model(options.model)
    adapter = check_adapter(options.adapter)
    requested_port = parse_port(options.port)
    if options.name is not None:
        state.check_name(options.name)
    for attempt in range(1, AUTO_PORT_ATTEMPTS + 1):
        record = _claim(options, model, adapter, requested_port, owned)
        try:
            return Started(*_launch(record, options))
        except launch.StartFailure as exc:
            if exc.port_taken and requested_port is None and attempt < AUTO_PORT_ATTEMPTS:
                continue  # another program took the auto port first: pick another
            raise ServeError(f"mlx_lm.server '{record.name}' did not start: {exc.cause}.\n"
                             f"Last lines of its log {record.log}:\n{launch.tail(record.log)}") from None
    raise AssertionError("unreachable")


def _launch(record: ServerRecord, options: ServeOptions) -> tuple[ServerRecord, subprocess.Popen]:
    process: subprocess.Popen | None = None
    try:
        process = launch.spawn(record, options.extra_args)
        info = procinfo.read(process.pid)
        record = replace(record, pid=process.pid, pid_start=info.start if info else None)
        state.save(record)
        launch.wait_ready(process, record, options.timeout)
        record = replace(record, status=state.RUNNING)
        state.save(record)
        return record, process
    except BaseException:  # a failed start, Ctrl-C or SIGTERM while waiting: leave nothing behind
        if process is not None:
            procinfo.terminate(process.pid, None, grace=3.0)
            process.wait()
            launch.write_note(record.log, "punie: start failed; server stopped.")
        state.remove(record)
        raise


def _claim(options: ServeOptions, model: str, adapter: str | None, port: int | None, owned: bool) -> ServerRecord:
    """Reserve a name and a port in the state directory (see punie.serve.state for the locking)."""
    with state.lock():
        live = [r for r in state.all_records() if _alive_or_clean(r)]
        taken_names = {r.name for r in live}
        taken_ports = {r.port: r.name for r in live}
        if options.name is not None and options.name in taken_names:
            other = next(r for r in live if r.name == options.name)
            where = f"pid {other.pid}, {other.url}" if other.pid else f"starting, {other.url}"
            raise ServeError(f"a server named '{options.name}' is already running ({where}); "
                             f"stop it with 'punie serve stop {options.name}' or choose another --name.")
        base = "default" if options.model in (None, "default") else _name_from_model(model)
        name = options.name or _unique_name(base, taken_names)
        if port is None:
            port = _auto_port(options.host, set(taken_ports))
        elif port in taken_ports:
            raise ServeError(f"port {port} is used by punie server '{taken_ports[port]}'; "
                             "choose another --port or use --port auto.")
        elif not launch.port_is_free(options.host, port):
            raise ServeError(f"port {port} on {options.host} is already in use by another program; "
                             "choose another --port or use --port auto.")
        record = state.with_launcher(ServerRecord(
            name=name, host=options.host, port=port, model=model, adapter=adapter,
            log=str(state.log_path(name)), owner_pid=os.getpid() if owned else None))
        if not state.create_exclusive(record):
            raise ServeError(f"{record.path} appeared while punie was claiming it; try again.")
        return record


def _alive_or_clean(record: ServerRecord) -> bool:
    """Called under the state lock: drop entries whose server is gone."""
    if state.liveness(record) == "alive":
        return True
    record.path.unlink(missing_ok=True)
    return False


def _name_from_model(model: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name).strip("-._") or "server"
    return base[:48]


def _unique_name(base: str, taken: set[str]) -> str:
    if base not in taken and not state.state_path(base).exists():
        return base
    n = 2
    while f"{base}-{n}" in taken or state.state_path(f"{base}-{n}").exists():
        n += 1
    return f"{base}-{n}"


def _auto_port(host: str, taken: set[int]) -> int:
    for _ in range(20):
        port = launch.free_port(host)
        if port not in taken:
            return port
    raise ServeError(f"could not find a free port on {host}; pass --port N.")


@dataclass(frozen=True)
class Stopped:
    record: ServerRecord
    was_running: bool  # False: the entry was stale (process already gone, or its pid reused) and was removed
    error: ServeError | None = None


def stop_server(name: str, *, grace: float = 10.0) -> Stopped:
    """SIGTERM the named server, SIGKILL after ``grace`` seconds; remove its entry once it is gone."""
    record = state.find(name)
    if record is None:
        known = ", ".join(r.name for r in state.all_records()) or "none"
        raise ServeError(f"no server named '{name}' (running: {known}). See 'punie serve status'.")
    return stop_record(record, grace=grace)


def stop_record(record: ServerRecord, *, grace: float = 10.0) -> Stopped:
    live = state.liveness(record)
    if record.pid is None and live == "alive":
        raise ServeError(f"server '{record.name}' is still starting (punie pid {record.launcher_pid}); "
                         "try again in a moment.")
    if record.pid is not None and live == "alive":
        launch.write_note(record.log, f"punie: stopping pid {record.pid} (SIGTERM, SIGKILL after {grace:g} s).")
        if not procinfo.terminate(record.pid, record.pid_start, grace):
            raise ServeError(f"server '{record.name}' (pid {record.pid}) is still running after SIGKILL; "
                             f"its entry {record.path} is kept.")
    state.remove(record)
    return Stopped(record, was_running=live == "alive")


def stop_all(*, grace: float = 10.0) -> list[Stopped]:
    """Stop every managed server; one failure does not keep the others running."""
    results = []
    for record in state.all_records():
        try:
            results.append(stop_record(record, grace=grace))
        except ServeError as exc:
            results.append(Stopped(record, was_running=True, error=exc))
    return results


@dataclass(frozen=True)
class ServerStatus:
    record: ServerRecord
    health: str  # ok, unavailable, no answer, starting, dead, pid reused, start crashed
    removed: bool  # the entry was stale and has been removed

    @property
    def uptime(self) -> float:
        return time.time() - self.record.created_at


_STALE_LABELS = {"dead": "dead", "pid-reused": "pid reused", "launcher-gone": "start crashed"}


def statuses(*, clean: bool = True) -> list[ServerStatus]:
    """Every managed server with its live health; stale entries are reported and (if ``clean``) removed."""
    found = []
    for record in state.all_records():
        live = state.liveness(record)
        if live != "alive" and clean:
            live = state.remove_if_stale(record)  # re-checked under the lock
        if live != "alive":
            found.append(ServerStatus(record, _STALE_LABELS[live], removed=clean))
            continue
        health = client.health(record.url, timeout=2.0)
        if record.status == state.STARTING and health != "ok":
            health = "starting"
        found.append(ServerStatus(record, health, removed=False))
    return found


def log_file(name: str) -> Path:
    """The log of the named server (also after it stopped)."""
    path = state.log_path(state.check_name(name))
    if not path.exists():
        raise ServeError(f"no log for a server named '{name}' ({path} does not exist). See 'punie serve status'.")
    return path


def follow_log(path: Path, *, until_gone: ServerRecord | None = None, offset: int | None = None,
               poll: float = 0.25) -> Iterator[str]:
    """Yield lines appended to ``path`` after byte ``offset`` (default: its end), like ``tail -f``.

    Stops once ``until_gone``'s process has exited and its last lines were read.
    """
    with open(path, "rb") as fh:
        if offset is None:
            fh.seek(0, os.SEEK_END)
        else:
            fh.seek(offset)
        pending = b""
        while True:
            chunk = fh.read()
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                yield from (line.decode(errors="replace") for line in lines)
                continue
            if until_gone is not None and until_gone.pid is not None and \
                    not procinfo.is_running(until_gone.pid, until_gone.pid_start):
                # It may have written its last lines between our read and its exit.
                yield from (pending + fh.read()).decode(errors="replace").splitlines()
                return
            time.sleep(poll)
