"""Small synthetic projects for the demo traces: many layouts and names, one seed.

The shipped demo used to train on one sample workspace, so an adapter learned
its file names instead of copying arguments from the request. Here a seeded
generator builds small project trees in several languages and layouts (a Python
package, a Node library, a Go module, a notes-and-data folder) whose directory,
file and identifier names are drawn from word pools. Each pool is cut into
disjoint ``train``, ``valid`` and ``test`` parts, so a held-out project shares no
project name, file stem or identifier with any training project (a test checks
this). Everything the tools can do works on the files: they can be read,
listed, searched, and the scripts run with the standard library only.

A :class:`Project` is plain data (``files``: relative path -> text) plus the
facts tasks ask about; :func:`materialize` writes it into a directory.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from punie import fileio

POOLS = ("train", "valid", "test")

# Nouns name projects, packages, modules and identifiers. Each split draws only from its own list.
NOUNS: dict[str, tuple[str, ...]] = {
    "train": ("orchard", "lantern", "harbor", "meadow", "quarry", "ferry", "glacier", "bakery", "falcon", "pepper",
              "saddle", "timber", "violet", "walrus", "anchor", "beacon", "canyon", "dune", "ember", "fjord",
              "garnet", "hazel", "igloo", "jasper", "kettle", "lagoon", "mango", "nectar", "otter", "pebble",
              "quill", "raven", "sparrow", "tulip", "umber", "vessel", "willow", "yarrow", "zephyr", "acorn",
              "badger", "cobalt", "dahlia", "easel", "fennel", "goblet", "heron", "ivory", "juniper", "kayak",
              "locket", "marble", "nutmeg", "oyster", "parrot", "radish", "salmon", "thistle", "urchin", "vortex"),
    "valid": ("almond", "bison", "cactus", "dingo", "elm", "flint", "gecko", "hornet", "iris", "jackal",
              "koala", "lynx", "mole", "newt", "opal", "puma", "quokka", "rye", "sloth", "tapir"),
    "test": ("aurora", "bramble", "cinder", "delta", "estuary", "foxglove", "gondola", "hickory", "indigo",
             "jetty", "kelp", "lichen", "mistral", "nimbus", "obsidian", "prairie", "quartz", "rowan", "sorrel",
             "tundra", "upland", "verbena", "wharf", "yucca"),
}
# Verbs are ordinary vocabulary and shared: an identifier is verb_noun, and the nouns are disjoint.
VERBS = ("load", "save", "count", "parse", "build", "check", "merge", "render", "sort", "fetch", "clean", "score")
# Directory names vary per project and are split by pool too, so a held-out project's layout is new.
DIRS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {"source": ("src", "lib", "app"), "scripts": ("scripts", "tools", "bin"),
              "docs": ("docs", "doc", "guides"), "config": ("config", "conf", "etc"),
              "tests": ("tests", "test", "spec"), "data": ("data", "fixtures", "samples")},
    "valid": {"source": ("pkg",), "scripts": ("tasks",), "docs": ("manual",), "config": ("settings",),
              "tests": ("checks",), "data": ("records",)},
    "test": {"source": ("core", "source"), "scripts": ("jobs", "utils"), "docs": ("wiki", "handbook"),
             "config": ("cfg", "configs"), "tests": ("testing", "qa"), "data": ("datasets", "inputs")},
}
# File and directory names every project may have, whatever its pool.
COMMON_NAMES = ("README.md", "pyproject.toml", "package.json", "go.mod", "Makefile", "cmd", "internal", "index.js",
                "main.go", "__init__.py")
KINDS = ("python", "node", "go", "notes")


@dataclass
class Project:
    name: str
    kind: str
    pool: str
    files: dict[str, str] = field(default_factory=dict)
    identifiers: list[str] = field(default_factory=list)  # defined in the code: search and locate targets
    scripts: list[str] = field(default_factory=list)  # python scripts that run and print
    words: list[str] = field(default_factory=list)  # other searchable words that occur in the files

    @property
    def dirs(self) -> list[str]:
        found = {str(Path(p).parent) for p in self.files} - {"."}
        for d in list(found):
            parts = Path(d).parts
            found.update(str(Path(*parts[:i])) for i in range(1, len(parts)))
        return sorted(found)


def _pick(rng: random.Random, names: tuple[str, ...]) -> str:
    return names[rng.randrange(len(names))]


def _camel(verb: str, noun: str) -> str:
    return verb + noun.capitalize()


def _python(p: Project, rng: random.Random, nouns: list[str], d: dict[str, str]) -> None:
    pkg = f"{d['source']}/{p.name}"
    p.files["pyproject.toml"] = f'[project]\nname = "{p.name}"\nversion = "0.{rng.randint(1, 9)}.{rng.randint(0, 9)}"\n'
    p.files[f"{pkg}/__init__.py"] = f'"""{p.name}: small tools for {nouns[0]} records."""\n'
    for noun in nouns[:2]:
        verbs = rng.sample(VERBS, 2)
        p.identifiers += [f"{v}_{noun}" for v in verbs]
        body = "".join(f"def {v}_{noun}(items):\n    \"\"\"{v.capitalize()} the {noun} items.\"\"\"\n"
                       f"    return sorted(items)\n\n\n" for v in verbs)
        p.files[f"{pkg}/{noun}.py"] = body.rstrip() + "\n"
        p.files[f"{d['tests']}/test_{noun}.py"] = (f"from {p.name}.{noun} import {verbs[0]}_{noun}\n\n\n"
                                                   f"def test_{verbs[0]}_{noun}():\n"
                                                   f"    assert {verbs[0]}_{noun}([2, 1]) == [1, 2]\n")
    limit = rng.randint(3, 40)
    p.files[f"{d['config']}/{nouns[2]}.toml"] = f'[{nouns[2]}]\nlimit = {limit}\nowner = "{nouns[3]}"\n'
    p.words += [nouns[2], nouns[3]]


def _node(p: Project, rng: random.Random, nouns: list[str], d: dict[str, str]) -> None:
    p.files["package.json"] = (f'{{\n  "name": "{p.name}",\n  "version": "1.{rng.randint(0, 9)}.0",\n'
                               f'  "main": "{d["source"]}/index.js"\n}}\n')
    exports = []
    for noun in nouns[:2]:
        verb = _pick(rng, VERBS)
        ident = _camel(verb, noun)
        p.identifiers.append(ident)
        exports.append((noun, ident))
        p.files[f"{d['source']}/{noun}.js"] = (f"function {ident}(list) {{\n  return list.filter(Boolean);\n}}\n\n"
                                               f"module.exports = {{ {ident} }};\n")
        p.files[f"{d['tests']}/{noun}.test.js"] = (f"const {{ {ident} }} = require('../{d['source']}/{noun}');\n"
                                                   f"console.log({ident}([0, 1]));\n")
    p.files[f"{d['source']}/index.js"] = "".join(f"const {{ {i} }} = require('./{n}');\n" for n, i in exports)
    p.files[f"{d['config']}/{nouns[2]}.json"] = f'{{"{nouns[2]}": {rng.randint(2, 90)}, "mode": "{nouns[3]}"}}\n'
    p.words += [nouns[2], nouns[3]]


def _go(p: Project, rng: random.Random, nouns: list[str], d: dict[str, str]) -> None:
    p.files["go.mod"] = f"module example.com/{p.name}\n\ngo 1.2{rng.randint(0, 3)}\n"
    p.files[f"cmd/{p.name}/main.go"] = (f'package main\n\nimport "fmt"\n\n'
                                        f'func main() {{\n\tfmt.Println("{p.name}")\n}}\n')
    for noun in nouns[:2]:
        ident = _pick(rng, VERBS).capitalize() + noun.capitalize()  # exported Go names start upper-case
        p.identifiers.append(ident)
        p.files[f"internal/{noun}/{noun}.go"] = (f"package {noun}\n\n// {ident} returns the {noun} count.\n"
                                                 f"func {ident}(n int) int {{\n\treturn n * 2\n}}\n")
    p.files["Makefile"] = f"build:\n\tgo build ./cmd/{p.name}\n"
    p.files[f"{d['config']}/{nouns[2]}.yaml"] = f"{nouns[2]}:\n  replicas: {rng.randint(1, 9)}\n  zone: {nouns[3]}\n"
    p.words += [nouns[2], nouns[3]]


def _notes(p: Project, rng: random.Random, nouns: list[str], d: dict[str, str]) -> None:
    rows = [f"{n},{rng.randint(1, 99)}" for n in nouns[:4]]
    p.files[f"{d['data']}/{nouns[0]}.csv"] = "name,amount\n" + "\n".join(rows) + "\n"
    p.files[f"{d['docs']}/{nouns[1]}.md"] = f"# {nouns[1].capitalize()}\n\nNotes about {nouns[2]} and {nouns[3]}.\n"
    p.files[f"{d['docs']}/plan-{nouns[2]}.txt"] = f"1. ask about {nouns[3]}\n2. order {nouns[0]}\n"
    p.words += [nouns[2], nouns[3]]
    p.identifiers.append(f"total_{nouns[0]}")


def _scripts(p: Project, rng: random.Random, nouns: list[str], d: dict[str, str]) -> None:
    """Runnable Python scripts (standard library only) that print something small."""
    verb = _pick(rng, VERBS)
    script = f"{d['scripts']}/{verb}_{nouns[4]}.py"
    items = ", ".join(repr(n) for n in nouns[:3])
    p.files[script] = (f'"""Print the {nouns[4]} summary."""\n\nITEMS = [{items}]\n\n\n'
                       f"def main():\n    for item in ITEMS:\n        print(item, len(item))\n"
                       f"    print('total', len(ITEMS))\n\n\nif __name__ == \"__main__\":\n    main()\n")
    p.scripts.append(script)
    if p.kind == "notes":
        data = f"{d['data']}/{nouns[0]}.csv"
        calc = f"{d['scripts']}/total_{nouns[0]}.py"
        p.files[calc] = (f'"""Sum the amounts in {data}."""\n\nimport csv\n\n\ndef total_{nouns[0]}():\n'
                         f"    with open({data!r}) as f:\n"
                         f"        return sum(int(r['amount']) for r in csv.DictReader(f))\n"
                         f"\n\nprint(total_{nouns[0]}())\n")
        p.scripts.append(calc)


_BUILDERS = {"python": _python, "node": _node, "go": _go, "notes": _notes}


def make_project(pool: str, rng: random.Random, kind: str | None = None) -> Project:
    """One project whose names come from ``pool`` only."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    nouns = rng.sample(NOUNS[pool], 6)
    kind = kind or _pick(rng, KINDS)
    layout = {role: _pick(rng, names) for role, names in DIRS[pool].items()}
    project = Project(name=f"{nouns[5]}{_pick(rng, ('', '-kit', '-hub', 'ly', '-tools'))}".replace("-", "_")
                      if kind == "python" else f"{nouns[5]}{_pick(rng, ('', '-kit', '-hub', 'ly'))}",
                      kind=kind, pool=pool)
    _BUILDERS[kind](project, rng, nouns, layout)
    _scripts(project, rng, nouns, layout)
    project.files["README.md"] = (f"# {project.name}\n\nA small {kind} project about {nouns[0]} and {nouns[1]}.\n"
                                  f"Run `python {project.scripts[0]}` for a summary.\n")
    project.words += nouns[:2]
    return project


def make_projects(pool: str, count: int, seed: int) -> list[Project]:
    """``count`` projects from ``pool``, kinds in turn, deterministic for a seed."""
    rng = random.Random(f"{seed}:projects:{pool}")
    return [make_project(pool, rng, KINDS[i % len(KINDS)]) for i in range(count)]


def materialize(project: Project, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in sorted(project.files.items()):
        fileio.write_text(root / rel, text)
    return root
