"""The demo's grounded answers and task suites: answers quote the real tool results, checks tell them apart."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from punie.eval.tasks import Episode, check_from_dict, judge, load_tasks, reference_outputs
from punie.traces import demo_data, demo_tasks, grounded, project_tasks, task_suite
from punie.traces.agent import run_agent
from punie.traces.store import FAILED, PASSED

DATA = Path(__file__).resolve().parents[1] / "data"
COMMITTED = DATA / "agent"


def _final_answers(category: str) -> list[tuple[str, str]]:
    """(the tool result, the final answer after it) of every training example of ``category``."""
    found = []
    for line in (COMMITTED / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        *_, tool, answer = record["messages"]
        if record["category"] == category and tool["role"] == "tool" and not answer.get("tool_calls"):
            found.append((tool["content"], answer["content"]))
    return found


def test_read_and_run_answers_quote_the_tool_result():
    reads = [(t, a) for t, a in _final_answers("read") if not t.startswith("Error: ")]
    runs = [(t, a) for t, a in _final_answers("run") if t.startswith("exit code: ") and t.count("\n")]
    assert len(reads) > 30 and len(runs) > 30
    for result, answer in reads:
        assert all(line.rstrip() in answer for line in result.splitlines()[:grounded.QUOTED_LINES]), answer
        assert not re.search(r"has \d+ lines", answer)  # the old template the model parroted with wrong numbers
    for result, answer in runs:
        output = result.split("\n", 1)[1].splitlines()
        assert all(line.rstrip() in answer for line in output[:grounded.QUOTED_LINES]), answer


def test_search_answers_state_the_real_count_and_edit_answers_the_changed_line():
    counted = 0
    for result, answer in _final_answers("search"):
        if result.startswith("No matches") or "defined in" in answer:
            continue
        hits = result.splitlines()
        assert answer.startswith(grounded.count_phrase(len(hits)) + " in "), answer
        assert hits[0].split(": ", 1)[0] in answer
        counted += 1
    assert counted > 30
    changed = [a for _, a in _final_answers("edit") if "now reads:" in a]
    assert len(changed) > 10


def _one_task_per_plan() -> list[demo_tasks.DemoTask]:
    tasks = {}
    for task in demo_tasks.build_tasks("train", 42):
        if task.plan != "answer" and not task.prompt.startswith(("Read src/tally/utils", "Run `rm", "Run `curl")):
            tasks.setdefault(task.plan, task)
    return list(tasks.values())


def _episode(task, tree: Path, tmp: Path, *, wrong: str | None = None) -> str:
    root = shutil.copytree(tree, tmp / f"run-{len(list(tmp.iterdir()))}")
    policy = demo_data.policy_for(task)
    if wrong is not None:
        policy.plan = _with_final_answer(policy.plan, wrong)
    result = run_agent(task.prompt, engine=policy, tools=demo_data.tools_for(task, root),
                       judge=demo_data._judge(task, tree, root))
    return result.outcome


def _with_final_answer(plan, text: str):
    """The plan's tool calls, then ``text`` instead of its final answer."""
    turn = next(plan)
    while "<tool_call>" in turn:
        result = yield turn
        turn = plan.send(result)
    yield text


def test_the_scripted_policy_passes_the_checks_and_a_made_up_answer_fails_them(tmp_path):
    tree = demo_data.training_workspace(DATA / "workspace", tmp_path / "clean")
    runs = tmp_path / "runs"
    runs.mkdir()
    tasks = _one_task_per_plan()
    assert {t.plan for t in tasks} == {"read", "list", "search", "locate", "create", "append", "replace", "run"}
    for task in tasks:
        assert _episode(task, tree, runs) == PASSED, task.prompt
        # Right tool calls, then an answer in the old template's shape: the checks catch it.
        assert _episode(task, tree, runs, wrong="It has 2 lines. It starts with: import os") == FAILED, \
            task.prompt


@pytest.fixture(scope="module")
def suites():
    return {stem: load_tasks(COMMITTED / f"{stem}.jsonl") for stem in task_suite.SUITE_FILES.values()}


def test_task_suites_are_on_committed_held_out_projects(suites):
    for pool, stem in task_suite.SUITE_FILES.items():
        suite = suites[stem]
        assert len(suite.tasks) >= 40 and set(suite.categories) == {"read", "list", "search", "edit", "run"}
        assert {t.workspace.parent for t in suite.tasks} == {(DATA / "tasks").resolve()}
        assert {t.workspace.name.split("-", 1)[0] for t in suite.tasks} == {pool}
    train_templates = set(project_tasks.template_names("train")) | set(project_tasks.template_names("eval"))
    train_templates |= {t for p in demo_tasks.PHRASINGS.values() for t in (*p.train, *p.eval)}
    assert not train_templates & {t for pair in task_suite.TASK_TEMPLATES.values() for t in pair}
    prompts = {json.loads(line)["messages"][1]["content"] for name in ("train.jsonl", "valid.jsonl", "test.jsonl")
               for line in (COMMITTED / name).read_text().splitlines()}
    assert not prompts & {t.spec.instruction for s in suites.values() for t in s.tasks}


def test_an_oracle_episode_passes_every_task_and_a_lazy_one_fails_them(tmp_path, suites):
    """The checks are satisfiable on the committed workspaces (the scripted policy passes all) and not vacuous."""
    for pool, stem in task_suite.SUITE_FILES.items():
        suite = suites[stem]
        outputs = reference_outputs(suite, sandbox="auto" if demo_data._sandbox_level() != "none" else "none")
        built = task_suite.build_task_suite(pool, 42, tmp_path / "tasks", "../tasks")
        assert [b.line for b in built] == [json.loads(x) for x in (COMMITTED / f"{stem}.jsonl").read_text().split("\n")
                                           if x]
        for item, task in zip(built, suite.tasks, strict=True):
            for lazy in (False, True):
                root = shutil.copytree(task.workspace, tmp_path / f"{stem}-{task.id}-{lazy}")
                policy = demo_data.policy_for(item.task)
                if lazy:
                    policy.plan = _with_final_answer(policy.plan, "Done, all good.")

                def evidence(result, root=root, task=task, outputs=outputs):
                    return Episode(answer=result.answer, trace=result.trace, parse_errors=list(result.errors),
                                   workspace=root, pristine=task.workspace, outputs=outputs[task.id])

                result = run_agent(task.spec.instruction, engine=policy, tools=demo_data.tools_for(item.task, root),
                                   judge=judge([check_from_dict(c) for c in item.line["checks"]], evidence))
                assert result.outcome == (FAILED if lazy else PASSED), (task.id, result.trace.meta["failed_checks"])
