"""Checks for the demo's tasks, computed from the real files: what a right final answer must say.

The scripted policy (:mod:`punie.traces.demo_data`) answers from the tool results
it got; these checks are computed without it, from the task and the pristine tree
the task runs on (the file's real lines, the real directory listing, the real
search hits, the real command output), in the task-suite check format
(:mod:`punie.eval.tasks`). The generator judges every training episode with them
(a trace is stored ``passed`` or ``failed``) and the held-out task suite
(:mod:`punie.traces.task_suite`) is written with them, so "the answer quotes what
the tool showed" is one definition for training and for evaluation.

``quote`` is how many output lines a run answer must quote: the policy quotes up
to :data:`QUOTED_LINES`, so training asks for all of those; the task suite asks
for fewer (a right answer may quote less).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punie.errors import DataError
from punie.eval.tasks import normalize_space
from punie.traces.demo_tasks import DemoTask
from punie.traces.tools import DEFAULT_PROGRAMS, ToolError, Workspace, execute, list_dir, search

QUOTED_LINES = 8  # lines of a file or of command output a policy answer quotes
READ_LINES = 3  # a read answer must quote the file's first non-empty lines, this many
DEMO_ENV = {"LC_ALL": "C", "PYTHONDONTWRITEBYTECODE": "1"}  # command output and listings the same everywhere
# What an answer about a tool error says (the policy: "I could not read x: no such file: x.").
ERROR_ANSWER = r"(?i)could not|no such|not allowed|does not (exist|contain)"


@dataclass
class TaskChecks:
    """A task's checks (JSON form) and the command outputs ``answer_includes_output_of`` compares with."""

    checks: list[dict[str, Any]]
    outputs: dict[str, list[str]] = field(default_factory=dict)


def _contains(value: str, *, case_sensitive: bool = True) -> dict[str, Any]:
    return {"type": "answer_contains", "value": value, "case_sensitive": case_sensitive}


def _error_checks(subject: str) -> list[dict[str, Any]]:
    return [_contains(subject), {"type": "answer_matches", "pattern": ERROR_ANSWER}]


def _pristine(root: Path) -> Workspace:
    return Workspace(root, env=dict(DEMO_ENV), sandbox="none")


def check_read(root: Path, path: str) -> TaskChecks:
    file = root / path
    if not file.is_file():
        return TaskChecks(_error_checks(path))
    lines = [normalize_space(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    checks = [_contains(line) for line in lines[:READ_LINES]]
    return TaskChecks(checks + [{"type": "file_unchanged", "path": path}, {"type": "no_tool_error"}])


def check_list(root: Path, path: str) -> TaskChecks:
    try:
        listing = list_dir(_pristine(root), path)
    except ToolError:
        return TaskChecks(_error_checks(path))
    return TaskChecks([_contains(entry.rstrip("/")) for entry in listing.splitlines()] + [{"type": "no_tool_error"}])


def search_hits(root: Path, pattern: str, path: str | None) -> list[str]:
    """The real search hits (``file:line``), from the search tool on the pristine tree."""
    result = search(_pristine(root), pattern, path or ".")
    if result.startswith("No matches"):
        return []
    if "[more than" in result:
        raise DataError(f"search for {pattern!r} in {path or '.'} has too many hits for a demo task; pick another")
    return [hit.split(": ", 1)[0] for hit in result.splitlines()]


def count_phrase(count: int) -> str:
    return "1 line" if count == 1 else f"{count} lines"


def check_search(root: Path, pattern: str, path: str | None) -> TaskChecks:
    hits = search_hits(root, pattern, path)
    if not hits:
        return TaskChecks([{"type": "answer_matches", "pattern": r"(?i)\bno(thing)?\b|\b0 lines\b"},
                           {"type": "no_tool_error"}])
    # The count, as a number the answer states, and where the first hit is.
    return TaskChecks([{"type": "answer_matches", "pattern": rf"(?<!\d){len(hits)} lines?\b"}, _contains(hits[0]),
                       {"type": "no_tool_error"}])


_DEFINITION = r"(def|class|func|function) {}\b"


def check_locate(root: Path, pattern: str) -> TaskChecks:
    hits = [h for h in search(_pristine(root), pattern, ".").splitlines()
            if re.search(_DEFINITION.format(re.escape(pattern)), h)]
    if not hits:
        return TaskChecks(_error_checks(pattern))
    file, line = hits[0].partition(": ")[0].rsplit(":", 1)
    return TaskChecks([_contains(file), _contains(f"line {line}"), {"type": "no_tool_error"}])


def check_create(root: Path, path: str, text: str) -> TaskChecks:
    return TaskChecks([{"type": "file_contains", "path": path, "value": text}, _contains(path),
                       {"type": "no_tool_error"}])


def check_append(root: Path, path: str, text: str) -> TaskChecks:
    file = root / path
    if not file.is_file():
        return TaskChecks(_error_checks(path))
    first = next((line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()), None)
    keeps = [{"type": "file_contains", "path": path, "value": first}] if first else []
    # The new line is the file's last line, and the earlier content is still there.
    return TaskChecks([{"type": "file_contains", "path": path, "pattern": re.escape(text) + r"\n?\Z"}, *keeps,
                       _contains(text), {"type": "no_tool_error"}])


def changed_line(text: str, old: str, new: str) -> tuple[int, str] | None:
    """(line number, the line after the change) of the first line containing ``old``."""
    for number, line in enumerate(text.splitlines(), 1):
        if old in line:
            return number, line.replace(old, new).strip()
    return None


def check_replace(root: Path, path: str, old: str, new: str) -> TaskChecks:
    file = root / path
    if not file.is_file():
        return TaskChecks(_error_checks(path))
    changed = changed_line(file.read_text(encoding="utf-8"), old, new)
    if changed is None:
        return TaskChecks(_error_checks(old) + [{"type": "file_unchanged", "path": path}])
    return TaskChecks([{"type": "file_contains", "path": path, "value": new}, _contains(changed[1]),
                       {"type": "no_tool_error"}])


def run_output(root: Path, command: str, sandbox: str) -> tuple[int, list[str]] | None:
    """(exit code, non-empty output lines) of ``command`` in a fresh copy of ``root``; None when it cannot run."""
    with tempfile.TemporaryDirectory(prefix="punie-grounded-") as tmp:
        copy = Path(shutil.copytree(root, Path(tmp) / "ws", symlinks=True))
        try:
            output = execute(Workspace(copy, env=dict(DEMO_ENV), sandbox=sandbox), command)
        except ToolError:
            return None
    return output.exit_code, output.text.splitlines()


def check_run(root: Path, command: str, *, sandbox: str, quote: int) -> TaskChecks:
    ran = run_output(root, command, sandbox)
    if ran is None:  # refused (a program not on the allowlist) or failed to start: the answer says so
        program = command.split()[0]
        return TaskChecks(_error_checks("not allowed" if program not in DEFAULT_PROGRAMS else program))
    code, lines = ran
    # The policy quotes the first QUOTED_LINES lines: the non-empty ones among them are what it can be held to.
    shown = [normalize_space(line) for line in lines[:QUOTED_LINES] if line.strip()]
    if not shown:
        return TaskChecks([_contains("nothing", case_sensitive=False), {"type": "no_tool_error"}])
    everything = [normalize_space(line) for line in lines if line.strip()]
    check = {"type": "answer_includes_output_of", "command": command, "min_lines": min(quote, len(shown)),
             "exit_code": code}
    return TaskChecks([check, {"type": "no_tool_error"}], outputs={command: everything})


def task_checks(task: DemoTask, root: Path, *, sandbox: str = "auto", quote: int = QUOTED_LINES) -> TaskChecks:
    """The checks a right episode of ``task`` on the pristine tree ``root`` passes."""
    args = task.args
    if task.plan == "run":
        return check_run(root, args[0], sandbox=sandbox, quote=quote)
    if task.plan == "answer":
        return TaskChecks([_contains(args[0], case_sensitive=False), {"type": "max_tool_calls", "max": 0}])
    builders: dict[str, Callable[..., TaskChecks]] = {
        "read": check_read, "list": check_list, "search": check_search, "locate": check_locate,
        "create": check_create, "append": check_append, "replace": check_replace}
    if task.plan not in builders:
        raise DataError(f"no checks for the demo plan {task.plan!r}; add them to punie.traces.grounded")
    return builders[task.plan](root, *args)
