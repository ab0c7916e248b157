"""The shipped demo data: traces of a scripted policy driving the real tools.

For every training task (:mod:`punie.traces.demo_tasks`) the generator copies the
sample workspace (``data/workspace`` minus the held-out files), runs the real
agent loop (:func:`punie.traces.agent.run_agent`) with a *scripted policy* in
place of a model, and records the trace in the trace store. The policy decides
each step from the task and the real tool results (real file contents, real
command output), and writes its tool calls as ``<tool_call>`` text that the
shared parser reads back, as a model's would. The traces are then exported with
:func:`punie.traces.export.export_traces`, as ``punie traces export`` would.

The eval suite asks held-out tasks; each case expects the policy's first step.
Everything is seeded; a run takes a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from punie import fileio
from punie.assets import sample_workspace
from punie.chat.toolcalls import ToolCall, parse_text
from punie.errors import DataError
from punie.eval.overlap import data_prompts, prompt_key
from punie.eval.tasks import Episode, check_from_dict, judge
from punie.traces import demo_tasks, grounded, project_tasks, projects, sandbox, task_suite
from punie.traces.agent import DEFAULT_SYSTEM, AgentResult, Completion, Judge, run_agent
from punie.traces.export import ExportReport, export_traces
from punie.traces.store import PASSED, TraceStore
from punie.traces.tools import Tool, ToolError, Workspace, make_tools, tool_schemas

DEMO_SOURCE = "demo"
POLICY_ID = "scripted-policy"
# A plan yields assistant turns (text, possibly a <tool_call> block) and is sent each tool result.
Plan = Generator[str, str, None]


def default_workspace() -> Path:
    """The sample workspace shipped with punie (``data/workspace`` in the repository)."""
    return sample_workspace()


def _call(name: str, **arguments: Any) -> str:
    payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


def _error(result: str) -> str | None:
    return result[len("Error: "):] if result.startswith("Error: ") else None


def _quote(lines: list[str]) -> str:
    """The first lines of a file or of command output, as an answer quotes them."""
    shown = [line.rstrip() for line in lines[:grounded.QUOTED_LINES]]
    return "\n".join(shown) + ("\n..." if len(lines) > grounded.QUOTED_LINES else "")


# Every final answer below is built from the tool results the plan got, never from the task's tables:
# the file's lines, the listing's entries, the hits and their count, the changed line, the command output.
def plan_read(path: str) -> Plan:
    result = yield _call("read_file", path=path)
    if (err := _error(result)) is not None:
        yield f"I could not read {path}: {err}."
        return
    yield f"{path} says:\n{_quote(result.splitlines())}"


def plan_list(path: str) -> Plan:
    result = yield _call("list_dir", path=path)
    if (err := _error(result)) is not None:
        yield f"I could not list {path}: {err}."
        return
    where = "The project root" if path == "." else path
    yield f"{where} contains: {', '.join(result.splitlines())}."


def plan_search(pattern: str, path: str | None) -> Plan:
    args = {"pattern": pattern} | ({"path": path} if path else {})
    result = yield _call("search", **args)
    where = f"{path}" if path else "the project"
    if result.startswith("No matches"):
        yield f"No line in {where} contains {pattern}."
        return
    spots = [hit.split(": ", 1)[0] for hit in result.splitlines()]
    shown = ", ".join(spots[:6]) + (f" and {len(spots) - 6} more" if len(spots) > 6 else "")
    verb = "mentions" if len(spots) == 1 else "mention"
    yield f"{grounded.count_phrase(len(spots))} in {where} {verb} {pattern}: {shown}."


def plan_locate(pattern: str) -> Plan:
    result = yield _call("search", pattern=pattern)
    # Python, Go and JavaScript definitions (the synthetic projects have all three).
    hits = [hit for hit in result.splitlines()
            if re.search(rf"(def|class|func|function) {re.escape(pattern)}\b", hit)]
    if not hits:
        yield f"I could not find a definition of {pattern}."
        return
    spot, _, code = hits[0].partition(": ")
    file, line = spot.rsplit(":", 1)
    yield _call("read_file", path=file)
    yield f"{pattern} is defined in {file} at line {line}: {code}"


def plan_create(path: str, text: str) -> Plan:
    result = yield _call("write_file", path=path, content=text)
    err = _error(result)
    yield f"I could not create {path}: {err}." if err is not None else f"Created {path} with: {text}"


def plan_append(path: str, text: str) -> Plan:
    current = yield _call("read_file", path=path)
    if (err := _error(current)) is not None:
        yield f"I could not read {path}: {err}."
        return
    body = current if current.endswith("\n") or not current else current + "\n"
    result = yield _call("write_file", path=path, content=body + text + "\n")
    err = _error(result)
    yield f"I could not write {path}: {err}." if err is not None else f"Added this line to the end of {path}: {text}"


def plan_replace(path: str, old: str, new: str) -> Plan:
    current = yield _call("read_file", path=path)
    if (err := _error(current)) is not None:
        yield f"I could not read {path}: {err}."
        return
    changed = grounded.changed_line(current, old, new)
    if changed is None:
        yield f"{path} does not contain {old}, so I left it unchanged."
        return
    result = yield _call("write_file", path=path, content=current.replace(old, new))
    if (err := _error(result)) is not None:
        yield f"I could not write {path}: {err}."
        return
    number, line = changed
    yield f"Replaced {old} with {new} in {path}. Line {number} now reads: {line}"


def plan_run(command: str) -> Plan:
    result = yield _call("run_command", command=command)
    if (err := _error(result)) is not None:
        yield f"I could not run it: {err}."
        return
    status, _, output = result.partition("\n")
    code = status.removeprefix("exit code: ")
    lines = output.splitlines()
    if not any(line.strip() for line in lines):
        yield f"`{command}` printed nothing (exit code {code})."
        return
    said = "printed" if code == "0" else f"exited with code {code} and printed"
    yield f"`{command}` {said}:\n{_quote(lines)}"


def plan_answer(text: str) -> Plan:
    yield text


PLANS: dict[str, Callable[..., Plan]] = {"read": plan_read, "list": plan_list, "search": plan_search,
                                         "locate": plan_locate, "create": plan_create, "append": plan_append,
                                         "replace": plan_replace, "run": plan_run, "answer": plan_answer}


@dataclass
class ScriptedPolicy:
    """An engine that plays a plan: the first turn starts it, each later turn sends it the last tool result."""

    plan: Plan
    model_id: str | None = POLICY_ID
    adapter: str | None = None
    names: dict[str, str] = field(default_factory=dict)  # punie's tool name -> the name the schema uses
    _started: bool = field(default=False, repr=False)

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        try:
            text = self.plan.send(messages[-1]["content"]) if self._started else next(self.plan)
        except StopIteration:
            raise DataError("the scripted plan ended before the agent loop did") from None
        self._started = True
        for punie_name, shown in self.names.items():
            # The plans write punie's names; a renamed tool set calls the tool by the schema's name.
            text = text.replace(f'<tool_call>\n{{"name": "{punie_name}"', f'<tool_call>\n{{"name": "{shown}"')
        return Completion(parse_text(text), text)


def policy_for(task: demo_tasks.DemoTask) -> ScriptedPolicy:
    return ScriptedPolicy(PLANS[task.plan](*task.args), names=dict(task.toolset))


def tools_for(task: demo_tasks.DemoTask, root: Path) -> dict[str, Tool]:
    """The task's tools: punie's five on ``root``, a renamed and reordered subset, or another agent's."""
    if task.foreign:
        return {name: foreign_tool(name) for name in task.foreign}
    tools = make_tools(_demo_workspace(root))
    if not task.toolset:
        return tools
    return {shown: replace(tools[name], name=shown) for name, shown in task.toolset}


def foreign_tool(name: str) -> Tool:
    """Another agent's tool: its schema only (the no-tool tasks that carry it never call it)."""
    pool = next(tools for tools in project_tasks.FOREIGN_TOOLS.values() if name in tools)
    description, params = pool[name]

    def unavailable(**_: Any) -> str:
        raise ToolError(f"{name} is not available in the demo")

    return Tool(name, description, {k: {"type": "string", "description": v} for k, v in params.items()},
                tuple(params), unavailable)


@dataclass
class DemoData:
    out_dir: Path
    files: dict[str, Path]
    traces: int
    suite_cases: int
    export: ExportReport
    suites: dict[str, int] = field(default_factory=dict)  # suite name (file stem) -> cases (or tasks)
    tasks_dir: Path | None = None  # where the task suites' workspaces were written

    @property
    def task_suites(self) -> tuple[str, ...]:
        """The suites that are task suites (``punie eval --tasks``), not first-step eval suites."""
        return tuple(task_suite.SUITE_FILES.values())


# Plans that write files. (The demo's commands only read; a test regenerating the data would catch one that wrote.)
_CHANGES_FILES = frozenset({"create", "append", "replace"})


# The suites punie demo evaluates: file stem -> what it measures.
SUITES = {"suite": "the sample workspace (held-out files and phrasings)",
          "suite-projects": "held-out projects (names and phrasings never trained on)",
          "suite-notool": "other agents' tools, questions that need none"}


def training_workspace(source: Path, dest: Path) -> Path:
    """A copy of the sample workspace without the held-out files and directories."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for rel in demo_tasks.HELD_OUT_FILES:
        (dest / rel).unlink(missing_ok=True)
    for rel in sorted(demo_tasks.HELD_OUT_DIRS, key=len, reverse=True):
        if (dest / rel).is_dir():
            shutil.rmtree(dest / rel)
    return dest


def _demo_workspace(root: Path) -> Workspace:
    # C locale and no bytecode files: command output and directory listings are the same everywhere.
    # The commands are the fixed ones in demo_tasks, not a model's: they run in the OS sandbox when the
    # machine has one and unconfined otherwise (the output is the same; tests/test_traces_demo.py checks both).
    return Workspace(root, env=dict(grounded.DEMO_ENV), sandbox=_sandbox_level())


def _sandbox_level() -> str:
    return "auto" if sandbox.available_level() != "none" else "none"


def record_traces(store: TraceStore, workspace: Path, seed: int) -> int:
    """Run every training task (sample workspace, then the synthetic projects), each on a fresh copy of its
    tree when it writes files; returns how many traces were recorded."""
    with tempfile.TemporaryDirectory(prefix="punie-demo-") as tmp:
        runs = _training_runs(workspace, seed, Path(tmp))
        failed = []
        for index, (tree, task) in enumerate(runs):
            root = tree
            if task.plan in _CHANGES_FILES:
                root = Path(tmp) / f"run-{index}"
                shutil.copytree(tree, root)
            result = run_agent(task.prompt, engine=policy_for(task), tools=tools_for(task, root),
                               system=task.system or DEFAULT_SYSTEM, store=store, category=task.category,
                               source=DEMO_SOURCE, meta={"template": task.template, "plan": task.plan}
                               | ({"project": task.project} if task.project else {}),
                               judge=_judge(task, tree, root))
            if result.outcome != PASSED:
                failed.append((task.prompt, result.trace.meta.get("failed_checks")))
    if failed:
        # The policy answers from the tool results and the checks are computed from the files: a failure is a bug.
        raise DataError(f"{len(failed)} scripted demo episodes failed their checks, e.g. {failed[0][0]!r}: "
                        f"{failed[0][1]}")
    return len(runs)


def _judge(task: demo_tasks.DemoTask, pristine: Path, root: Path) -> Judge:
    """Score the episode with the task's checks (:mod:`punie.traces.grounded`): the trace is passed or failed."""
    found = grounded.task_checks(task, pristine, sandbox=_sandbox_level())

    def evidence(result: AgentResult) -> Episode:
        return Episode(answer=result.answer, trace=result.trace, parse_errors=list(result.errors), workspace=root,
                       pristine=pristine, outputs=found.outputs)

    return judge([check_from_dict(c) for c in found.checks], evidence)


def write_task_suites(tasks_dir: Path, prefix: str, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The held-out task suites (file stem -> task lines), their projects written under ``tasks_dir``."""
    suites = {}
    for pool, stem in task_suite.SUITE_FILES.items():
        tasks = task_suite.build_task_suite(pool, seed, tasks_dir, prefix, sandbox=_sandbox_level())
        suites[stem] = [t.line for t in tasks]
    return suites


def _training_runs(workspace: Path, seed: int, tmp: Path) -> list[tuple[Path, demo_tasks.DemoTask]]:
    """Every training task with the tree it runs on, written under ``tmp``: the sample workspace's tasks on its
    training copy, then the training projects' tasks on their trees."""
    clean = training_workspace(workspace, tmp / "clean")
    runs = [(clean, task) for task in demo_tasks.build_tasks("train", seed)]
    # A request asked twice with the same tools ("read README.md" in two projects) would make the same
    # first-step example twice, and the split could put one copy in train and the other in test.
    seen = {_request_key(task) for _, task in runs}
    trees: dict[str, Path] = {}
    for project, task in project_tasks.training_tasks(seed):
        if _request_key(task) in seen:
            continue
        seen.add(_request_key(task))
        if project.name not in trees:
            trees[project.name] = projects.materialize(project, tmp / "projects" / project.name)
        runs.append((trees[project.name], task))
    return runs


def _request_key(task: demo_tasks.DemoTask) -> tuple[Any, ...]:
    return task.prompt, task.system, task.toolset, task.foreign


def build_suite(workspace: Path, seed: int) -> list[dict[str, Any]]:
    """Held-out eval cases on the sample workspace (``suite.jsonl``)."""
    return suite_cases([(workspace, task) for task in demo_tasks.build_tasks("eval", seed)])


def build_project_suite(pool: str, seed: int) -> list[dict[str, Any]]:
    """Cases on held-out synthetic projects (pool "valid" or "test"), with the eval templates."""
    with tempfile.TemporaryDirectory(prefix="punie-suite-") as tmp:
        trees: dict[str, Path] = {}
        runs = []
        for project, task in project_tasks.held_out_tasks(pool, seed):
            if project.name not in trees:
                trees[project.name] = projects.materialize(project, Path(tmp) / project.name)
            runs.append((trees[project.name], task))
        return suite_cases(runs)


def build_foreign_suite(seed: int, pool: str = "test", count: int = 40) -> list[dict[str, Any]]:
    """No-tool questions offered other agents' tools: the right step is to answer without a call."""
    with tempfile.TemporaryDirectory(prefix="punie-suite-") as tmp:
        tasks = project_tasks.foreign_suite_tasks(seed, count, pool=pool)
        return suite_cases([(Path(tmp), task) for task in tasks])


def first_step_suites(source: Path, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The first-step suites. A validation suite shares no prompt with any reported suite, nor repeats one.

    Both draw their questions from the same held-out pools (few capitals, translations), so without this a
    recipe chosen on the validation suite would have seen some of the very cases it is reported on.
    """

    tests = {"suite": build_suite(source, seed), "suite-projects": build_project_suite("test", seed),
             "suite-notool": build_foreign_suite(seed)}
    taken = {prompt_key(c["messages"]) for cases in tests.values() for c in cases}

    def held_apart(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for case in cases:
            if (key := prompt_key(case["messages"])) not in taken:
                taken.add(key)
                kept.append(case)
        return kept

    notool = len(tests["suite-notool"])  # the same size as the reported one: draw more, keep the first unique
    return tests | {"suite-projects-valid": held_apart(build_project_suite("valid", seed)),
                    "suite-notool-valid": held_apart(build_foreign_suite(seed, "valid", 3 * notool))[:notool]}


def build_improve_suite(source: Path, seed: int, taken: set[str]) -> list[dict[str, Any]]:
    """Training-side cases for ``punie improve`` (``improve.jsonl``): the training tasks drawn again with
    ``seed``, on the training copy of the sample workspace and the training projects, keeping each request
    once and only those whose prompt is not in ``taken`` (every exported record's and eval case's prompt).

    So the suite asks new requests of the kinds the adapter was trained on (other files, arguments and
    phrasing draws), none of them a held-out file, project or template, and none the SFT data answered:
    drafts on trained requests nearly all pass and pair nothing.
    """
    with tempfile.TemporaryDirectory(prefix="punie-improve-") as tmp:
        kept = []
        for case in suite_cases(_training_runs(source, seed, Path(tmp))):
            if (key := prompt_key(case["messages"])) not in taken:
                taken.add(key)
                kept.append(case)
    counters: dict[str, int] = {}  # numbered again, without the gaps the dropped cases left
    for case in kept:
        counters[case["category"]] = counters.get(case["category"], 0) + 1
        case["id"] = f"{case['category']}-{counters[case['category']]:03d}"
    return kept


def suite_cases(runs: list[tuple[Path, demo_tasks.DemoTask]]) -> list[dict[str, Any]]:
    """One case per task: system prompt, request and tools, and the policy's first step as the expectation."""
    cases = []
    counters: dict[str, int] = {}
    for root, task in runs:
        schemas = tool_schemas(tools_for(task, root))
        first = policy_for(task).complete([], schemas).parsed
        counters[task.category] = counters.get(task.category, 0) + 1
        expect: dict[str, Any] = ({"tool_calls": [_expected_call(c, root) for c in first.tool_calls]}
                                  if first.tool_calls else {"no_tool_call": True})
        cases.append({"id": f"{task.category}-{counters[task.category]:03d}", "category": task.category,
                      "messages": [{"role": "system", "content": task.system or DEFAULT_SYSTEM},
                                   {"role": "user", "content": task.prompt}],
                      "tools": schemas, "scorer": "tool_call", "expect": expect})
    return cases


def _expected_call(call: ToolCall, workspace: Path) -> dict[str, Any]:
    """The policy's call, with the harmless spellings of its path also accepted ("./a", "dir/")."""
    arguments = dict(call.arguments)
    path = arguments.get("path")
    if isinstance(path, str) and path != ".":
        spellings = [path, f"./{path}"] + ([f"{path}/"] if (workspace / path).is_dir() else [])
        arguments["path"] = {"one_of": spellings}
    return {"name": call.name, "arguments": arguments}


def generate(out_dir: Path | str, *, seed: int = 42, store: TraceStore | None = None, tokenizer: Any = None,
             workspace: Path | str | None = None, tasks_dir: Path | str | None = None) -> DemoData:
    """Record the demo traces into ``store`` (replacing earlier demo traces there), export the passed ones
    into ``out_dir`` (train/valid/test.jsonl, export.json), write the first-step eval suites (suite*.jsonl)
    and the held-out task suites (tasks.jsonl, tasks-valid.jsonl) with their projects under ``tasks_dir``
    (default: ``tasks`` beside ``out_dir``), and ``improve.jsonl``, the training suite of ``punie improve``
    (:func:`build_improve_suite`, drawn with ``seed + 1``)."""
    source = Path(workspace) if workspace is not None else default_workspace()
    if not (source / "README.md").is_file():
        raise DataError(f"sample workspace {source} not found; pass the path of punie's data/workspace.")
    out_dir = Path(out_dir)
    own_store = store is None
    store = store if store is not None else TraceStore()
    try:
        store.delete(source=DEMO_SOURCE)
        count = record_traces(store, source, seed)
        report = export_traces(store, out_dir, seed=seed, tokenizer=tokenizer, source=DEMO_SOURCE, only_passed=True)
    finally:
        if own_store:
            store.close()
    if report.rejected:
        raise DataError(f"{len(report.rejected)} demo traces failed validation, e.g. trace "
                        f"{report.rejected[0].trace_id}: {report.rejected[0].reason}")
    suites = first_step_suites(source, seed)
    taken = set().union(*(data_prompts(path) for path in report.files.values()),
                        *({prompt_key(c["messages"]) for c in cases} for cases in suites.values()))
    suites["improve"] = build_improve_suite(source, seed + 1, taken)
    tasks_root = Path(tasks_dir) if tasks_dir is not None else out_dir.parent / "tasks"
    suites |= write_task_suites(tasks_root, Path(os.path.relpath(tasks_root, out_dir)).as_posix(), seed)
    files = {**report.files, "manifest": out_dir / "export.json"}
    for name, cases in suites.items():
        files[name] = out_dir / f"{name}.jsonl"
        fileio.write_text(files[name], "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases))
    return DemoData(out_dir=out_dir, files=files, traces=count, suite_cases=len(suites["suite"]), export=report,
                    suites={name: len(cases) for name, cases in suites.items()}, tasks_dir=tasks_root)
