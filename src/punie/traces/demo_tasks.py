"""The tasks of the shipped demo data: phrasing templates and argument values.

Everything is split in two. Training traces use the ``TRAIN`` templates and run
on a copy of the sample workspace with the ``HELD_OUT`` files and directories
removed; the eval suite uses the ``EVAL`` templates and asks about the held-out
files, directories, search terms, commands and texts. So no eval phrasing,
file or argument value appears in the training data (a test checks this).

A task is ``DemoTask(category, prompt, template, plan, args)``: ``plan`` names a
scripted policy in :mod:`punie.traces.demo_data` and ``args`` are its arguments.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

CATEGORIES = ("read", "list", "search", "edit", "run", "answer")

# Held out of training entirely: these files and directories are deleted from the
# workspace copy the training traces run on.
HELD_OUT_FILES = (
    "src/tally/storage.py", "tests/test_storage.py", "scripts/export_csv.py", "scripts/audit_stock.py",
    "docs/architecture.md", "data/suppliers.json", "config/database.ini", "notes/meeting-2024-03.md",
    "notes/ideas.txt", "notes/archive/old-plan.md", "deploy/Dockerfile", "deploy/nginx.conf",
    "assets/README.txt", "assets/labels/price-tag.txt",
)
HELD_OUT_DIRS = ("notes", "notes/archive", "deploy", "assets", "assets/labels")

TRAIN_FILES = (
    "README.md", "pyproject.toml", "CONTRIBUTING.md", "config/settings.toml", "config/logging.ini",
    "src/tally/__init__.py", "src/tally/inventory.py", "src/tally/pricing.py", "src/tally/report.py",
    "src/tally/cli.py", "tests/test_inventory.py", "tests/test_pricing.py", "scripts/count_items.py",
    "scripts/low_stock.py", "scripts/check_prices.py", "scripts/list_skus.py", "scripts/show_config.py",
    "docs/usage.md", "docs/changelog.md", "data/stock.csv",
)
MISSING_FILES = ("src/tally/utils.py", "docs/install.md", "config/prod.toml", "LICENSE")
TRAIN_DIRS = ("src", "src/tally", "tests", "scripts", "config", "docs", "data")
MISSING_DIRS = ("build", "dist")


@dataclass(frozen=True)
class DemoTask:
    category: str
    prompt: str
    template: str
    plan: str
    args: tuple[Any, ...]
    project: str = ""  # the synthetic project it runs on ("" for the sample workspace)
    # (punie's tool name, the name this task's schema gives it), in schema order; () means the five as they are
    toolset: tuple[tuple[str, str], ...] = ()
    foreign: tuple[str, ...] = ()  # another agent's tools (punie.traces.project_tasks.FOREIGN_TOOLS) instead
    system: str | None = None  # the system prompt, when not punie's default


@dataclass(frozen=True)
class Phrasing:
    """Templates for one kind of task, for training and for the eval suite (disjoint)."""

    plan: str
    train: tuple[str, ...]
    eval: tuple[str, ...]


PHRASINGS: dict[str, Phrasing] = {
    "read": Phrasing("read", ("Show me {path}.", "What's in {path}?", "Read {path}.", "Can you read the file {path}?",
                              "Print the contents of {path}.", "Let me see {path}, please.",
                              "Show the text of {path}.", "I need to see what {path} says.", "Cat {path} for me.",
                              "What does the file {path} contain?", "Could you open {path}?", "Fetch {path}."),
                     ("Open {path} and show me what it says.", "I'd like to look at {path}.",
                      "Display the file {path} for me.")),
    "list": Phrasing("list", ("List the files in {path}.", "What files are in {path}?",
                              "Show me what's inside {path}.", "What does the {path} directory contain?",
                              "Which files live in {path}?", "ls {path}, please.",
                              "Show the contents of the {path} folder.", "List everything under {path}.",
                              "What's in the {path} directory?",
                              "Can you list {path}?"),
                     ("Give me a listing of {path}.", "Enumerate everything under {path}.",
                      "What can I find in the folder {path}?")),
    "list_root": Phrasing("list", ("List the files in the project root.", "What files does this project have?",
                                   "Show me the top-level directory.", "What's in the workspace?"), ()),
    "search": Phrasing("search", ("Search for {pattern}.", "Find {pattern} in the project.",
                                  "Which files mention {pattern}?", "Where is {pattern} used?",
                                  "Look for {pattern} in the code.", "Find every line containing {pattern}.",
                                  "Grep for {pattern}.", "Where does {pattern} appear?",
                                  "Search the project for the text {pattern}.", "Which lines contain {pattern}?",
                                  "Find all uses of {pattern}."),
                       ("Tell me which files contain {pattern}.", "Hunt down every occurrence of {pattern}.",
                        "Is {pattern} referenced anywhere?")),
    "search_in": Phrasing("search", ("Search {path} for {pattern}.", "Find {pattern} in the {path} folder.",
                                     "How many lines in {path} mention {pattern}?"),
                          ("Look through {path} for {pattern}.",)),
    "locate": Phrasing("locate", ("Find where {pattern} is defined and show me that file.",
                                  "Which file defines {pattern}? Open it."),
                       ("Locate the definition of {pattern} and open its file.",)),
    "create": Phrasing("create", ("Create {path} with this text: {text}", "Make a new file called {path} containing: "
                                  "{text}", "Write a file {path} that says: {text}"),
                       ("Save the following into a new file {path}: {text}", "Put this text in {path}: {text}")),
    "append": Phrasing("append", ("Append this line to {path}: {text}", "Add a line to the end of {path}: {text}"),
                       ("At the bottom of {path}, add: {text}",)),
    "replace": Phrasing("replace", ("In {path}, replace {old} with {new}.", "Change {old} to {new} in {path}."),
                        ("Edit {path} so that {old} becomes {new}.",)),
    "run": Phrasing("run", ("Run `{command}`.", "Please run `{command}` and tell me the output.",
                            "Execute `{command}`.", "Can you run `{command}` for me?", "What does `{command}` print?",
                            "Run this command: `{command}`", "Try running `{command}`.",
                            "Show me the output of `{command}`.", "Please execute `{command}`."),
                    ("Go ahead and launch `{command}`.", "I need the output of `{command}`.",
                     "Kick off `{command}` and report back.")),
    "run_script": Phrasing("run", ("Run the script {script}.", "Execute the {script} script.",
                                   "What does {script} print?"),
                           ("Start {script} and show me its output.",)),
    "sum": Phrasing("answer", ("What is {a} plus {b}?", "Add {a} and {b}.", "What is {a} + {b}?",
                            "What do {a} and {b} add up to?", "{a} + {b} = ?"),
                    ("Compute the sum of {a} and {b}, please.",)),
    "product": Phrasing("answer", ("What is {a} times {b}?", "Multiply {a} by {b}.", "What is {a} * {b}?",
                                "What's the product of {a} and {b}?"), ("How much is {a} x {b}?",)),
    "acronym": Phrasing("answer", ("What does {term} stand for?", "What is {term} short for?",
                                    "Expand the abbreviation {term}."),
                        ("Spell out the acronym {term}.",)),
    "concept": Phrasing("answer", ("Explain what a {term} is in one sentence.", "What is a {term} in programming?",
                                    "Define {term} briefly."),
                        ("In one sentence, what is a {term}?",)),
}

SEARCH_TRAIN = ("load_stock", "total_units", "low_stock", "price_with_tax", "apply_discount", "TAX_RATE",
                "MAX_DISCOUNT", "format_report", "STOCK_FILE", "threshold", "argparse", "currency", "Stapler",
                "tax_rate", "rotate_days", "version", "ROOT", "pytest", "docstrings", "Eraser")
SEARCH_MISSING = ("TODO", "FIXME", "password", "deprecated")
SEARCH_IN_TRAIN = (("src", "import"), ("docs", "python"), ("tests", "assert"), ("config", "name"),
                   ("scripts", "print"), ("src/tally", "def"), ("docs", "threshold"), ("scripts", "load_stock"))
LOCATE_TRAIN = ("load_stock", "total_units", "low_stock", "price_with_tax", "apply_discount", "format_report", "main")
SEARCH_EVAL = ("save_snapshot", "SNAPSHOT_DIR", "load_snapshot", "pool_size", "find_negative", "loyalty",
               "lead_days", "proxy_pass", "barcode", "Paperworks")
SEARCH_IN_EVAL = (("notes", "supplier"), ("deploy", "listen"), ("assets", "label"))
LOCATE_EVAL = ("save_snapshot", "find_negative", "load_snapshot")

CREATE_TRAIN_PATHS = ("todo.txt", "docs/faq.md", "docs/roadmap.md", "config/local.ini", "tests/fixtures.txt",
                      "CHANGES.txt", "docs/team.md", "shopping-list.txt", "data/returns.csv", "scripts/usage.txt")
CREATE_TRAIN_TEXTS = ("restock pencils on Monday", "Ask the printer for a new quote.", "max_items = 100",
                      "Opening hours: 9 to 17", "Remember to back up the stock file.", "sku,reason",
                      "Alice handles orders; Bob handles returns.", "Check prices every Friday.",
                      "version 0.4 will add a web page", "Rulers are out of stock.")
CREATE_EVAL_PATHS = ("notes/todo.md", "deploy/env.txt", "assets/labels/sale.txt", "notes/next-steps.txt")
CREATE_EVAL_TEXTS = ("call the supplier about delivery delays", "Sale: twenty percent off all folders",
                     "HOST=shop.internal", "Order more glue sticks before August.")
APPEND_TRAIN = (("config/logging.ini", "format = plain"), ("config/settings.toml", "country = \"DE\""),
                ("docs/changelog.md", "- Next: add a web page."), ("CONTRIBUTING.md", "4. Be kind in reviews."),
                ("data/stock.csv", "B8,Scissors,6,4.50"), ("docs/usage.md", "Ask Alice if something breaks."),
                ("config/logging.ini", "max_size_mb = 5"), ("data/stock.csv", "B9,Tape,15,1.20"))
APPEND_EVAL = (("notes/ideas.txt", "loyalty stamps for regulars"), ("deploy/nginx.conf", "# managed by ops"),
               ("config/database.ini", "timeout = 30"), ("assets/README.txt", "Logos are in SVG."))
REPLACE_TRAIN = (("config/settings.toml", "Corner Books", "Corner Books & More"),
                 ("config/settings.toml", "EUR", "USD"),
                 ("config/logging.ini", "INFO", "DEBUG"), ("config/logging.ini", "14", "30"),
                 ("pyproject.toml", "0.3.1", "0.3.2"), ("src/tally/__init__.py", "0.3.1", "0.4.0"),
                 ("src/tally/pricing.py", "0.07", "0.08"), ("config/settings.toml", "Kiosk", "Shop"),
                 ("data/stock.csv", "Ruler", "Steel ruler"), ("docs/changelog.md", "First release", "Initial release"))
REPLACE_EVAL = (("config/database.ini", "5432", "6543"), ("notes/ideas.txt", "gift wrapping", "gift boxes"),
                ("deploy/Dockerfile", "3.12-slim", "3.13-slim"), ("data/suppliers.json", "Office Direct", "OfficeHub"))

RUN_TRAIN = ("python scripts/count_items.py", "python scripts/check_prices.py", "python scripts/list_skus.py",
             "python scripts/show_config.py", "python scripts/low_stock.py --threshold 3",
             "python scripts/low_stock.py --threshold 10", "python scripts/low_stock.py --threshold 20",
             "cat config/logging.ini", "cat data/stock.csv", "head -n 3 README.md", "head -n 5 docs/usage.md",
             "grep -n price src/tally/pricing.py", "grep -n def src/tally/inventory.py", "ls scripts",
             "ls src/tally", "echo hello", "python -c \"print(6 * 7)\"", "rm -rf build", "curl http://example.com",
             "make test", "npm install")
RUN_SCRIPT_TRAIN = ("scripts/count_items.py", "scripts/check_prices.py", "scripts/list_skus.py",
                    "scripts/show_config.py", "scripts/low_stock.py")
RUN_EVAL = ("python scripts/export_csv.py", "python scripts/audit_stock.py", "cat notes/ideas.txt",
            "head -n 2 deploy/Dockerfile", "grep -n pool_size config/database.ini", "ls notes",
            "python scripts/low_stock.py --threshold 17", "cat assets/labels/price-tag.txt")
RUN_SCRIPT_EVAL = ("scripts/export_csv.py", "scripts/audit_stock.py")

ACRONYMS = {"CSV": "comma-separated values", "JSON": "JavaScript Object Notation",
            "HTTP": "Hypertext Transfer Protocol",
            "SQL": "Structured Query Language", "API": "application programming interface",
            "CPU": "central processing unit", "RAM": "random-access memory", "URL": "Uniform Resource Locator",
            "HTML": "HyperText Markup Language", "PDF": "Portable Document Format"}
ACRONYMS_EVAL = {"USB": "Universal Serial Bus", "GPU": "graphics processing unit", "DNS": "Domain Name System",
                 "XML": "Extensible Markup Language", "SSH": "Secure Shell"}
CONCEPTS = {"variable": "A variable is a name that refers to a value.",
            "function": "A function is a named block of code you can call with arguments.",
            "list": "A list is an ordered collection of values.",
            "dictionary": "A dictionary maps keys to values.",
            "loop": "A loop runs the same code repeatedly.",
            "module": "A module is a file of code you can import."}
CONCEPTS_EVAL = {"tuple": "A tuple is an ordered collection that cannot change.",
                 "class": "A class is a template for creating objects.",
                 "string": "A string is a sequence of characters."}
CHAT = {"Hello!": "Hello! What would you like to do in the project?", "Who are you?":
        "I am a coding agent. I can read, search, edit and run things in this project.",
        "Thanks, that's all.": "You're welcome!", "Good job.": "Thank you!",
        "What can you do?": "I can list, read, search and write files here, and run allowed commands."}
CHAT_EVAL = {"Hey there, how are you today?": "I'm ready to help. What should I do?",
             "Cheers, bye for now.": "Goodbye!"}


def _combos(templates: Sequence[str], values: Sequence[dict[str, Any]], count: int, rng: random.Random
            ) -> list[tuple[str, dict[str, Any]]]:
    """``count`` distinct (template, values) pairs (all of them, repeated, when fewer exist), shuffled."""
    pairs = list(itertools.product(templates, values))
    rng.shuffle(pairs)
    return [pairs[i % len(pairs)] for i in range(count)] if pairs else []


def _tasks(kind: str, values: Sequence[dict[str, Any]], count: int, rng: random.Random, split: str,
           args: Callable[[dict[str, Any]], tuple[Any, ...]], category: str) -> list[DemoTask]:
    phrasing = PHRASINGS[kind]
    templates = phrasing.train if split == "train" else phrasing.eval
    return [DemoTask(category, template.format(**v), template, phrasing.plan, args(v))
            for template, v in _combos(templates, values, count, rng)]


def _numbers(rng: random.Random, count: int, low: int, high: int) -> list[dict[str, Any]]:
    return [{"a": rng.randint(low, high), "b": rng.randint(low, high)} for _ in range(count)]


def build_tasks(split: str, seed: int) -> list[DemoTask]:
    """The training tasks (``split="train"``) or the eval suite's tasks (``split="eval"``)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    rng = random.Random(f"{seed}:{split}")
    t = split == "train"

    def paths(items: Sequence[str]) -> list[dict[str, Any]]:
        return [{"path": p} for p in items]

    def patterns(items: Sequence[str]) -> list[dict[str, Any]]:
        return [{"pattern": p} for p in items]

    one_path: Callable[[dict[str, Any]], tuple[Any, ...]] = lambda v: (v["path"],)  # noqa: E731
    tasks = _tasks("read", paths(TRAIN_FILES + MISSING_FILES if t else HELD_OUT_FILES), 32 if t else 15, rng,
                   split, one_path, "read")
    tasks += _tasks("list", paths(TRAIN_DIRS + MISSING_DIRS if t else HELD_OUT_DIRS), 30 if t else 12, rng, split,
                    one_path, "list")
    if t:
        tasks += _tasks("list_root", [{}], 4, rng, split, lambda v: (".",), "list")
    tasks += _tasks("search", patterns(SEARCH_TRAIN + SEARCH_MISSING if t else SEARCH_EVAL), 22 if t else 8, rng,
                    split, lambda v: (v["pattern"], None), "search")
    tasks += _tasks("search_in", [{"path": d, "pattern": p} for d, p in (SEARCH_IN_TRAIN if t else SEARCH_IN_EVAL)],
                    8 if t else 3, rng, split, lambda v: (v["pattern"], v["path"]), "search")
    tasks += _tasks("locate", patterns(LOCATE_TRAIN if t else LOCATE_EVAL), 7 if t else 2, rng, split,
                    lambda v: (v["pattern"],), "search")
    creates = [{"path": p, "text": x} for p, x in zip(CREATE_TRAIN_PATHS if t else CREATE_EVAL_PATHS,
                                                      CREATE_TRAIN_TEXTS if t else CREATE_EVAL_TEXTS, strict=True)]
    tasks += _tasks("create", creates, 10 if t else 4, rng, split, lambda v: (v["path"], v["text"]), "edit")
    tasks += _tasks("append", [{"path": p, "text": x} for p, x in (APPEND_TRAIN if t else APPEND_EVAL)],
                    10 if t else 4, rng, split, lambda v: (v["path"], v["text"]), "edit")
    tasks += _tasks("replace", [{"path": p, "old": o, "new": n} for p, o, n in (REPLACE_TRAIN if t else REPLACE_EVAL)],
                    12 if t else 4, rng, split, lambda v: (v["path"], v["old"], v["new"]), "edit")
    tasks += _tasks("run", [{"command": c} for c in (RUN_TRAIN if t else RUN_EVAL)], 26 if t else 9, rng, split,
                    lambda v: (v["command"],), "run")
    tasks += _tasks("run_script", [{"script": s} for s in (RUN_SCRIPT_TRAIN if t else RUN_SCRIPT_EVAL)],
                    8 if t else 2, rng, split, lambda v: (f"python {v['script']}",), "run")
    tasks += _answer_tasks(rng, split)
    return tasks


def _answer_tasks(rng: random.Random, split: str) -> list[DemoTask]:
    t = split == "train"
    # Training numbers are 2..49; eval numbers 50..99, so no eval value is a training value.
    low, high = (2, 49) if t else (50, 99)
    tasks = _tasks("sum", _numbers(rng, 24 if t else 4, low, high), 24 if t else 4, rng, split,
                   lambda v: (f"{v['a']} + {v['b']} = {v['a'] + v['b']}.",), "answer")
    tasks += _tasks("product", _numbers(rng, 14 if t else 3, low, high), 14 if t else 3, rng, split,
                    lambda v: (f"{v['a']} x {v['b']} = {v['a'] * v['b']}.",), "answer")
    acronyms = ACRONYMS if t else ACRONYMS_EVAL
    tasks += _tasks("acronym", [{"term": k} for k in acronyms], 14 if t else 3, rng, split,
                    lambda v: (f"{v['term']} stands for {acronyms[v['term']]}.",), "answer")
    concepts = CONCEPTS if t else CONCEPTS_EVAL
    tasks += _tasks("concept", [{"term": k} for k in concepts], 12 if t else 3, rng, split,
                    lambda v: (concepts[v["term"]],), "answer")
    # Small talk: each message is its own (fixed) template.
    chat = CHAT if t else CHAT_EVAL
    tasks += [DemoTask("answer", prompt, prompt, "answer", (reply,)) for prompt, reply in chat.items()]
    return tasks


def eval_templates() -> list[str]:
    """Every phrasing the eval suite uses (none may produce a training prompt)."""
    return [tpl for phrasing in PHRASINGS.values() for tpl in phrasing.eval] + list(CHAT_EVAL)
