"""Tiny synthetic workflows and worker sets for the planner's model tests (not the shipped generator).

Six templates with distinct shapes (a chain, a fan-in, single steps), two phrasings each, every
subtask's description a span of the instruction (as in the shipped synthetic data); the worker
label of each subtask is the worker with the best success rate on its type, as the supervision would
choose at lam = mu = 0.
"""

from __future__ import annotations

import random
from pathlib import Path

from punie.planner.workers import WorkerProfile, WorkerSet, write_workers
from punie.planner.workflow import SUBTASK_TYPES, Workflow, write_workflows

NAMES = ["parse_date", "load_config", "main", "render", "tokenize", "merge_rows", "send_mail", "cache_get"]
FILES = ["app.py", "README.md", "utils.py", "setup.cfg", "notes.txt", "cli.py"]
# template -> (phrasings of its clauses {0}, {1}, ..., the clauses (each a subtask's description, so a span of
# the instruction), their types, edges as (earlier, later) positions)
TEMPLATES: dict[str, tuple[list[str], list[str], list[str], list[tuple[int, int]]]] = {
    "find-fix": (["{0}, then {1} and then {2}", "first {0}; next {1}; finally {2}"],
                 ["find where {n} is defined", "read its file", "fix the docstring of {n}"],
                 ["search", "read", "edit"], [(0, 1), (1, 2)]),
    "list": (["{0}", "please {0}"], ["list the files in the project"], ["list"], []),
    "run-explain": (["{0} and then {1}", "first {0}; finally {1}"], ["run the tests", "tell me what failed"],
                    ["run", "answer"], [(0, 1)]),
    "read-summarise": (["{0}, then {1}", "first {0}; finally {1}"], ["read {f}", "summarise it"],
                       ["read", "answer"], [(0, 1)]),
    "compare": (["{0} and {1}, then {2}", "first {0} and {1}; finally {2}"], ["read {f}", "read {g}",
                "tell me how they differ"], ["read", "read", "answer"], [(0, 2), (1, 2)]),
    "list-read-edit": (["{0}, then {1} and then {2}", "first {0}; next {1}; finally {2}"],
                       ["list the files", "open {f}", "update the header of {f}"],
                       ["list", "read", "edit"], [(0, 1), (1, 2)]),
}


def worker(name: str, success: dict[str, float] | float, tokens: float = 20.0, latency: float = 1.0,
           price: float = 1.0) -> WorkerProfile:
    rates = success if isinstance(success, dict) else dict.fromkeys(SUBTASK_TYPES, success)
    return WorkerProfile(name=name, success=rates, tokens=dict.fromkeys(SUBTASK_TYPES, tokens),
                         latency_s=dict.fromkeys(SUBTASK_TYPES, latency), price_per_token=price)


def two_workers() -> WorkerSet:
    """'base' is better at answering and listing, 'demo' at tool work: the best worker depends on the type."""
    base = {"list": 0.9, "read": 0.6, "search": 0.5, "edit": 0.4, "run": 0.5, "answer": 0.9}
    demo = {"list": 0.7, "read": 0.9, "search": 0.9, "edit": 0.8, "run": 0.85, "answer": 0.6}
    return WorkerSet(workers=[worker("base", base, tokens=20), worker("demo", demo, tokens=30)])


def workflows(n: int, seed: int = 0, workers: WorkerSet | None = None) -> list[Workflow]:
    rng = random.Random(seed)
    profiles = (workers or two_workers()).workers
    out = []
    for i in range(n):
        template = rng.choice(sorted(TEMPLATES))
        phrasings, clauses, types, edges = TEMPLATES[template]
        names = {"n": rng.choice(NAMES), "f": rng.choice(FILES), "g": rng.choice(FILES)}
        parts = [c.format(**names) for c in clauses]
        subtasks = [{"id": f"s{j + 1}", "type": t, "description": parts[j],
                     "worker": max(profiles, key=lambda w, t=t: w.success[t]).name} for j, t in enumerate(types)]
        out.append(Workflow.model_validate({
            "id": f"wf-{seed}-{i}", "instruction": rng.choice(phrasings).format(*parts), "template": template,
            "source": "synthetic", "subtasks": subtasks, "edges": [(f"s{a + 1}", f"s{b + 1}") for a, b in edges]}))
    return out


def write_data(directory: Path, n_train: int = 120, n_valid: int = 30) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_workflows(directory / "train.jsonl", workflows(n_train, seed=1))
    write_workflows(directory / "valid.jsonl", workflows(n_valid, seed=2))
    write_workers(directory / "workers.json", two_workers())
    return directory
