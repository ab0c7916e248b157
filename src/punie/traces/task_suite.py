"""The demo's held-out task suites: agent tasks on projects never trained on, judged by checks.

``tasks.jsonl`` (reported) asks about the first :data:`SUITE_PROJECTS` ``test``-pool
projects of :mod:`punie.traces.projects`, ``tasks-valid.jsonl`` (for choosing a
recipe) about ``valid``-pool ones; training uses only ``train``-pool projects, so
no project name, directory, file stem or identifier of a task is trained on. The
projects are written out as directories (``data/tasks/<project>``) that the task
lines name as their workspace; every episode works on a fresh copy.

The requests are those of :func:`punie.traces.project_tasks.file_tasks` (the same
kinds of arguments as training), phrased with :data:`TASK_TEMPLATES`, which no
training or first-step suite uses, and each asks for an answer taken from a tool
result. The checks are :func:`punie.traces.grounded.task_checks` on the written
tree, so a task passes only when the final answer quotes the real content,
listing, count, changed line or command output (and the files are right).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie.errors import DataError
from punie.traces import grounded, project_tasks, projects
from punie.traces.demo_tasks import DemoTask

SUITE_PROJECTS = {"test": 4, "valid": 3}
SUITE_FILES = {"test": "tasks", "valid": "tasks-valid"}
MAX_STEPS = 4
QUOTE = 3  # a run answer must quote this many output lines (fewer when the command prints fewer)
# Held-out phrasings, one or two per kind; each asks for the answer from the result.
TASK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "read": ("Tell me what {path} says.", "What does {path} contain? Quote it."),
    "list": ("Which entries does the folder {path} have?",),
    "search": ("How many lines contain {pattern}, and where?",),
    "search_in": ("How many lines under {path} contain {pattern}?",),
    "locate": ("In which file and on which line is {pattern} defined?",),
    "create": ("Create a new file {path} whose content is: {text}",),
    "append": ("Append the following line to {path}: {text}",),
    "replace": ("Replace {old} by {new} in {path} and tell me the changed line.",),
    "run": ("Run `{command}` and quote what it prints.", "What output does `{command}` give?"),
}


@dataclass(frozen=True)
class SuiteTask:
    """One task of a suite: the task-suite line and the demo task (for the scripted 'oracle' policy)."""

    line: dict[str, Any]
    task: DemoTask
    directory: str  # the project's directory under the tasks folder


def suite_projects(pool: str, seed: int) -> list[projects.Project]:
    """The held-out projects a suite asks about (the first ones of the first-step suites' pool)."""
    return projects.make_projects(pool, project_tasks.PROJECT_COUNTS[pool], seed)[: SUITE_PROJECTS[pool]]


def project_dir(project: projects.Project) -> str:
    return f"{project.pool}-{project.name}"


def _only_generated(root: Path, project: projects.Project) -> None:
    """The project directory holds the generated files only: a stale or added file would make the checks lie."""
    extra = sorted(rel for rel in (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
                   if rel not in project.files)
    if extra:
        raise DataError(f"{root} has files the generator did not write ({', '.join(extra[:3])}); "
                        "remove the directory and generate again")


def build_task_suite(pool: str, seed: int, tasks_dir: Path, workspace_prefix: str, *,
                     sandbox: str = "auto") -> list[SuiteTask]:
    """Write the pool's projects under ``tasks_dir`` and return the suite's tasks, checks computed on them.

    ``workspace_prefix`` is the tasks folder as the suite file names it (``../tasks``: relative to the file).
    """
    rng = random.Random(f"{seed}:task-suite:{pool}")
    counters: dict[str, int] = {}
    out = []
    for project in suite_projects(pool, seed):
        root = projects.materialize(project, tasks_dir / project_dir(project))
        _only_generated(root, project)
        for kind, plan, values, args in project_tasks.file_tasks(project, rng, side=1):
            prompt = rng.choice(TASK_TEMPLATES[kind]).format(**values)
            category = project_tasks.kind_category(kind)
            task = DemoTask(category, prompt, prompt, plan, args, project=project.name)
            found = grounded.task_checks(task, root, sandbox=sandbox, quote=QUOTE)
            counters[category] = counters.get(category, 0) + 1
            line = {"id": f"{category}-{counters[category]:03d}", "category": category, "instruction": prompt,
                    "workspace": f"{workspace_prefix}/{project_dir(project)}", "max_steps": MAX_STEPS,
                    "checks": found.checks + [{"type": "max_tool_calls", "max": MAX_STEPS - 1}]}
            out.append(SuiteTask(line, task, project_dir(project)))
    return out
