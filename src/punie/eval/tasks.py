"""Task suites: JSONL files with one agent task per line, judged by checks on what really happened.

A task is an instruction, a workspace and checks, all of which must hold::

    {"id": "count-001", "category": "run", "instruction": "What does scripts/count_items.py print?",
     "workspace": "../data/workspace", "max_steps": 4, "tools": ["read_file", "run_command"],
     "checks": [{"type": "answer_includes_output_of", "command": "python scripts/count_items.py"},
                {"type": "file_unchanged", "path": "data/stock.csv"}]}

``workspace`` is a directory (relative paths are read from the task file's
directory). Every episode works on a fresh copy of it (:mod:`punie.eval.episodes`),
so the checks read that copy after the episode and the recorded trace, never
what the model says it did. ``tools`` names the punie tools offered (default:
all of them); ``system`` replaces the agent's system prompt.

Checks are a registry (:data:`CHECKS`): each type has a pydantic model for its
fields and one function, ``(check, episode) -> None | reason``. Besides the
listed checks, an episode that stopped without a final answer (``max_steps``)
fails: an agent that never says it is done has not finished the task.

Every line is checked when the suite loads, with the reader eval suites use
(:func:`punie.eval.suite.read_jsonl`): fields, regexes, paths (a check naming a
path outside the workspace is a suite error) and the files ``file_unchanged``
compares. :func:`reference_outputs` then runs each ``answer_includes_output_of``
command once in a fresh copy, in the sandbox ``run_command`` uses, before any
model runs: a command that cannot run or prints nothing is a suite error too.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from punie.errors import DataError, validation_problems
from punie.eval.suite import DEFAULT_CATEGORY, json_object, read_jsonl
from punie.traces.agent import DEFAULT_MAX_STEPS, AgentResult
from punie.traces.store import FAILED, PASSED, Trace
from punie.traces.tools import TOOL_NAMES, ToolError, Workspace, execute

MAX_STEPS_LIMIT = 100


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnswerContains(Check):
    type: Literal["answer_contains"]
    value: str = Field(min_length=1)
    case_sensitive: bool = False


class AnswerMatches(Check):
    type: Literal["answer_matches"]
    pattern: str = Field(min_length=1)
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        _compile(pattern)
        return pattern


class AnswerIncludesOutputOf(Check):
    type: Literal["answer_includes_output_of"]
    command: str = Field(min_length=1)
    # How many of the output's non-empty lines the answer must quote (default: every one).
    min_lines: int | None = Field(default=None, ge=1)
    # The exit code the command must have in the pristine workspace (None: any).
    exit_code: int | None = 0


class FileContains(Check):
    type: Literal["file_contains"]
    path: str = Field(min_length=1)
    value: str | None = Field(default=None, min_length=1)
    pattern: str | None = Field(default=None, min_length=1)
    case_sensitive: bool = True

    @model_validator(mode="after")
    def _value_or_pattern(self) -> FileContains:
        if (self.value is None) == (self.pattern is None):
            raise ValueError("give exactly one of 'value' (text the file must contain) or 'pattern' (a regex)")
        if self.pattern is not None:
            _compile(self.pattern)
        return self


class FileUnchanged(Check):
    type: Literal["file_unchanged"]
    path: str = Field(min_length=1)


class NoToolError(Check):
    type: Literal["no_tool_error"]


class MaxToolCalls(Check):
    type: Literal["max_tool_calls"]
    max: int = Field(ge=0)


def _compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None


@dataclass(frozen=True)
class Episode:
    """What checks read: the real trace and the episode's workspace after it, never the model's claims."""

    answer: str | None  # the final answer; None when the loop stopped without one
    trace: Trace
    parse_errors: list[str]  # tool calls that did not parse
    workspace: Path  # the episode's copy of the task's workspace, after the episode
    pristine: Path  # the task's workspace as given (never written)
    outputs: dict[str, list[str]] = field(default_factory=dict)  # command -> its output lines (reference_outputs)


CheckFn = Callable[[Any, Episode], str | None]


@dataclass(frozen=True)
class CheckType:
    model: type[Check]
    run: CheckFn


CHECKS: dict[str, CheckType] = {}


def check(model: type[Check]) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn`` as the function of ``model``'s check type (named by its ``type`` literal)."""
    def register(fn: CheckFn) -> CheckFn:
        name = model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
        CHECKS[name] = CheckType(model, fn)
        return fn
    return register


def normalize_space(text: str) -> str:
    """Runs of whitespace (line breaks included) as one space, ends trimmed."""
    return " ".join(text.split())


@check(AnswerContains)
def answer_contains(c: AnswerContains, episode: Episode) -> str | None:
    """The final answer contains ``value`` (whitespace runs collapsed; case-insensitive unless told)."""
    answer, value = normalize_space(episode.answer or ""), normalize_space(c.value)
    if not c.case_sensitive:
        answer, value = answer.casefold(), value.casefold()
    return None if value in answer else f"the answer does not contain {c.value!r}"


@check(AnswerMatches)
def answer_matches(c: AnswerMatches, episode: Episode) -> str | None:
    """The regex ``pattern`` matches somewhere in the final answer (``re.search``)."""
    pattern = _compile(c.pattern, re.IGNORECASE if c.ignore_case else 0)
    return None if pattern.search(episode.answer or "") else f"the answer does not match /{c.pattern}/"


@check(AnswerIncludesOutputOf)
def answer_includes_output_of(c: AnswerIncludesOutputOf, episode: Episode) -> str | None:
    """The final answer quotes the real output of ``command`` (run in a pristine copy of the workspace).

    Quoting means: each non-empty output line, whitespace collapsed, appears in the answer with its
    whitespace collapsed (line breaks do not matter, case does). Every line must appear, or at least
    ``min_lines`` of them.
    """
    lines = episode.outputs.get(c.command)
    if lines is None:
        raise DataError(f"the output of {c.command!r} was not computed; call reference_outputs() first")
    answer = normalize_space(episode.answer or "")
    missing = [line for line in lines if line not in answer]
    need = c.min_lines or len(lines)
    if len(lines) - len(missing) >= need:
        return None
    return (f"the answer quotes {len(lines) - len(missing)} of the {len(lines)} output lines of {c.command!r} "
            f"(needs {need}); e.g. missing {missing[0]!r}")


@check(FileContains)
def file_contains(c: FileContains, episode: Episode) -> str | None:
    """After the episode, the workspace's file ``path`` contains ``value`` (or matches the regex ``pattern``)."""
    path = _episode_file(episode, c.path)
    if isinstance(path, str):
        return path
    if not path.is_file():
        return f"{c.path} does not exist after the episode"
    text = path.read_text(encoding="utf-8", errors="replace")
    if c.pattern is not None:
        found = _compile(c.pattern, 0 if c.case_sensitive else re.IGNORECASE).search(text)
        return None if found else f"{c.path} does not match /{c.pattern}/"
    assert c.value is not None
    contains = c.value in text if c.case_sensitive else c.value.casefold() in text.casefold()
    return None if contains else f"{c.path} does not contain {c.value!r}"


@check(FileUnchanged)
def file_unchanged(c: FileUnchanged, episode: Episode) -> str | None:
    """After the episode, the workspace's file ``path`` is byte for byte the pristine workspace's."""
    path = _episode_file(episode, c.path)
    if isinstance(path, str):
        return path
    if not path.is_file():
        return f"{c.path} was deleted"
    return None if path.read_bytes() == (episode.pristine / c.path).read_bytes() else f"{c.path} was changed"


def _episode_file(episode: Episode, path: str) -> Path | str:
    """The file in the episode's workspace, or why it cannot be read (the agent may have made it a symlink
    that leads out)."""
    try:
        return Workspace(episode.workspace, sandbox="none").resolve(path)
    except ToolError as exc:
        return f"{path}: {exc}"


@check(NoToolError)
def no_tool_error(c: NoToolError, episode: Episode) -> str | None:
    """No tool call returned an error and every tool call parsed."""
    errors = [f"{r.name}: {r.result}" for r in episode.trace.tool_calls if r.is_error]
    errors += [f"unparsed tool call: {e}" for e in episode.parse_errors]
    return None if not errors else f"{len(errors)} tool error(s), first {errors[0][:200]!r}"


@check(MaxToolCalls)
def max_tool_calls(c: MaxToolCalls, episode: Episode) -> str | None:
    """The agent made at most ``max`` tool calls."""
    calls = len(episode.trace.tool_calls)
    return None if calls <= c.max else f"{calls} tool calls, more than {c.max}"


AnyCheck = Annotated[AnswerContains | AnswerMatches | AnswerIncludesOutputOf | FileContains | FileUnchanged
                     | NoToolError | MaxToolCalls, Field(discriminator="type")]


class TaskSpec(BaseModel):
    """One line of a task suite, as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    category: str = Field(default=DEFAULT_CATEGORY, min_length=1)
    instruction: str = Field(min_length=1)
    workspace: str = Field(min_length=1)
    max_steps: int = Field(default=DEFAULT_MAX_STEPS, ge=1, le=MAX_STEPS_LIMIT)
    system: str | None = None
    tools: list[str] | None = Field(default=None, min_length=1)
    checks: list[AnyCheck] = Field(min_length=1)
    notes: str | None = None

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: list[str] | None) -> list[str] | None:
        unknown = sorted(set(tools or ()) - set(TOOL_NAMES))
        if unknown:
            raise ValueError(f"unknown tool(s) {unknown}; punie's tools are {', '.join(TOOL_NAMES)}")
        return tools


@dataclass(frozen=True)
class Task:
    """A checked task: its spec, with the workspace resolved and the line it came from."""

    spec: TaskSpec
    workspace: Path
    line: int = 0

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def category(self) -> str:
        return self.spec.category

    @property
    def checks(self) -> list[Check]:
        return list(self.spec.checks)

    def commands(self) -> list[str]:
        """The commands whose output some check compares the answer with."""
        return [c.command for c in self.spec.checks if isinstance(c, AnswerIncludesOutputOf)]


@dataclass(frozen=True)
class TaskSuite:
    path: Path
    tasks: list[Task]
    sha256: str = ""
    categories: list[str] = field(default_factory=list)


_SPEC_CHECKS: TypeAdapter[list[AnyCheck]] = TypeAdapter(list[AnyCheck])


def load_tasks(path: Path | str) -> TaskSuite:
    """Read and check every line of a task suite; every error names ``file:line`` and the fix."""
    path = Path(path)
    tasks, sha256 = read_jsonl(path, _parser(path.parent), kind="task suite", item="task")
    return TaskSuite(path=path, tasks=tasks, sha256=sha256, categories=sorted({t.category for t in tasks}))


def _parser(base: Path) -> Callable[..., Task]:
    def parse(text: str, *, where: str, line: int) -> Task:
        return parse_task(text, base=base, where=where, line=line)
    return parse


def parse_task(text: str, *, base: Path, where: str = "<task>", line: int = 0) -> Task:
    """One task from one JSON line; ``base`` is the directory relative workspaces are read from."""
    obj = json_object(text, where)
    try:
        spec = TaskSpec.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, root="task"))
        types = "" if "expected tags" in problems else f"; check types: {', '.join(CHECKS)}"
        raise DataError(f"{where}: {problems}. A task has {', '.join(TaskSpec.model_fields)}{types}.") from None
    workspace = (base / Path(spec.workspace).expanduser()).resolve()
    if not workspace.is_dir():
        raise DataError(f"{where}: workspace {spec.workspace!r} (read as {workspace}) is not a directory; "
                        "give a directory, relative to the task file's folder or absolute.")
    for index, c in enumerate(spec.checks):
        problem = _path_problem(c, workspace)
        if problem:
            raise DataError(f"{where}: checks.{index} ({c.type}): {problem}")  # type: ignore[attr-defined]
    return Task(spec=spec, workspace=workspace, line=line)


def _path_problem(c: Check, workspace: Path) -> str | None:
    path = getattr(c, "path", None)
    if path is None:
        return None
    try:
        real = Workspace(workspace, sandbox="none").resolve(path)
    except ToolError as exc:
        return f"{exc} (checks read the episode's copy of the task's workspace)"
    if isinstance(c, FileUnchanged) and not real.is_file():
        return f"{path!r} is not a file of the workspace {workspace}; file_unchanged compares an existing file"
    return None


def fresh_copy(workspace: Path, destination: Path) -> Path:
    """A copy of ``workspace`` at ``destination`` (symbolic links copied as links, so none escapes)."""
    shutil.copytree(workspace, destination, symlinks=True)
    return destination


def reference_outputs(suite: TaskSuite, *, sandbox: str = "auto", timeout_s: float = 10.0
                      ) -> dict[str, dict[str, list[str]]]:
    """Each task's ``answer_includes_output_of`` commands run once in a fresh copy of its workspace:
    ``{task id: {command: [non-empty output lines, whitespace collapsed]}}``.

    The command runs as ``run_command`` runs it (same sandbox, same output cap, the workspace shown as
    ``.``). A command that cannot run, exits otherwise than ``exit_code``, or prints nothing is a suite
    error naming the line.
    """
    found: dict[str, dict[str, list[str]]] = {}
    for task in suite.tasks:
        found[task.id] = {}
        for index, c in enumerate(task.spec.checks):
            if isinstance(c, AnswerIncludesOutputOf) and c.command not in found[task.id]:
                where = f"{suite.path}:{task.line}: checks.{index} (answer_includes_output_of)"
                found[task.id][c.command] = _reference(task, c, where, sandbox, timeout_s)
    return found


def _reference(task: Task, c: AnswerIncludesOutputOf, where: str, sandbox: str, timeout_s: float) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="punie-reference-") as tmp:
        ws = Workspace(fresh_copy(task.workspace, Path(tmp) / "workspace"), sandbox=sandbox, timeout_s=timeout_s)
        try:
            output = execute(ws, c.command)
        except ToolError as exc:
            raise DataError(f"{where}: {c.command!r} cannot run in the task's workspace: {exc}.") from None
    if c.exit_code is not None and output.exit_code != c.exit_code:
        first = output.text.strip().splitlines()[:1]
        raise DataError(f"{where}: {c.command!r} exited {output.exit_code} in a fresh copy of the workspace, not "
                        f"{c.exit_code} ({first[0][:120] if first else 'no output'!r}); fix the command, or set "
                        "'exit_code' (null accepts any).")
    lines = [normalize_space(line) for line in output.text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{where}: {c.command!r} prints nothing, so no answer could quote it; use another check.")
    if c.min_lines is not None and c.min_lines > len(lines):
        raise DataError(f"{where}: min_lines is {c.min_lines} but {c.command!r} prints {len(lines)} non-empty "
                        "line(s); lower min_lines.")
    return lines


@dataclass(frozen=True)
class CheckOutcome:
    type: str
    passed: bool
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "passed": self.passed, "reason": self.reason}


FINAL_ANSWER = "final_answer"  # the implicit check: the loop ended with an answer


def score_episode(checks: list[Check], episode: Episode) -> list[CheckOutcome]:
    """Every check on one episode, in order; an episode without a final answer fails first."""
    outcomes = []
    if episode.answer is None:
        steps = sum(m["role"] == "assistant" for m in episode.trace.messages)
        outcomes.append(CheckOutcome(FINAL_ANSWER, False, f"no final answer: stopped after {steps} steps "
                                                          f"({episode.trace.outcome})"))
    for c in checks:
        name = c.type  # type: ignore[attr-defined]
        reason = CHECKS[name].run(c, episode)
        outcomes.append(CheckOutcome(name, reason is None, reason or ""))
    return outcomes


def judge(checks: list[Check], episode_of: Callable[[AgentResult], Episode],
          on_scored: Callable[[list[CheckOutcome]], None] | None = None) -> Callable[[AgentResult], None]:
    """A ``judge`` for :func:`punie.traces.agent.run_agent`: scores the ended loop with ``checks`` and sets
    its outcome to passed or failed, recording every check's result (and the failed ones) in the trace."""
    def apply(result: AgentResult) -> None:
        outcomes = score_episode(checks, episode_of(result))
        passed = all(o.passed for o in outcomes)
        result.outcome = PASSED if passed else FAILED
        result.trace.meta["checks"] = [o.as_dict() for o in outcomes]
        result.trace.meta["failed_checks"] = [o.as_dict() for o in outcomes if not o.passed]
        if on_scored is not None:
            on_scored(outcomes)
    return apply


def check_from_dict(obj: dict[str, Any]) -> Check:
    """One check from its JSON form (``punie agent run --check-...`` builds them this way)."""
    try:
        return _SPEC_CHECKS.validate_python([obj])[0]
    except ValidationError as exc:
        raise DataError(f"bad check {obj}: " + "; ".join(validation_problems(exc, root="check"))) from None
