"""``ServerProcess``: an mlx_lm.server that lives exactly as long as a ``with`` block.

    with ServerProcess(model="default", adapter="runs/x/adapter") as server:
        reply = server.chat([{"role": "user", "content": "hi"}], tools=tools)

Leaving the block (return, exception, KeyboardInterrupt) stops the server. If
this process dies without leaving the block (SIGKILL, a crash in native code),
the server notices that its parent is gone and exits by itself (see
``punie.serve.child``). While it runs it is listed by ``punie serve status``.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from punie.errors import ServeError
from punie.serve import client, launch, manager, procinfo, state
from punie.serve.manager import ServeOptions, Started
from punie.serve.state import ServerRecord


class ServerProcess:
    """A managed mlx_lm.server owned by this process; see the module docstring."""

    def __init__(self, model: str | None = None, adapter: Path | str | None = None, *, port: int | str = "auto",
                 host: str = manager.DEFAULT_HOST, name: str | None = None, timeout: float = 180.0,
                 grace: float = 10.0, extra_args: tuple[str, ...] = ()):
        self.options = ServeOptions(model=model, adapter=adapter, port=port, host=host, name=name,
                                    timeout=timeout, extra_args=tuple(extra_args))
        self.grace = grace
        self._started: Started | None = None
        self._record: ServerRecord | None = None  # kept after stop() so .log and .name stay readable

    def __enter__(self) -> ServerProcess:
        return self if self._started is not None else self.start()  # start() may have been called already

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> ServerProcess:
        if self._started is not None:
            raise ServeError(f"server '{self.name}' is already started.")
        self._started = manager.start_server(self.options, owned=True)
        self._record = self._started.record
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``grace``) and remove its entry; safe to call twice."""
        started, self._started = self._started, None
        if started is None:
            return
        record, process = started.record, started.process
        try:
            if process.poll() is None:
                launch.write_note(record.log, f"punie: stopping pid {record.pid} (end of ServerProcess block).")
                procinfo.terminate(process.pid, record.pid_start, self.grace)
            process.wait()
        except KeyboardInterrupt:  # a second Ctrl-C while stopping: do not wait politely
            procinfo.send(process.pid, signal.SIGKILL)
            process.wait()
            raise
        finally:
            state.remove(record)

    @property
    def record(self) -> ServerRecord:
        """The server's state record (still readable after the server stopped)."""
        if self._record is None:
            raise ServeError("the server was never started: use 'with ServerProcess(...) as server:' or start().")
        return self._record

    @property
    def name(self) -> str:
        return self._record.name if self._record else (self.options.name or "?")

    @property
    def pid(self) -> int:
        """The server's pid (still readable after it stopped, to check that it is gone)."""
        pid = self.record.pid
        assert pid is not None  # a started server always has one
        return pid

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (the OpenAI-compatible API is under ``/v1``)."""
        return self.record.url

    @property
    def log(self) -> Path:
        return Path(self.record.log)

    def exit_code(self, wait: float = 0.0) -> int | None:
        """The server process's exit status (negative: killed by that signal), None while it runs.

        ``wait`` gives a process that was just seen gone time to be reaped: its pid can
        vanish from the process table a moment before ``waitpid`` reports its status.
        """
        if self._started is None:
            return None
        if wait <= 0:
            return self._started.process.poll()
        try:
            return self._started.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None

    def alive(self) -> bool:
        return self._started is not None and self._started.process.poll() is None

    def health(self) -> str:
        return client.health(self.url)

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
             max_tokens: int = 256, temperature: float = 0.0, timeout: float = 300.0,
             **extra: Any) -> dict[str, Any]:
        """One OpenAI chat completion; returns the response JSON.

        Raises the typed errors of :mod:`punie.serve.client`; when the server
        process has died, an EndpointUnreachable that says how and shows its log.
        """
        record = self.record
        if self._started is None:
            raise ServeError(f"server '{record.name}' was stopped; chat() only works inside its 'with' block.")
        try:
            return client.chat_completion(record.url, messages, tools, max_tokens=max_tokens,
                                          temperature=temperature, timeout=timeout, **extra)
        except client.EndpointError as exc:
            code = self._started.process.poll()
            if code is None:
                raise
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise client.EndpointUnreachable(
                f"server '{record.name}' (pid {record.pid}) {how} and no longer answers at {record.url}. "
                f"Last lines of its log {record.log}:\n{launch.tail(record.log)}", url=record.url) from exc
