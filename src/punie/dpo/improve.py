"""``improve(config) -> ImproveResult``: the self-improvement loop (sample, score, pair, DPO, evaluate).

One round: the current policy (START, then each round's adapter) answers every
case of the training suite ``k`` times, sampled (the in-process eval engine with
a temperature, seeded); the suite's scorers judge each draft. A case whose drafts
both pass and fail gives one preference pair (the first passing draft over a
failing one); with ``reference_answers`` a case whose drafts all failed
takes its expected answer, rendered as the assistant turn, as the chosen side.
The rejected draft is one that made the chosen side's decision (the same tool, or
no tool) when there is one. The rest are counted by why they gave none. The
pairs' balance is checked (category and label, as ``punie data check`` counts
them, and each decision's count as the chosen and as the rejected side; ``balance`` names
which) before ``train_dpo`` trains the next policy from the current one. After the last round
START and every round's adapter are evaluated on each held-out suite, each paired with START
(Holm-adjusted over all of them).

With ``drafts`` round 1 pairs an earlier run's scored drafts instead of sampling (another balance, loss or
learning rate on the same drafts, without sampling them again).

Layout of ``output``: ``round-N/drafts.jsonl`` (every draft, scored),
``round-N/pairs/{train,valid}.jsonl``, ``dpo-N/`` (round N's adapter, a ``punie
dpo`` run), ``eval/`` (results.json, the report; ``eval/<suite file stem>/`` each when there
are several held-out suites) and ``improve.json`` (settings, per-round counts, the comparisons).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from punie import fileio
from punie.chat.toolcalls import named_tool, parse_message
from punie.dpo import DPOConfig, resolve_dpo_config, train_dpo
from punie.dpo.train_suite import write_training_suite
from punie.errors import ConfigError, DataError
from punie.eval.overlap import check_disjoint, suite_prompts
from punie.eval.results import BASELINE, CaseResult, EvalResults, compare, finish_comparisons
from punie.eval.suite import EvalCase, load_suite
from punie.training.loop import TrainingCallback

BALANCED_FIELDS = ("category", "label", "route", "answer")  # the tool a reply calls is the task, not a bias
LABEL_FIELDS = BALANCED_FIELDS[1:]
Balance = Literal["categories", "labels", "decisions"]  # what check_balance can hold to the ratio
BALANCE_KINDS: tuple[Balance, ...] = ("categories", "labels", "decisions")
REASONS = ("all drafts passed", "all drafts failed")
NO_TOOL = "no tool"
UNPARSED = "unparsed tool call"


class ImproveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    suite: Path | None = Field(None, description="Training suite (JSONL cases with expect) the drafts are scored on.")
    suite_from_data: Path | None = Field(None, description="Instead of --suite: build it from a tools-format data file "
                                                           "(each record's first reply is the expected answer).")
    eval_suite: list[Path] = Field(..., min_length=1, description="Held-out suite START and the new adapters are "
                                                                  "compared on (repeat for several).")
    output: Path = Field(..., description="Directory for drafts, pairs, adapters and the evaluation.")
    model: str | None = Field(None, description="Base model: 'default', a model directory, or a repo id.")
    adapter: Path | None = Field(None, description="START: the adapter to improve (default: the base model).")
    rounds: int = Field(1, ge=1, description="Rounds of sample -> pair -> DPO, each from the previous policy.")
    k: int = Field(4, ge=2, description="Drafts sampled per case.")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature of the drafts.")
    top_p: float = Field(0.95, ge=0, le=1, description="Nucleus sampling of the drafts (0: off).")
    seed: int = Field(0, description="Seed of the drafts (round N uses seed + N - 1) and of the pair split.")
    max_tokens: int = Field(256, ge=1, description="Tokens per draft and per held-out answer.")
    batch_size: int = Field(16, ge=1, description="Prompts generated together.")
    reference_answers: bool = Field(False, description="A case whose drafts all failed pairs its expected answer "
                                                       "(rendered as the assistant turn) with a failing draft.")
    allow_imbalance: bool = Field(False, description="Train even when the pairs' categories or labels are "
                                                     "past 2:1.")
    max_ratio: float = Field(2.0, gt=1, description="The most/least common category or label ratio allowed.")
    balance: tuple[Balance, ...] = Field(
        BALANCE_KINDS, min_length=1, description="What the training pairs must hold to --max-ratio, comma-separated: "
                                                 "categories, labels (yes/no, route, answer; checked, never cut), "
                                                 "decisions (tool or no tool, chosen vs rejected). A category "
                                                 "with no pair at all is always refused.")
    downsample: bool = Field(False, description="Drop training pairs of the commoner categories (a seeded choice) "
                                                "until none has more than --max-ratio times the rarest, then "
                                                "pairs whose decisions (tool or no tool) lean past it (the cuts "
                                                "--balance names); the counts dropped are printed and kept in "
                                                "improve.json.")
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="Share of pairs held out as DPO validation pairs.")
    drafts: Path | None = Field(None, description="Round 1 pairs these scored drafts (an earlier run's "
                                                  "round-N/drafts.jsonl, from START on this suite) instead of "
                                                  "sampling; they are scored again with the suite's scorers.")
    dpo: dict[str, Any] = Field(default_factory=dict, description="punie dpo settings (iters, beta, ...).")

    @field_validator("eval_suite", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @field_validator("balance", mode="before")
    @classmethod
    def _split_balance(cls, value: Any) -> Any:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_suite(self) -> ImproveConfig:
        if (self.suite is None) == (self.suite_from_data is None):
            raise ValueError("give exactly one of suite (a suite file) and suite_from_data (a data file), got "
                             f"{'both' if self.suite else 'neither'}")
        return self


@dataclass
class Pairing:
    """One round's pairs and why the other cases gave none."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    from_reference: int = 0

    def summary(self) -> dict[str, Any]:
        return {"pairs": len(self.pairs), "from_reference": self.from_reference,
                "no_pair": {r: self.reasons[r] for r in REASONS}}


@dataclass
class ImproveResult:
    output: Path
    rounds: list[dict[str, Any]]
    adapters: list[Path]
    comparisons: list[dict[str, Any]]  # START vs each round's adapter on each held-out suite ("suite")
    eval_dirs: list[Path]  # one per held-out suite, in their order


class ImbalanceError(DataError):
    """The pairs lean past the allowed ratio on a category or label."""


def improve(config: ImproveConfig, *, on_round: Callable[[int, dict[str, Any]], None] | None = None,
            on_written: Callable[[Path], object] | None = None, on_draft: Callable[[int, int], None] | None = None,
            training: TrainingCallback | None = None) -> ImproveResult:
    """Run ``config.rounds`` rounds from START, then evaluate START against every new adapter.

    ``on_round(n, record)`` hears each round's pair counts as soon as the drafts are paired;
    ``on_draft(done, total)`` each scored draft; ``training`` gets the DPO reports; ``on_written(eval_dir)``
    runs when a held-out suite's results are written (the CLI renders the report).
    """
    from punie.eval import run_eval

    held_out = {path: load_suite(path) for path in config.eval_suite}
    eval_dirs = _eval_dirs(config.output, config.eval_suite)
    _dpo_config(config, config.adapter, config.output, config.output)  # bad DPO settings fail before any sampling
    if config.drafts is not None and not config.drafts.is_file():
        raise DataError(f"--drafts {config.drafts} does not exist (expected an earlier run's round-N/drafts.jsonl).")
    if config.suite is not None:  # checked (the drafts too) before anything is written
        train_suite = load_suite(config.suite)
        trained = suite_prompts(train_suite.cases)
        for path, suite in held_out.items():
            check_disjoint(suite.cases, path, trained, config.suite)
        given = load_drafts(config.drafts, train_suite.cases) if config.drafts is not None else None
        out = _claim(config.output)
    else:  # built without the held-out prompts
        assert config.suite_from_data is not None  # the config holds one of the two
        out = _claim(config.output)
        write_training_suite(config.suite_from_data, out / "train-suite.jsonl", exclude=config.eval_suite)
        train_suite = load_suite(out / "train-suite.jsonl")
        given = load_drafts(config.drafts, train_suite.cases) if config.drafts is not None else None
    policy, adapters, rounds = config.adapter, [], []
    for n in range(1, config.rounds + 1):
        folder = out / f"round-{n}"
        if n == 1 and given is not None:
            drafts = given
        else:
            drafts = sample_drafts(train_suite.cases, config, policy, seed=config.seed + n - 1, on_draft=on_draft)
        _write_drafts(folder / "drafts.jsonl", train_suite.cases, drafts)
        pairing = make_pairs(train_suite.cases, drafts, reference_answers=config.reference_answers)
        record: dict[str, Any] = {"round": n, "start": str(policy) if policy else None, **pairing.summary()}
        rounds.append(record)
        _write_record(out, config, rounds)
        if on_round is not None:  # the counts, before the pairs can be refused
            on_round(n, record)
        split = split_pairs(pairing.pairs, config.valid_fraction, config.seed)
        if config.downsample:
            split["train"], record["downsampled"], record["downsampled_decisions"] = downsample(
                split["train"], config.max_ratio, config.seed, balance=config.balance)
        record["decisions"] = decision_counts(split["train"])
        write_split(folder / "pairs", split)
        record["balance_warnings"] = check_balance(split["train"], config.max_ratio, allow=config.allow_imbalance,
                                                   suite_categories={c.category for c in train_suite.cases},
                                                   balance=config.balance)
        result = train_dpo(_dpo_config(config, policy, folder / "pairs", out / f"dpo-{n}"), training)
        record |= {"adapter": str(result.output), "final_val_accuracy": result.final_val_accuracy}
        _write_record(out, config, rounds)
        policy = result.output
        adapters.append(result.output)
    runs = ([config.adapter] if config.adapter else []) + adapters
    comparisons: list[dict[str, Any]] = []
    for path, eval_dir in zip(config.eval_suite, eval_dirs, strict=True):
        results = run_eval(path, model=config.model, adapters=runs, max_tokens=config.max_tokens,
                           out_dir=eval_dir, batch_size=config.batch_size, on_written=on_written)
        if results.interrupted:  # run_eval keeps what finished on Ctrl-C; the comparisons would be partial
            _write_record(out, config, rounds, interrupted=f"evaluating {path}")
            raise KeyboardInterrupt  # as if it had reached here: the caller stops, the CLI says what finished
        comparisons += [{"suite": str(path)} | c for c in start_comparisons(results, config.adapter is not None)]
    comparisons = finish_comparisons(comparisons)  # Holm over every adapter on every held-out suite
    _write_record(out, config, rounds, comparisons=comparisons)
    return ImproveResult(output=out, rounds=rounds, adapters=adapters, comparisons=comparisons, eval_dirs=eval_dirs)


def _write_record(out: Path, config: ImproveConfig, rounds: list[dict[str, Any]], **extra: Any) -> None:
    """``improve.json``: the settings, the rounds so far and ``extra`` (the comparisons, or where it stopped)."""
    fileio.write_json(out / "improve.json", {"config": json.loads(config.model_dump_json()), "rounds": rounds} | extra)


def _eval_dirs(output: Path, suites: list[Path]) -> list[Path]:
    """``output/eval`` for one held-out suite; ``output/eval/<file stem>`` each for several."""
    if len(suites) == 1:
        return [output / "eval"]
    stems = [path.stem for path in suites]
    if len({stem.casefold() for stem in stems}) < len(stems):  # one folder on a case-insensitive disk (macOS)
        raise DataError(f"two held-out suites have the same file name ({', '.join(map(str, suites))}); their "
                        "reports would share a folder: rename one.")
    return [output / "eval" / stem for stem in stems]


def sample_drafts(cases: list[EvalCase], config: ImproveConfig, policy: Path | None, seed: int,
                  on_draft: Callable[[int, int], None] | None = None) -> list[list[CaseResult]]:
    """``k`` scored drafts per case from ``policy``, sampled in one batched, seeded generation."""
    from punie.eval.engines import EngineOptions
    from punie.eval.inprocess import InProcessEngine
    from punie.eval.runner import score_case

    engine = InProcessEngine(EngineOptions(model=config.model, max_tokens=config.max_tokens,
                                           batch_size=config.batch_size, temperature=config.temperature,
                                           top_p=config.top_p, seed=seed))
    repeated = [case for case in cases for _ in range(config.k)]
    drafts: list[list[CaseResult | None]] = [[None] * config.k for _ in cases]
    done = 0
    try:
        engine.prepare([policy] if policy else [])

        def on_result(i: int, generation: Any) -> None:
            nonlocal done
            drafts[i // config.k][i % config.k] = score_case(repeated[i], generation)
            done += 1
            if on_draft is not None:
                on_draft(done, len(repeated))

        engine.generate(policy, repeated, on_result)
    finally:
        engine.close()
    missing = [cases[i].id for i, row in enumerate(drafts) if any(d is None for d in row)]
    if missing:
        raise DataError(f"the engine returned no draft for cases {missing[:5]}; nothing was paired.")
    return [[d for d in row if d is not None] for row in drafts]


def load_drafts(path: Path, cases: list[EvalCase]) -> list[list[CaseResult]]:
    """The drafts of ``path`` (``_write_drafts``'s format) per case of ``cases``, scored again by each case's scorer.

    Refused (DataError naming the line) when a line is not a draft, names a case the suite lacks, or a case
    has none: drafts of another suite would pair the wrong prompts. A draft the engine failed stays failed.
    """
    from punie.eval.engines import Generation
    from punie.eval.outputs import ModelOutput
    from punie.eval.runner import score_case
    from punie.eval.suite import json_object

    if not path.is_file():
        raise DataError(f"{path} does not exist (expected an earlier run's round-N/drafts.jsonl).")
    by_id = {case.id: case for case in cases}
    rows: dict[str, list[CaseResult]] = {case.id: [] for case in cases}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        row = json_object(line, where)
        case_id, output, error = row.get("case"), row.get("output"), row.get("error")
        if not isinstance(case_id, str) or not isinstance(output, str):
            raise DataError(f"{where}: a draft needs \"case\" (the case id) and \"output\" (the text), as "
                            "punie improve writes them in round-N/drafts.jsonl.")
        if case_id not in by_id:
            raise DataError(f"{where}: case {case_id!r} is not in the training suite; these drafts were sampled "
                            "on another suite. Pass the --suite they came from, or sample again without --drafts.")
        generation = Generation(ModelOutput.from_text(output), None, error=error if isinstance(error, str) else None)
        rows[case_id].append(score_case(by_id[case_id], generation))
    if missing := [case_id for case_id, row in rows.items() if not row]:
        raise DataError(f"--drafts {path} has no draft for {len(missing)} case(s) of the training suite "
                        f"({', '.join(missing[:5])}); pass the --suite they came from, or sample again.")
    return [rows[case.id] for case in cases]


def make_pairs(cases: list[EvalCase], drafts: list[list[CaseResult]], *, reference_answers: bool) -> Pairing:
    """A passing draft (else, with ``reference_answers``, the expected answer) over a failing one, per case."""
    pairing = Pairing()
    for case, row in zip(cases, drafts, strict=True):
        passing = [d for d in row if d.passed]
        failing = [d for d in row if not d.passed]
        if not failing:
            pairing.reasons["all drafts passed"] += 1
            continue
        chosen = _assistant(passing[0].output) if passing else None
        if chosen is None and reference_answers:
            chosen = reference_turn(case)
            pairing.from_reference += chosen is not None
        if chosen is None:
            pairing.reasons["all drafts failed"] += 1
            continue
        made = decision(chosen)
        decided = [(_assistant(d.output), decision(_assistant(d.output))) for d in failing]
        rejected, rejected_made = next((r for r in decided if r[1] == made), decided[0])
        pair: dict[str, Any] = {"messages": case.messages, "chosen": chosen, "rejected": rejected,
                                "category": case.category, "case": case.id, "decisions": [made, rejected_made]}
        if case.tools:
            pair["tools"] = case.tools
        pairing.pairs.append(pair)
    return pairing


def decision(reply: dict[str, Any]) -> str:
    """What a reply decided: the name of its first tool call, ``"no tool"``, or ``"unparsed tool call"``.

    Read with the parser eval scores with; a call whose JSON is broken (cut off by the token limit, say)
    still decided on the tool its text names. Two sides of a pair that made the same decision begin with the
    same tokens (``<tool_call>`` and the name), which DPO's log-ratio difference cancels; sides that decided
    differently move that decision's probability on every prompt, which is what :func:`check_balance` counts.
    """
    parsed = parse_message(reply)
    if parsed.tool_calls:
        return parsed.tool_calls[0].name
    if not parsed.errors:
        return NO_TOOL
    return named_tool(reply.get("content") or "") or UNPARSED


def _assistant(text: str) -> dict[str, Any]:
    # The draft exactly as generated (tool-call blocks included): DPO scores the policy's own tokens.
    return {"role": "assistant", "content": text}


def reference_turn(case: EvalCase) -> dict[str, Any] | None:
    """The expected answer as an assistant turn, or None when the expectation names no single answer."""
    expect = case.expect
    if case.scorer == "tool_call" and expect.get("tool_calls"):
        calls = [{"type": "function", "function": {"name": c["name"], "arguments": _concrete(c.get("arguments", {}))}}
                 for c in expect["tool_calls"]]
        return {"role": "assistant", "content": "", "tool_calls": calls}
    if case.scorer in ("exact", "numeric", "yes_no") and "answer" in expect:
        return {"role": "assistant", "content": str(expect["answer"])}
    return None


def _concrete(arguments: dict[str, Any]) -> dict[str, Any]:
    """One value per argument: the first ``one_of`` option (left out when that option is null)."""
    values = {}
    for key, value in arguments.items():
        if isinstance(value, dict) and "one_of" in value:
            if not value["one_of"] or value["one_of"][0] is None:
                continue
            value = value["one_of"][0]
        values[key] = value
    return values


def split_pairs(pairs: list[dict[str, Any]], valid_fraction: float, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The pairs split by a seeded shuffle into "train" and "valid"; refused when too few to train."""
    if len(pairs) < 2:
        raise DataError(f"only {len(pairs)} case(s) gave a preference pair; DPO needs at least 2 (one to train, one "
                        "to validate). Sample more drafts (--k), raise --temperature, use a larger training suite, "
                        "or pass --reference-answers.")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(valid_fraction * len(pairs)))
    return {"valid": [pairs[i] for i in sorted(order[:n_valid])], "train": [pairs[i] for i in sorted(order[n_valid:])]}


def write_split(folder: Path, split: dict[str, list[dict[str, Any]]]) -> None:
    for name, rows in split.items():
        fileio.write_text(folder / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def downsample_categories(pairs: list[dict[str, Any]], max_ratio: float,
                          seed: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(the pairs with every category cut to ``max_ratio`` x the rarest one's count, the number dropped per category).

    The choice within a category is a seeded sample (``punie data balance``'s downsampling) and the kept pairs
    keep their order. Only categories are cut: a lean in yes/no labels is still refused by
    :func:`check_balance`, since dropping pairs to fix it would hide that the suite itself leans.
    """
    from punie.data.balance import balance_indices

    kept = [pairs[i] for i in balance_indices([p.get("category") for p in pairs], "downsample", seed, max_ratio)]
    dropped = Counter(p.get("category") for p in pairs) - Counter(p.get("category") for p in kept)
    return kept, {str(category): n for category, n in sorted(dropped.items(), key=lambda kv: str(kv[0]))}


def decision_counts(pairs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per decision, how often it is the chosen and the rejected side of a pair whose sides decided differently.

    Pairs whose sides made the same decision are counted under ``"same decision"`` (``"pairs"``).
    """
    counts: dict[str, dict[str, int]] = {}
    same = 0
    for pair in pairs:
        chosen, rejected = _decisions(pair)
        if chosen == rejected:
            same += 1
            continue
        counts.setdefault(chosen, {"chosen": 0, "rejected": 0})["chosen"] += 1
        counts.setdefault(rejected, {"chosen": 0, "rejected": 0})["rejected"] += 1
    return dict(sorted(counts.items())) | {"same decision": {"pairs": same}}


def _decisions(pair: dict[str, Any]) -> tuple[str, str]:
    """(chosen, rejected) decisions: as paired, else read from the sides (text or an assistant message)."""
    if "decisions" in pair:
        return pair["decisions"][0], pair["decisions"][1]

    def side(value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {"role": "assistant", "content": value}

    return decision(side(pair["chosen"])), decision(side(pair["rejected"]))


def _decision_lean(chosen: int, rejected: int, max_ratio: float) -> bool:
    # A decision may be one side once with no counterpart; beyond that, within max_ratio of the other side.
    return max(chosen, rejected) > max_ratio * max(min(chosen, rejected), 1)


def downsample_decisions(pairs: list[dict[str, Any]], max_ratio: float,
                         seed: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(the pairs without those whose decisions lean past ``max_ratio``, the number dropped per chosen -> rejected).

    Same-decision pairs are all kept. The others are taken in a seeded order, each kept when neither of its
    decisions then leans past the ratio (a decision that is the chosen side 3 times and the rejected side
    once is past 2:1); passes repeat until none is added. The kept pairs keep their order.
    """
    made = [_decisions(p) for p in pairs]
    differ = [i for i, (chosen, rejected) in enumerate(made) if chosen != rejected]
    random.Random(seed).shuffle(differ)
    counts: dict[str, list[int]] = {}
    kept = set(range(len(pairs))) - set(differ)
    added = True
    while added:
        added = False
        for i in differ:
            if i in kept:
                continue
            chosen, rejected = made[i]
            c, r = counts.setdefault(chosen, [0, 0]), counts.setdefault(rejected, [0, 0])
            if _decision_lean(c[0] + 1, c[1], max_ratio) or _decision_lean(r[0], r[1] + 1, max_ratio):
                continue
            c[0] += 1
            r[1] += 1
            kept.add(i)
            added = True
    dropped = Counter(" -> ".join(made[i]) for i in differ if i not in kept)
    return [pairs[i] for i in sorted(kept)], dict(sorted(dropped.items()))


def downsample(pairs: list[dict[str, Any]], max_ratio: float, seed: int,
               balance: Iterable[str] = BALANCE_KINDS) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
    """(kept pairs, dropped per category, dropped per chosen -> rejected decision): the cuts ``balance`` names
    ("categories", "decisions"), repeated until none drops a pair (cutting decisions can make a category the
    rarest, and the reverse). Labels are never cut (see :func:`downsample_categories`)."""
    balance = _kinds(balance)
    by_category: Counter[str] = Counter()
    by_decision: Counter[str] = Counter()
    while True:
        categories: dict[str, int] = {}
        decisions: dict[str, int] = {}
        if "categories" in balance:
            pairs, categories = downsample_categories(pairs, max_ratio, seed)
        if "decisions" in balance:
            pairs, decisions = downsample_decisions(pairs, max_ratio, seed)
        by_category.update(categories)
        by_decision.update(decisions)
        if not categories and not decisions:
            return pairs, dict(sorted(by_category.items())), dict(sorted(by_decision.items()))


def _kinds(balance: Iterable[str]) -> set[str]:
    kinds = set(balance)
    if unknown := sorted(kinds - set(BALANCE_KINDS)):
        raise ValueError(f"unknown balance {', '.join(map(repr, unknown))}; choose from {', '.join(BALANCE_KINDS)}")
    return kinds


def check_balance(pairs: list[dict[str, Any]], max_ratio: float, *, allow: bool,
                  suite_categories: Iterable[str] = (), balance: Iterable[str] = BALANCE_KINDS) -> list[str]:
    """Refuse (ImbalanceError) pairs whose category, label or decisions are past ``max_ratio``:1, unless ``allow``.

    ``balance`` names what is held to the ratio ("categories", "labels", "decisions"; all three by default).

    A category of the training suite (``suite_categories``) that gave no pair at all is refused whatever
    ``balance`` says: it is the worst imbalance of all, nothing in the pairs holds that behaviour while DPO
    moves the others (on the demo, the no-tool ``answer`` cases gave none and the adapter began calling
    tools on questions).

    Decisions (:func:`decision`) are counted over the pairs whose sides decided differently: a tool that is
    the rejected side far more often than the chosen one is pushed down on every prompt, its own included (on
    the demo, ``list_dir`` rejected 8 times and chosen 4 made the adapter stop listing directories, though
    every ``list`` pair preferred it).
    """
    from punie.data.labels import imbalance, label_counts

    balance = _kinds(balance)
    counts = label_counts([(p, "preference") for p in pairs])
    problems = []
    fields = (("category",) if "categories" in balance else ()) + (LABEL_FIELDS if "labels" in balance else ())
    for name in fields:
        ratio = imbalance(counts.get(name, {}), max_ratio, min_records=1)
        if ratio is not None:
            table = " : ".join(f"{n} {value!r}" for value, n in counts[name].items())
            problems.append(f"the training pairs' {name} is {table} ({ratio:.1f}:1, above {max_ratio:g}:1)")
    paired = {str(p["category"]) for p in pairs if p.get("category") is not None}
    missing = sorted({str(c) for c in suite_categories} - paired)
    if pairs and missing:
        problems.append(f"no training pair has category {', '.join(map(repr, missing))}, which the training "
                        "suite holds")
    decisions = decision_counts(pairs) if "decisions" in balance else {}
    for name, sides in decisions.items():
        if "chosen" in sides and _decision_lean(sides["chosen"], sides["rejected"], max_ratio):
            problems.append(f"decision {name!r} is the chosen side of {sides['chosen']} pair(s) and the rejected "
                            f"side of {sides['rejected']} whose sides decided differently (past {max_ratio:g}:1; "
                            "DPO would move it on every prompt)")
    if problems and not allow:
        raise ImbalanceError("; ".join(problems) + ". DPO on them would teach the majority; nothing was trained. "
                             "Pass --downsample to drop the excess, --allow-imbalance to train anyway, --balance "
                             "to choose what must balance, or add cases of the rarer values.")
    return problems


def start_comparisons(results: EvalResults, has_start: bool) -> list[dict[str, Any]]:
    """Each new adapter against START (the baseline when there is no START), paired on the held-out cases.

    Not yet Holm-adjusted: :func:`punie.eval.results.finish_comparisons` adjusts them with every other suite's.
    """
    start = results.runs[1] if has_start else results.run(BASELINE)
    others = [r for r in results.runs if r is not start and r.name != BASELINE and r.cases]
    return [compare(start, r) for r in others]


def _dpo_config(config: ImproveConfig, policy: Path | None, pairs: Path, output: Path) -> DPOConfig:
    settings = {"data": pairs, "model": config.model, "adapter": policy, "output": output, "seed": config.seed}
    # The pairs are the policy's own scored drafts: a rejected draft with a broken tool call is what DPO
    # should push down, but punie data check refuses it as bad data. So the check is off unless asked for.
    return resolve_dpo_config({"check_data": False} | config.dpo | {k: v for k, v in settings.items()
                                                                   if v is not None})


def _write_drafts(path: Path, cases: list[EvalCase], drafts: list[list[CaseResult]]) -> None:
    lines = [json.dumps({"case": case.id, "draft": j, "passed": d.passed, "reason": d.reason, "output": d.output}
                        | ({"error": d.error} if d.error else {}))
             for case, row in zip(cases, drafts, strict=True) for j, d in enumerate(row)]
    fileio.write_text(path, "".join(line + "\n" for line in lines))


def _claim(output: Path) -> Path:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output {output} already exists and is not empty; choose a new directory.")
    output.mkdir(parents=True, exist_ok=True)
    return output
