"""A generator of SYNTHETIC planner workflows: templated instructions about code projects.

Nothing here was written by a user or recorded from an agent. Each workflow is made from a
*template* (a composition: which subtasks, of which types, depending on which) and a *phrasing
family* (how the steps are joined into one instruction), with file, folder, symbol and command
names drawn from small pools. The subtasks are listed in the order the instruction mentions them,
which is a topological order of the edges, so a plan decoded left to right can match them
position by position.

Edges are data dependencies: an edit needs the search that found the symbol, an answer needs
the reads it summarises. Templates with steps that do not depend on each other (two reads feeding
one answer, a listing and a search feeding an edit) give parallel branches, so edges are not
always a chain.

Supervision: each subtask's ``worker`` is the one the expected-reward-maximising assignment
(:func:`punie.planner.simulate.best_assignment`) picks for the whole workflow under the given
worker profiles at the stated ``lam``/``mu``; ``outcome`` is one simulated run of that assignment
(success drawn from the worker's rate, its mean tokens and seconds), so outcomes are simulated too.

Splits are by template *and* phrasing family: :data:`SPLITS` gives each split its own templates
and its own families, so a held-out workflow is both composed and phrased unlike any training
one. The output is a pure function of the seed, the counts and the worker profiles.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from punie import fileio
from punie.errors import ConfigError
from punie.planner.simulate import best_assignment, expected
from punie.planner.workers import WorkerSet, read_workers
from punie.planner.workflow import Outcome, Subtask, Workflow, write_workflows

DIRS = ("src/billing", "src/auth", "pkg/cactus_kit", "lib/parser", "app/api", "tools", "src/storage",
        "pkg/weather", "src/cli", "lib/render")
MODULES = ("utils", "models", "config", "client", "handlers", "schema", "cache", "core", "io", "dates")
SYMBOLS = ("parse_date", "load_config", "Invoice", "retry", "render_page", "TokenCache", "slugify",
           "fetch_rates", "merge_rows", "validate_email", "Session", "to_json")
COMMANDS = ("pytest -q", "python -m pytest tests", "make test", "ruff check src", "tox -e py311")

# The words of each step, by subtask type. Shared by every split: a planner must learn what a step
# *is*; what is held out is how steps are composed (templates) and joined (families).
CLAUSES: dict[str, tuple[str, ...]] = {
    "list": ("list the files in {dir}", "see what is in {dir}", "show the contents of {dir}"),
    "read": ("read {file}", "open {file}", "look at {file}", "show me {file}"),
    "search": ("find where {symbol} is defined", "search for {symbol}", "locate the uses of {symbol}"),
    "edit": ("fix the docstring of {symbol} in {file}", "rename {symbol} to {new} in {file}",
             "add type hints to {symbol} in {file}", "update {file} so {symbol} handles None"),
    "run": ("run {cmd}", "run the tests with {cmd}", "check that {cmd} passes"),
    "answer": ("tell me what {symbol} returns", "summarise what you found", "explain how {symbol} works",
               "say whether {symbol} is still used"),
}

# A template: the subtask types and the edges (by position), and a name.
Template = tuple[str, tuple[str, ...], tuple[tuple[int, int], ...]]
TEMPLATES: dict[str, Template] = {t[0]: t for t in (
    ("find-then-edit", ("search", "edit"), ((0, 1),)),
    ("read-then-answer", ("read", "answer"), ((0, 1),)),
    ("list-read-answer", ("list", "read", "answer"), ((0, 1), (1, 2))),
    ("search-read-edit-run", ("search", "read", "edit", "run"), ((0, 1), (1, 2), (2, 3))),
    ("parallel-reads-answer", ("read", "read", "answer"), ((0, 2), (1, 2))),
    ("edit-then-run", ("edit", "run"), ((0, 1),)),
    ("list-search-edit", ("list", "search", "edit"), ((0, 2), (1, 2))),
    ("run-read-edit-run", ("run", "read", "edit", "run"), ((0, 1), (1, 2), (2, 3))),
    ("search-then-answer", ("search", "answer"), ((0, 1),)),
    ("parallel-edits-run", ("edit", "edit", "run"), ((0, 2), (1, 2))),
    ("read-edit-run", ("read", "edit", "run"), ((0, 1), (1, 2))),
    ("list-then-answer", ("list", "answer"), ((0, 1),)),
    # held out (valid)
    ("search-parallel-reads-answer", ("search", "read", "read", "answer"), ((0, 1), (0, 2), (1, 3), (2, 3))),
    ("list-read-edit", ("list", "read", "edit"), ((0, 1), (1, 2))),
    ("parallel-searches-answer", ("search", "search", "answer"), ((0, 2), (1, 2))),
    # held out (test)
    ("read-search-edit-run", ("read", "search", "edit", "run"), ((0, 2), (1, 2), (2, 3))),
    ("list-parallel-reads-answer", ("list", "read", "read", "answer"), ((0, 1), (0, 2), (1, 3), (2, 3))),
    ("search-edit-run-answer", ("search", "edit", "run", "answer"), ((0, 1), (1, 2), (2, 3))),
)}


# A phrasing family joins stages (groups of parallel steps, in order) into one instruction.
def _then(stages: list[list[str]]) -> str:
    text = ", then ".join(" and ".join(s) for s in stages)
    return text[0].upper() + text[1:] + "."


def _steps(stages: list[list[str]]) -> str:
    middle = ("Next", "Then", "After that")
    words = ["First", *(middle[i % 3] for i in range(len(stages) - 2)), "Finally"] if len(stages) > 1 else ["First"]
    return " ".join(f"{w} {' and '.join(s)}." for w, s in zip(words, stages, strict=True))


def _need(stages: list[list[str]]) -> str:
    return "I need you to " + " and then ".join(" and ".join(s) for s in stages) + "."


def _once(stages: list[list[str]]) -> str:
    head, *rest = [" and ".join(s) for s in stages]
    return f"Please {head}" + "".join(f"; once that is done, {r}" for r in rest) + "."


def _could(stages: list[list[str]]) -> str:
    head, *rest = [" and ".join(s) for s in stages]
    tail = "".join(f", after which {r}" for r in rest[:-1]) + (f", and finally {rest[-1]}" if rest else "")
    return f"Could you {head}{tail}?"


FAMILIES: dict[str, Callable[[list[list[str]]], str]] = {
    "then": _then, "steps": _steps, "need": _need, "once": _once, "could": _could}

# Which templates and families each split draws from: disjoint in both (tests check it).
SPLITS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": (tuple(list(TEMPLATES)[:12]), ("then", "steps", "need")),
    "valid": (tuple(list(TEMPLATES)[12:15]), ("once",)),
    "test": (tuple(list(TEMPLATES)[15:]), ("could",)),
}
DEFAULT_COUNTS = {"train": 400, "valid": 100, "test": 100}


@dataclass(frozen=True)
class GenerateSettings:
    seed: int = 0
    lam: float = 0.0  # the price of cost in the supervision's reward (0: the most successful assignment)
    mu: float = 0.0  # the price of latency


def _stages(types: tuple[str, ...], edges: tuple[tuple[int, int], ...]) -> list[list[int]]:
    """Positions grouped by depth in the DAG: steps of one stage do not depend on each other."""
    depth = [0] * len(types)
    for a, b in sorted(edges, key=lambda e: e[1]):
        depth[b] = max(depth[b], depth[a] + 1)
    return [[i for i in range(len(types)) if depth[i] == d] for d in range(max(depth) + 1)]


def _names(rng: random.Random) -> list[dict[str, str]]:
    """Two sets of names for one workflow. A workflow's steps share the first set (the edit changes the
    file that was read, the symbol that was searched for); a second step of the same type, a parallel
    branch, takes the second set."""
    folders = rng.sample(DIRS, 2)
    symbols = rng.sample(SYMBOLS, 2)
    cmd = rng.choice(COMMANDS)
    return [{"dir": f, "file": f"{f}/{rng.choice(MODULES)}.py", "symbol": s, "new": f"{s}_v2", "cmd": cmd}
            for f, s in zip(folders, symbols, strict=True)]


def _clauses(types: tuple[str, ...], rng: random.Random) -> list[str]:
    names = _names(rng)
    seen: dict[str, int] = {}
    out = []
    for kind in types:
        n = seen.get(kind, 0)
        seen[kind] = n + 1
        out.append(rng.choice(CLAUSES[kind]).format(**names[min(n, 1)]))
    return out


def make_workflow(wid: str, template: str, family: str, rng: random.Random, workers: WorkerSet,
                  settings: GenerateSettings) -> Workflow:
    _, types, edges = TEMPLATES[template]
    clauses = _clauses(types, rng)
    stages = _stages(types, edges)
    # The families say "A and B, then C": every step of a stage feeds every step of the next, and
    # steps are listed stage by stage. A template that is not so layered could not be phrased truly.
    layered = {(a, b) for one, two in zip(stages, stages[1:], strict=False) for a in one for b in two}
    if [i for s in stages for i in s] != list(range(len(types))) or layered != set(edges):
        raise ValueError(f"template {template!r} is not layered stage by stage in its listed order")
    instruction = FAMILIES[family]([[clauses[i] for i in s] for s in stages])
    ids = [f"s{i + 1}" for i in range(len(types))]
    plan = Workflow(id=wid, instruction=instruction, template=f"{template}/{family}", source="synthetic",
                    subtasks=[Subtask(id=i, type=t, description=c)  # type: ignore[arg-type]
                              for i, t, c in zip(ids, types, clauses, strict=True)],
                    edges=[(ids[a], ids[b]) for a, b in edges])
    return supervise(plan, workers, settings, rng)


def supervise(plan: Workflow, workers: WorkerSet, settings: GenerateSettings, rng: random.Random) -> Workflow:
    """``plan`` with each subtask's supervised worker and one simulated outcome per subtask and overall."""
    assignment = best_assignment(plan, workers, settings.lam, settings.mu)
    profiles = workers.by_name()
    subtasks = []
    for s in plan.subtasks:
        p = profiles[assignment[s.id]]
        outcome = Outcome(success=rng.random() < p.success[s.type], tokens=round(p.tokens[s.type]),
                          latency_s=round(p.latency_s[s.type], 3))
        subtasks.append(s.model_copy(update={"worker": p.name, "outcome": outcome}))
    latency = expected(plan, assignment, workers).latency_s  # the critical path; success is drawn above
    total = Outcome(success=all(s.outcome.success for s in subtasks if s.outcome),
                    tokens=sum(s.outcome.tokens for s in subtasks if s.outcome), latency_s=round(latency, 3))
    return plan.model_copy(update={"subtasks": subtasks, "outcome": total})


def generate_split(split: str, count: int, workers: WorkerSet, settings: GenerateSettings) -> list[Workflow]:
    templates, families = SPLITS[split]
    out = []
    for k in range(count):
        # One generator per workflow: changing one count does not reshuffle the other splits.
        rng = random.Random(f"{settings.seed}:{split}:{k}")
        template, family = templates[k % len(templates)], rng.choice(families)
        out.append(make_workflow(f"{split}-{k + 1:04d}", template, family, rng, workers, settings))
    return out


def generate(workers: WorkerSet, settings: GenerateSettings | None = None,
             counts: dict[str, int] | None = None) -> dict[str, list[Workflow]]:
    settings = settings or GenerateSettings()
    return {split: generate_split(split, n, workers, settings) for split, n in (counts or DEFAULT_COUNTS).items()}


def write_splits(out_dir: Path, splits: dict[str, list[Workflow]]) -> dict[str, Path]:
    paths = {}
    for name, workflows in splits.items():
        paths[name] = Path(out_dir) / f"{name}.jsonl"
        write_workflows(paths[name], workflows)
    return paths


def write_synthetic(out_dir: Path, workers_path: Path, *, seed: int = 0, lam: float = 0.0, mu: float = 0.0,
                    counts: dict[str, int] | None = None) -> dict[str, tuple[Path, int]]:
    """Generate the splits into ``out_dir`` with a manifest.json saying how (the command to remake them)."""
    workers = read_workers(workers_path)
    counts = counts or DEFAULT_COUNTS
    bad = {k: v for k, v in counts.items() if v < 1}
    if bad:
        raise ConfigError(f"every split needs at least one workflow; got {bad}")
    settings = GenerateSettings(seed=seed, lam=lam, mu=mu)
    splits = generate(workers, settings, counts)
    paths = write_splits(Path(out_dir), splits)
    manifest = {"synthetic": True, "generator": "punie.planner.generate", "settings": asdict(settings),
                "counts": counts, "workers": str(workers_path),
                "workers_sha256": hashlib.sha256(Path(workers_path).read_bytes()).hexdigest(),
                "splits": {name: {"templates": list(SPLITS[name][0]), "families": list(SPLITS[name][1])}
                           for name in counts},
                "command": (f"punie planner data --out {out_dir} --workers {workers_path} --seed {seed} --lam {lam} "
                            f"--mu {mu} " + " ".join(f"--{k} {v}" for k, v in counts.items()))}
    fileio.write_json(Path(out_dir) / "manifest.json", manifest)
    return {name: (paths[name], len(splits[name])) for name in counts}
