"""Spawning one mlx_lm.server and waiting until it can answer.

"Ready" means more than ``/health`` answering 200: mlx_lm.server binds its port
and reports healthy while its generation thread is still loading the model, and a
model that fails to load only flips ``/health`` to 503 later (the process stays
up). So readiness is: the child printed its listening mark (the port is bound by
*this* process), ``/health`` says ok, and a one-token chat completion came back
(the model and adapter are loaded and the chat template renders).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from punie import blas, paths
from punie.serve import client
from punie.serve.state import ServerRecord

LOG_TAIL_LINES = 25
PORT_TAKEN_TEXT = "Address already in use"
LISTENING_MARK = "punie-serve: listening"  # printed by punie.serve.child once its port is bound


class StartFailure(Exception):
    """The server did not become ready; ``cause`` says why in words."""

    def __init__(self, cause: str, *, port_taken: bool = False):
        super().__init__(cause)
        self.cause = cause
        self.port_taken = port_taken


def port_is_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound now, with the same SO_REUSEADDR that Python's HTTP server sets."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port the system considers free on ``host`` right now (another program may still take it first)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def command(record: ServerRecord, extra_args: tuple[str, ...] = ()) -> list[str]:
    owner = ["--owner-pid", str(record.owner_pid)] if record.owner_pid is not None else []
    adapter = ["--adapter-path", record.adapter] if record.adapter else []
    return [sys.executable, "-m", "punie.serve.child", *owner, "--model", record.model,
            "--host", record.host, "--port", str(record.port), *adapter, *extra_args]


def spawn(record: ServerRecord, extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start the server in its own session (it outlives a CLI ``start``; a signal to the group ends it)."""
    log = Path(record.log)
    if log.exists():
        os.replace(log, log.with_name(log.name + ".1"))  # keep the previous run's log for one more start
    env = blas.child_env()
    env["PYTHONUNBUFFERED"] = "1"
    with open(log, "wb") as log_fh:
        return subprocess.Popen(command(record, extra_args), stdin=subprocess.DEVNULL, stdout=log_fh,
                                stderr=subprocess.STDOUT, env=env, cwd=paths.punie_home(),
                                start_new_session=True, close_fds=True)


@dataclass
class _Warmup:
    """A one-token chat completion run in a thread (it blocks until the model is loaded)."""

    url: str
    timeout: float
    done: bool = False
    error: str | None = None

    def start(self) -> _Warmup:
        threading.Thread(target=self._run, name="punie-serve-warmup", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            client.chat_completion(self.url, [{"role": "user", "content": "hi"}], max_tokens=1, timeout=self.timeout)
        except Exception as exc:  # reported as the start failure's cause, never dropped
            self.error = str(exc)
        self.done = True


def wait_ready(proc: subprocess.Popen, record: ServerRecord, timeout: float) -> None:
    """Return once the server is ready; raise StartFailure if it dies, fails to load or times out."""
    deadline = time.monotonic() + timeout
    warmup: _Warmup | None = None
    progress = "the server has not bound its port yet"
    while True:
        code = proc.poll()
        text = read_log(record.log)
        if PORT_TAKEN_TEXT in text:
            raise StartFailure(f"port {record.port} on {record.host} is already in use by another program",
                               port_taken=True)
        if code is not None:
            raise StartFailure(f"the server process exited with status {code}: {diagnose(text, record)}")
        if LISTENING_MARK in text:
            state = client.health(record.url, timeout=2.0)
            progress = f"GET {record.url}/health: {state}" + ("; the model is loading" if warmup else "")
            if state == "unavailable":
                raise StartFailure(diagnose(read_log(record.log), record))  # /health 503: the model did not load
            if state == "ok" and warmup is None:
                warmup = _Warmup(record.url, max(deadline - time.monotonic(), 1.0)).start()
        if warmup is not None and warmup.done:
            if warmup.error is None:
                return
            if proc.poll() is None and client.health(record.url) == "ok":
                raise StartFailure(f"a test chat completion failed: {warmup.error}")
            continue  # the process died or turned unhealthy: the checks above name the cause
        if time.monotonic() >= deadline:
            raise StartFailure(f"it was not ready within {timeout:g} s ({progress}); a large model may need a "
                               "longer --timeout")
        time.sleep(0.1)


def read_log(path: str | Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(read_log(path).splitlines()[-lines:])


# Known failures, in the order they are checked: (texts in the error part of the log, cause).
_ADAPTER_CAUSE = (("load_adapters", "adapter_config", "adapters.safetensors", "adapter path"),
                  "the adapter {adapter} could not be loaded (trained for another base model, or damaged files?)")
_CAUSES = (
    ((PORT_TAKEN_TEXT,), "the port {port} on {host} is already in use"),
    (("RepositoryNotFound", "huggingface_hub"),
     "the model {model} is not a local directory and not a reachable Hugging Face repo"),
    (("config.json", "No such file"), "the model {model} could not be loaded (not a complete mlx-lm model directory?)"),
    (("safetensors", "weights"), "the model {model} could not be loaded (missing or damaged weights?)"),
    (("Error",), "the model {model} could not be loaded"),
)


def diagnose(log_text: str, record: ServerRecord) -> str:
    """The likely cause of a failed start, from the error part of the server's log."""
    start = log_text.find("Traceback")
    errors = log_text[start:] if start >= 0 else log_text
    causes = ((_ADAPTER_CAUSE,) if record.adapter else ()) + _CAUSES
    for needles, cause in causes:
        if any(needle in errors for needle in needles):
            return cause.format(port=record.port, host=record.host, model=record.model, adapter=record.adapter)
    return "no known cause found in its log"


def write_note(log: str | Path, text: str) -> None:
    """Append a line from punie itself to the server's log (so the log tells the whole story)."""
    with open(log, "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} - {text}\n")
