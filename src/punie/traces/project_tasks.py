"""Tasks on the synthetic projects of :mod:`punie.traces.projects`, split by project and phrasing.

Training tasks ask about ``train``-pool projects with the ``train`` templates; the
held-out-project suites ask about ``valid``- or ``test``-pool projects with the
``eval`` templates. Every argument (path, pattern, command, file text) is taken
from the project tree and appears verbatim in the request, so the model learns to
copy it rather than to recall a workspace.

Two kinds of examples teach the model to read the tool schema rather than to
memorise five names: training tasks whose tool set varies (tools renamed,
reordered, the ones the task does not need dropped), and no-tool questions that
carry another agent's tools (:data:`FOREIGN_TOOLS`; the suite's tool sets and
system prompts are disjoint from training's).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from punie.traces.demo_tasks import DemoTask
from punie.traces.projects import Project, make_projects

# Projects per pool: train ones feed the traces, valid/test ones the two held-out-project suites.
PROJECT_COUNTS = {"train": 16, "valid": 4, "test": 8}
FOREIGN_TRAIN_QUESTIONS = 96

# kind -> (train templates, eval templates); the two never share a template (a test checks).
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "read": (("Show me {path}.", "read {path}", "What's in {path}?", "cat {path}", "open {path} please",
              "Can you print {path}?", "I want to see the file {path}.", "{path} - what does it say?"),
             ("Please read {path} and tell me what it contains.", "show {path}", "Pull up {path} for me.")),
    "list": (("List {path}.", "ls {path}", "what files are in {path}", "Show me the folder {path}.",
              "Which files does {path} have?", "list the {path} directory"),
             ("What is inside the directory {path}?", "list files under {path}", "Browse {path} for me.")),
    "search": (("Search for {pattern}.", "grep {pattern}", "where is {pattern} used", "Find {pattern} in the code.",
                "Which files mention {pattern}?", "look for {pattern}"),
               ("Find all occurrences of {pattern}.", "search the repo for {pattern}",
                "Where does the string {pattern} show up?")),
    "search_in": (("Search {path} for {pattern}.", "grep {pattern} in {path}", "find {pattern} under {path}",
                   "How many lines in {path} mention {pattern}?"),
                  ("Look for {pattern} inside {path}.", "does {path} mention {pattern}?")),
    "locate": (("Where is {pattern} defined? Show me the file.", "find the definition of {pattern} and open it"),
               ("Open the file that defines {pattern}.",)),
    "create": (("Create {path} containing: {text}", "new file {path}: {text}", "Write {path} with the text: {text}"),
               ("Make a file named {path} with this content: {text}", "save to {path}: {text}")),
    "append": (("Append to {path}: {text}", "add this line at the end of {path}: {text}"),
               ("Put this line at the end of {path}: {text}",)),
    "replace": (("In {path}, change {old} to {new}.", "replace {old} with {new} in {path}"),
                ("Update {path}: swap {old} for {new}.",)),
    "run": (("Run `{command}`.", "run {command}", "Execute `{command}` and show the output.",
             "What does `{command}` print?", "please run: {command}", "Try `{command}`."),
            ("Could you run `{command}` and tell me the result?", "exec {command}",
             "Launch `{command}` for me.")),
}

# No-tool questions: kind -> (train templates, eval templates). Answers are computed, so every one is right.
QUESTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sum": (("What is {a} plus {b}?", "{a}+{b}", "add {a} and {b}"), ("Tell me the sum of {a} and {b}.",)),
    "product": (("What is {a} times {b}?", "{a}*{b}?"), ("multiply {a} by {b} please",)),
    "difference": (("What is {a} minus {b}?", "{a}-{b}"), ("Subtract {b} from {a}.",)),
    "reverse": (("Spell {word} backwards.", "reverse the word {word}"), ("Write {word} in reverse order.",)),
    "upper": (("Write {word} in capital letters.", "uppercase {word}"), ("Give me {word} in all caps.",)),
    "letters": (("How many letters are in {word}?", "count the letters in {word}"),
                ("How long is the word {word}, in letters?",)),
    "translate": (("Translate {word} into {lang}.", "{word} in {lang}?", "how do you say {word} in {lang}"),
                  ("What is the {lang} word for {word}?",)),
    "capital": (("What is the capital of {country}?", "capital of {country}?"),
                ("Which city is {country}'s capital?",)),
    "minutes": (("How many seconds are in {a} minutes?", "{a} minutes in seconds"),
                ("Convert {a} minutes to seconds.",)),
}
TRANSLATIONS = {"train": {("house", "French"): "maison", ("dog", "Spanish"): "perro", ("water", "German"): "Wasser",
                          ("book", "French"): "livre", ("cat", "Spanish"): "gato", ("bread", "German"): "Brot",
                          ("sun", "French"): "soleil", ("tree", "Spanish"): "árbol"},
                "eval": {("apple", "French"): "pomme", ("friend", "Spanish"): "amigo", ("night", "German"): "Nacht",
                         ("sea", "French"): "mer", ("milk", "Spanish"): "leche"}}
CAPITALS = {"train": {"France": "Paris", "Japan": "Tokyo", "Canada": "Ottawa", "Egypt": "Cairo", "Peru": "Lima",
                      "Norway": "Oslo", "Kenya": "Nairobi", "Chile": "Santiago"},
            "eval": {"Italy": "Rome", "Spain": "Madrid", "Greece": "Athens", "Portugal": "Lisbon",
                     "Poland": "Warsaw"}}
WORDS = {"train": ("planet", "garden", "window", "rocket", "silver", "puzzle", "candle", "forest"),
         "eval": ("bridge", "pocket", "castle", "monkey", "guitar", "island")}

# Other agents' tools: schemas only (no-tool tasks never call them). Train and eval sets are disjoint.
FOREIGN_TOOLS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "train": {"get_weather": ("Current weather for a city.", {"city": "City name"}),
              "send_email": ("Send an email.", {"to": "Recipient address", "subject": "Subject", "body": "Text"}),
              "create_event": ("Add an event to the calendar.", {"title": "Event title", "date": "ISO date"}),
              "play_music": ("Play a song.", {"song": "Song title"}),
              "set_timer": ("Start a countdown timer.", {"minutes": "Duration in minutes"}),
              "book_flight": ("Book a flight.", {"origin": "From", "destination": "To", "date": "ISO date"}),
              "get_stock_price": ("Latest price of a stock.", {"symbol": "Ticker symbol"}),
              "query_database": ("Run a SQL query on the sales database.", {"sql": "The query"}),
              "order_pizza": ("Order a pizza for delivery.", {"size": "small, medium or large", "address": "Where"}),
              "track_package": ("Where a parcel is now.", {"tracking_number": "Carrier tracking number"}),
              "add_contact": ("Save a contact.", {"name": "Full name", "phone": "Phone number"}),
              "start_vacuum": ("Start the robot vacuum.", {"room": "Room to clean"}),
              "check_balance": ("Balance of a bank account.", {"account": "Account name"}),
              "post_message": ("Post to a team chat channel.", {"channel": "Channel name", "text": "Message"}),
              "rate_movie": ("Rate a movie from 1 to 5.", {"title": "Movie title", "stars": "1 to 5"}),
              "get_news": ("Top headlines on a topic.", {"topic": "Topic"})},
    "eval": {"get_order_status": ("Status of a customer order.", {"order_id": "Order number"}),
             "create_ticket": ("Open a support ticket.", {"title": "Short summary", "priority": "low, normal or high"}),
             "lookup_customer": ("Find a customer record by email.", {"email": "Customer email"}),
             "send_sms": ("Send a text message.", {"number": "Phone number", "text": "Message"}),
             "turn_on_lights": ("Switch on the lights in a room.", {"room": "Room name"}),
             "get_directions": ("Driving directions between two places.", {"origin": "From", "destination": "To"}),
             "resize_image": ("Resize an uploaded image.", {"image_id": "Image id", "width": "Width in pixels"})},
}
FOREIGN_SYSTEMS = {"train": ("You are a personal assistant with access to the user's apps.",
                             "You are a travel and finance assistant.", "You help a team with its chat and tools.",
                             "You are a home and errands assistant."),
                   "eval": ("You are a customer support agent for an online shop.",
                            "You are a smart-home assistant.")}
# Renames for the tool-set variants: punie's tools under other agents' names (training only).
RENAMES = {"read_file": ("open_file", "view_file", "cat_file"), "list_dir": ("list_files", "ls", "list_directory"),
           "search": ("grep", "find_text", "search_code"), "write_file": ("save_file", "create_file", "put_file"),
           "run_command": ("shell", "exec_command", "run")}
# Which of punie's tools each plan calls (the others may be dropped from a variant's tool set).
PLAN_TOOLS = {"read": {"read_file"}, "list": {"list_dir"}, "search": {"search"}, "locate": {"search", "read_file"},
              "create": {"write_file"}, "append": {"read_file", "write_file"},
              "replace": {"read_file", "write_file"}, "run": {"run_command"}, "answer": set()}
_MISSING_STEMS = ("old", "backup", "draft", "v2")
_REFUSED = ("npm test", "go build ./...", "make build", "node index.js", "cargo run", "docker compose up")


def template_names(split: str) -> list[str]:
    """Every template of one side (``train`` or ``eval``)."""
    side = 0 if split == "train" else 1
    return [t for pair in (*TEMPLATES.values(), *QUESTIONS.values()) for t in pair[side]]


def _texts(project: Project, rng: random.Random) -> list[str]:
    a, b = rng.sample(project.words, 2)
    return [f"review the {a} numbers on Friday", f"{b} owner: {a} team", f"TODO: move {a} next to {b}"]


def file_tasks(p: Project, rng: random.Random, side: int) -> list[tuple[str, str, dict[str, Any], tuple[Any, ...]]]:
    """(kind, plan, template values, plan args) for every file task this project offers."""
    files = sorted(p.files)
    text_files = [f for f in files if f.endswith((".md", ".txt", ".toml", ".yaml", ".csv", ".json", ".py"))]
    ident_files = {i: next(f for f in files if i in p.files[f]) for i in p.identifiers}
    found = [i for i in p.identifiers if f"def {i}" in p.files[ident_files[i]] or f"func {i}" in
             p.files[ident_files[i]] or f"function {i}" in p.files[ident_files[i]]]
    missing = f"{p.dirs[0]}/{rng.choice(p.words)}_{rng.choice(_MISSING_STEMS)}.txt"
    items: list[tuple[str, str, dict[str, Any], tuple[Any, ...]]] = []
    for path in rng.sample(files, 2) + ([missing] if side == 0 else []):
        items.append(("read", "read", {"path": path}, (path,)))
    for path in rng.sample(p.dirs, min(2, len(p.dirs))):
        items.append(("list", "list", {"path": path}, (path,)))
    for pattern in rng.sample(p.identifiers + p.words, 2):
        items.append(("search", "search", {"pattern": pattern}, (pattern, None)))
    ident = rng.choice(p.identifiers)
    folder = str(ident_files[ident]).split("/")[0]
    items.append(("search_in", "search", {"path": folder, "pattern": ident}, (ident, folder)))
    if found:
        items.append(("locate", "locate", {"pattern": (loc := rng.choice(found))}, (loc,)))
    texts = _texts(p, rng)
    new = f"{rng.choice(p.dirs)}/{rng.choice(p.words)}-{rng.choice(('notes', 'todo', 'list'))}.txt"
    items.append(("create", "create", {"path": new, "text": texts[0]}, (new, texts[0])))
    target = rng.choice(text_files)
    items.append(("append", "append", {"path": target, "text": texts[1]}, (target, texts[1])))
    word = rng.choice([w for w in p.words if any(w in p.files[f] for f in text_files)])
    where = next(f for f in text_files if word in p.files[f])
    items.append(("replace", "replace", {"path": where, "old": word, "new": f"{word}2"}, (where, word, f"{word}2")))
    commands = [f"python {s}" for s in p.scripts] + [f"cat {rng.choice(files)}", f"wc -l {rng.choice(files)}",
                                                     f"head -n 2 {rng.choice(files)}", f"ls {rng.choice(p.dirs)}",
                                                     f"grep -n {ident} {ident_files[ident]}"]
    for command in rng.sample(commands, 3) + ([rng.choice(_REFUSED)] if side == 0 else []):
        items.append(("run", "run", {"command": command}, (command,)))
    return items


def _question(kind: str, rng: random.Random, split: str) -> tuple[dict[str, Any], str]:
    """Template values and the right answer for one no-tool question."""
    low, high = (2, 49) if split == "train" else (50, 99)
    a, b = rng.randint(low, high), rng.randint(low, high)
    word = rng.choice(WORDS[split])
    if kind == "translate":
        (w, lang), out = rng.choice(sorted(TRANSLATIONS[split].items()))
        return {"word": w, "lang": lang}, f"In {lang}, {w} is {out}."
    if kind == "capital":
        country, city = rng.choice(sorted(CAPITALS[split].items()))
        return {"country": country}, f"The capital of {country} is {city}."
    answers = {"sum": f"{a} + {b} = {a + b}.", "product": f"{a} x {b} = {a * b}.",
               "difference": f"{a} - {b} = {a - b}.",
               "reverse": f"{word} backwards is {word[::-1]}.", "upper": word.upper(),
               "letters": f"{word} has {len(word)} letters.", "minutes": f"{a} minutes are {a * 60} seconds."}
    return {"a": a, "b": b, "word": word}, answers[kind]


def question_tasks(count: int, rng: random.Random, split: str, *, foreign: bool) -> list[DemoTask]:
    """No-tool questions; ``foreign`` gives each another agent's tools and system prompt."""
    side = 0 if split == "train" else 1
    pool = "train" if split == "train" else "eval"
    kinds = sorted(QUESTIONS)
    tasks = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        values, answer = _question(kind, rng, pool)
        template = rng.choice(QUESTIONS[kind][side])
        task = DemoTask("answer", template.format(**values), template, "answer", (answer,))
        if foreign:
            names = rng.sample(sorted(FOREIGN_TOOLS[pool]), rng.randint(2, 4))
            task = replace(task, foreign=tuple(names), system=rng.choice(FOREIGN_SYSTEMS[pool]))
        tasks.append(task)
    return tasks


def _variant(plan: str, rng: random.Random) -> tuple[tuple[str, str], ...]:
    """A tool set for a training task: punie's tools renamed, reordered, some absent; the plan's own kept."""
    names = [n for n in RENAMES if n in PLAN_TOOLS[plan] or rng.random() < 0.6]
    rng.shuffle(names)
    return tuple((n, rng.choice(RENAMES[n]) if rng.random() < 0.7 else n) for n in names)


def project_tasks(projects: Sequence[Project], split: str, seed: int, *, variant_share: float = 0.3,
                  questions_per_project: int = 2) -> list[DemoTask]:
    """Tasks on every project: file tasks (eval templates unless ``split == "train"``) and no-tool questions.

    Training tasks get a varied tool set with probability ``variant_share``.
    """
    side = 0 if split == "train" else 1
    rng = random.Random(f"{seed}:project-tasks:{split}")
    tasks = []
    for p in projects:
        for kind, plan, values, args in file_tasks(p, rng, side):
            template = rng.choice(TEMPLATES[kind][side])
            task = DemoTask(kind_category(kind), template.format(**values), template, plan, args, project=p.name)
            if side == 0 and rng.random() < variant_share:
                task = replace(task, toolset=_variant(plan, rng))
            tasks.append(task)
        for task in question_tasks(questions_per_project, rng, split, foreign=False):
            tasks.append(replace(task, project=p.name))
    return tasks


def kind_category(kind: str) -> str:
    return {"search_in": "search", "locate": "search", "create": "edit", "append": "edit",
            "replace": "edit"}.get(kind, kind)


def training_tasks(seed: int) -> list[tuple[Project, DemoTask]]:
    """Every training task on a train-pool project, with its project; plus no-tool tasks with foreign tools."""
    projects = {p.name: p for p in make_projects("train", PROJECT_COUNTS["train"], seed)}
    tasks = project_tasks(list(projects.values()), "train", seed, questions_per_project=3)
    rng = random.Random(f"{seed}:foreign:train")
    first = next(iter(projects.values()))
    pairs = [(projects[t.project], t) for t in tasks]
    # Enough no-tool questions with other agents' tools that answering without a call stays the habit when a
    # schema offers nothing the question needs. 96 (and 16 train tools, 3 questions per project) replaced 36 (8
    # tools, 2 per project), chosen on the validation suites: README.md, "How the demo recipe was chosen".
    pairs += [(first, t) for t in question_tasks(FOREIGN_TRAIN_QUESTIONS, rng, "train", foreign=True)]
    return pairs


def held_out_tasks(pool: str, seed: int) -> list[tuple[Project, DemoTask]]:
    """The held-out-project suite's tasks: ``pool`` is "valid" or "test"."""
    projects = {p.name: p for p in make_projects(pool, PROJECT_COUNTS[pool], seed)}
    return [(projects[t.project], t) for t in project_tasks(list(projects.values()), pool, seed)]


def foreign_suite_tasks(seed: int, count: int = 40, pool: str = "test") -> list[DemoTask]:
    """No-tool questions offered other agents' tools (eval tool sets, prompts and templates).

    ``pool`` "valid" draws other cases from the same eval pools, for choosing a recipe; "test" is reported.
    """
    key = {"test": "eval", "valid": "valid"}[pool]  # "eval": the test suite's draws, as first committed
    return question_tasks(count, random.Random(f"{seed}:foreign:{key}"), "eval", foreign=True)
