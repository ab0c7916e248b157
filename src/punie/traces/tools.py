"""The agent's tools, confined to one workspace directory.

A tool is a JSON schema (what the model sees, kept short because it is rendered
into every prompt) plus a function. The registry is a dict ``name -> Tool``.

Confinement: every path argument is resolved (following ``..`` and symlinks)
and refused unless it stays inside the workspace; absolute paths and ``~`` are
refused outright. ``run_command`` runs one allowlisted program directly (no
shell: ``;``, ``|``, ``$()`` and ``>`` are plain characters), in the workspace,
with a timeout and a cap on the output it keeps. Its arguments get the same
checks, as an early, readable refusal; they cannot contain an allowed
interpreter (``python -c``, ``git -c alias.x=!cmd``), so the security rests on
the OS sandbox every command runs in (:mod:`punie.traces.sandbox`). Without
one, ``run_command`` refuses unless the caller chose ``sandbox="none"``.

A tool that fails raises :class:`ToolError`; :func:`call_tool` turns that (and
any other exception) into an ``Error: ...`` result for the model, so a bad call
never ends the agent loop.
"""

from __future__ import annotations

import importlib.util
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from punie import fileio
from punie.blas import child_env
from punie.chat.toolcalls import ToolCall
from punie.errors import ConfigError
from punie.traces import sandbox as os_sandbox

DEFAULT_PROGRAMS = ("python", "python3", "pytest", "ls", "cat", "echo", "wc", "grep", "head", "tail", "sort",
                    "diff", "git")
# Programs run by the running Python: "python" works where only "python3" is on PATH, and pytest is the
# interpreter's own (a PATH shim such as pyenv's would need its installation visible in the sandbox).
_PYTHON_NAMES = ("python", "python3")
_PYTHON_MODULES = ("pytest",)
_SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache",
                        ".ruff_cache"})
_MAX_SEARCH_FILE_BYTES = 1_000_000


class ToolError(Exception):
    """A tool could not do what was asked; the message goes back to the model."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, dict[str, Any]]
    required: tuple[str, ...]
    function: Callable[..., str]

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style function schema passed to the chat template as ``tools``."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": self.parameters, "required": list(self.required)}}}


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool
    duration_s: float


@dataclass
class Workspace:
    """The directory the tools may touch, and the limits they obey."""

    root: Path
    programs: tuple[str, ...] = DEFAULT_PROGRAMS
    timeout_s: float = 10.0
    max_output_chars: int = 4000
    max_read_chars: int = 6000
    max_write_chars: int = 100_000
    max_entries: int = 200
    max_matches: int = 50
    env: dict[str, str] = field(default_factory=dict)
    # "auto" (the OS sandbox this machine has, else run_command refuses), "bwrap", "sandbox-exec", or "none"
    sandbox: str = "auto"
    sandbox_level: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise ConfigError(f"workspace {root} is not a directory; pass an existing directory to --workspace")
        self.root = root.resolve()
        self.sandbox_level = os_sandbox.choose(self.sandbox)

    def resolve(self, path: str) -> Path:
        """The real path for a workspace-relative ``path``; refuses anything that leaves the workspace."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("path must be a non-empty string relative to the workspace (use '.' for its root)")
        if path.startswith("~") or os.path.isabs(path) or PurePosixPath(path).is_absolute():
            raise ToolError(f"{path!r} is absolute; use a path relative to the workspace")
        real = (self.root / path).resolve()
        if real != self.root and not real.is_relative_to(self.root):
            raise ToolError(f"{path!r} is outside the workspace; paths must stay inside it")
        return real

    def relative(self, real: Path) -> str:
        rel = real.relative_to(self.root).as_posix()
        return rel or "."


def read_file(ws: Workspace, path: str) -> str:
    real = ws.resolve(path)
    rel = ws.relative(real)
    if real.is_dir():
        raise ToolError(f"{rel} is a directory; use list_dir")
    if not real.is_file():
        raise ToolError(f"no such file: {rel}")
    data = _read_limited(real, ws.max_read_chars * 4 + 4)
    if b"\0" in data:
        raise ToolError(f"{rel} is not a text file")
    text = data.decode("utf-8", errors="replace")
    if len(text) > ws.max_read_chars:
        return text[: ws.max_read_chars] + f"\n[truncated: {rel} is longer than {ws.max_read_chars} characters]"
    return text


def write_file(ws: Workspace, path: str, content: str) -> str:
    if not isinstance(content, str):
        raise ToolError("content must be a string")
    if len(content) > ws.max_write_chars:
        raise ToolError(f"content is {len(content)} characters; the limit is {ws.max_write_chars}")
    real = ws.resolve(path)
    rel = ws.relative(real)
    if real.is_dir():
        raise ToolError(f"{rel} is a directory")
    existed = real.exists()
    fileio.write_text(real, content)
    verb = "Replaced" if existed else "Created"
    return f"{verb} {rel} ({len(content)} characters)."


def list_dir(ws: Workspace, path: str = ".") -> str:
    real = ws.resolve(path)
    rel = ws.relative(real)
    if not real.exists():
        raise ToolError(f"no such directory: {rel}")
    if not real.is_dir():
        raise ToolError(f"{rel} is a file; use read_file")
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in real.iterdir())
    if not names:
        return f"{rel} is empty."
    shown = names[: ws.max_entries]
    more = len(names) - len(shown)
    return "\n".join(shown) + (f"\n[{more} more entries not shown]" if more else "")


def search(ws: Workspace, pattern: str, path: str = ".") -> str:
    if not isinstance(pattern, str) or not pattern:
        raise ToolError("pattern must be a non-empty string")
    real = ws.resolve(path)
    if not real.exists():
        raise ToolError(f"no such file or directory: {ws.relative(real)}")
    hits: list[str] = []
    for file in _walk_files(ws, real):
        data = _read_limited(file, _MAX_SEARCH_FILE_BYTES)
        if b"\0" in data:
            continue
        for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if pattern in line:
                hits.append(f"{ws.relative(file)}:{lineno}: {line.strip()[:200]}")
                if len(hits) > ws.max_matches:
                    return "\n".join(hits[: ws.max_matches]) + f"\n[more than {ws.max_matches} matches; narrow it]"
    return "\n".join(hits) if hits else f"No matches for {pattern!r}."


@dataclass(frozen=True)
class CommandOutput:
    """What one command printed (stdout and stderr together), as the model sees it: the workspace's
    absolute path shown as ``.``, cut after ``max_output_chars`` (``total_bytes`` says how much there was)."""

    exit_code: int
    text: str
    total_bytes: int
    truncated: bool


def execute(ws: Workspace, command: str) -> CommandOutput:
    """Run one allowlisted command in the workspace's OS sandbox; ToolError when it cannot run or times out.

    ``run_command`` shows its result to the model; checks that compare an answer with a command's
    real output run the command here too, so both see the same text.
    """
    argv = _command_argv(ws, command)
    if ws.sandbox_level is None:
        raise ToolError(os_sandbox.UNAVAILABLE)
    env = child_env({**os.environ, **ws.env})
    # sandbox-exec has no private /tmp of its own: give the command one, removed afterwards.
    private_tmp = Path(tempfile.mkdtemp(prefix="punie-cmd-")).resolve() if ws.sandbox_level == "sandbox-exec" else None
    try:
        wrapped, env = os_sandbox.WRAPPERS[ws.sandbox_level](argv, ws.root, private_tmp or ws.root, env)
        code, raw, size = _run_capped(wrapped, ws, env, keep=ws.max_output_chars * 4)
    finally:
        if private_tmp is not None:
            shutil.rmtree(private_tmp, ignore_errors=True)
    if code is None:
        raise ToolError(f"{command!r} timed out after {ws.timeout_s:g} s and was stopped")
    # Absolute paths of the workspace would leak into the model's context; show them relative.
    text = raw.decode("utf-8", errors="replace").replace(str(ws.root), ".")
    truncated = len(text) > ws.max_output_chars or size > len(raw)
    return CommandOutput(code, text[: ws.max_output_chars] if truncated else text, size, truncated)


def run_command(ws: Workspace, command: str) -> str:
    result = execute(ws, command)
    text = result.text + (f"\n[output truncated: {result.total_bytes} bytes in total]" if result.truncated else "")
    return f"exit code: {result.exit_code}\n{text}".rstrip("\n")


def _run_capped(argv: list[str], ws: Workspace, env: dict[str, str], *, keep: int) -> tuple[int | None, bytes, int]:
    """Run ``argv``; returns (exit code or None on timeout, the first ``keep`` bytes of output, total bytes).

    Output is read from a pipe as it arrives and everything past ``keep`` is only counted, so a command
    printing gigabytes costs no memory or disk. The command runs in its own session; when it exits or
    times out, the whole process group is killed, so background children do not outlive it (inside
    bwrap the pid namespace dies with the command, which also catches children that left the group).
    """
    proc = subprocess.Popen(argv, cwd=ws.root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    assert proc.stdout is not None
    fd, kept, total = proc.stdout.fileno(), bytearray(), 0
    deadline = time.monotonic() + ws.timeout_s
    timed_out = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
            if not ready and proc.poll() is None:
                continue
            if not ready:  # exited, and the pipe is still open (a background child holds it):
                ready, _, _ = select.select([fd], [], [], 0)  # take what it wrote just before exiting
                if not ready:
                    break
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # every writer has closed the pipe: wait for the exit status
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0))
                except subprocess.TimeoutExpired:
                    timed_out = True
                break
            total += len(chunk)
            if len(kept) < keep:
                kept += chunk[: keep - len(kept)]
    finally:
        _kill_group(proc)
        proc.stdout.close()
    return (None if timed_out else proc.returncode), bytes(kept), total


def _command_argv(ws: Workspace, command: str) -> list[str]:
    if not isinstance(command, str) or not command.strip():
        raise ToolError("command must be a non-empty string")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ToolError(f"cannot split {command!r} into arguments: {exc}") from None
    program = argv[0]
    if "/" in program or program not in ws.programs:
        raise ToolError(f"program {program!r} is not allowed; allowed: {', '.join(ws.programs)}")
    for arg in argv[1:]:
        _check_argument(ws, arg)
    if program in _PYTHON_NAMES:
        return [sys.executable, *argv[1:]]
    if program in _PYTHON_MODULES and importlib.util.find_spec(program) is not None:
        return [sys.executable, "-m", program, *argv[1:]]
    found = shutil.which(program)
    if found is None:
        raise ToolError(f"program {program!r} is not installed on this machine")
    return [found, *argv[1:]]


def _check_argument(ws: Workspace, arg: str) -> None:
    """Refuse arguments that name paths outside the workspace (``--opt=/x`` included).

    Every argument is read as a possible path: its real path (``..`` and symlinks resolved) must stay in
    the workspace. Text that is not a path resolves to a name inside it and passes.
    """
    value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
    if value.startswith(("/", "~")):
        raise ToolError(f"argument {arg!r} is an absolute path; use paths relative to the workspace")
    try:
        real = (ws.root / value).resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long for the OS, a symlink loop
        raise ToolError(f"argument {arg!r} cannot be used: {exc}") from None
    if real != ws.root and not real.is_relative_to(ws.root):
        raise ToolError(f"argument {arg!r} leads outside the workspace (through '..' or a symlink); "
                        f"paths must stay inside it")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The group outlives its leader: kill it even when the command already exited.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.poll() is None:
            proc.kill()
    proc.wait()


def _read_limited(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError as exc:
        raise ToolError(f"cannot read {path.name}: {exc.strerror}") from None


def _walk_files(ws: Workspace, start: Path) -> list[Path]:
    if start.is_file():
        return [start]
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            file = Path(dirpath) / name
            # A symlinked file is searched only when its target is inside the workspace.
            if file.is_symlink() and not file.resolve().is_relative_to(ws.root):
                continue
            if file.is_file():
                files.append(file)
    return files


_TOOL_SPECS: tuple[tuple[str, str, dict[str, dict[str, Any]], tuple[str, ...], Callable[..., str]], ...] = (
    ("read_file", "Read a text file.", {"path": {"type": "string"}}, ("path",), read_file),
    ("write_file", "Write a text file (replaces it).", {"path": {"type": "string"}, "content": {"type": "string"}},
     ("path", "content"), write_file),
    ("list_dir", "List a directory.", {"path": {"type": "string"}}, ("path",), list_dir),
    ("search", "Find lines containing text.", {"pattern": {"type": "string"}, "path": {"type": "string"}},
     ("pattern",), search),
    ("run_command", "Run a program (no shell).", {"command": {"type": "string"}}, ("command",), run_command),
)


TOOL_NAMES = tuple(spec[0] for spec in _TOOL_SPECS)


def make_tools(workspace: Workspace | Path | str, *, sandbox: str = "auto",
               names: tuple[str, ...] | list[str] | None = None) -> dict[str, Tool]:
    """The default registry: read_file, write_file, list_dir, search, run_command bound to a workspace.

    ``names`` keeps only those tools (in the registry's order). ``sandbox`` applies when ``workspace``
    is a path (a :class:`Workspace` carries its own).
    """
    unknown = sorted(set(names or ()) - set(TOOL_NAMES))
    if unknown:
        raise ConfigError(f"unknown tool(s) {unknown}; punie's tools are {', '.join(TOOL_NAMES)}")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace), sandbox=sandbox)
    return {name: Tool(name, desc, params, required, partial(fn, ws))
            for name, desc, params, required, fn in _TOOL_SPECS if names is None or name in names}


def tool_schemas(tools: dict[str, Tool]) -> list[dict[str, Any]]:
    return [tool.schema() for tool in tools.values()]


def call_tool(tools: dict[str, Tool], call: ToolCall) -> ToolResult:
    """Run one call; every failure becomes an ``Error: ...`` result instead of an exception."""
    start = time.perf_counter()
    try:
        tool = tools.get(call.name)
        if tool is None:
            raise ToolError(f"unknown tool {call.name!r}; available: {', '.join(tools)}")
        _check_arguments(tool, call.arguments)
        content, is_error = tool.function(**call.arguments), False
    except ToolError as exc:
        content, is_error = f"Error: {exc}", True
    except Exception as exc:  # reported to the model and recorded in the trace, never raised into the loop
        content, is_error = f"Error: {call.name} failed: {type(exc).__name__}: {exc}", True
    return ToolResult(content=content, is_error=is_error, duration_s=time.perf_counter() - start)


def _check_arguments(tool: Tool, arguments: dict[str, Any]) -> None:
    expected = ", ".join(tool.parameters)
    for name in arguments:
        if name not in tool.parameters:
            raise ToolError(f"{tool.name} has no argument {name!r} (arguments: {expected})")
    for name in tool.required:
        if name not in arguments:
            raise ToolError(f"{tool.name} needs the argument {name!r} (arguments: {expected})")
    for name, value in arguments.items():
        if tool.parameters[name].get("type") == "string" and not isinstance(value, str):
            raise ToolError(f"argument {name!r} of {tool.name} must be a string, got {type(value).__name__}")
