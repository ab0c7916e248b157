"""``punie eval --tasks`` and ``punie agent run --check-...`` as a user runs them, and the task report."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from punie import fileio
from punie.eval.task_eval import run_task_eval
from punie.report.eval_report import write_report
from test_eval_engine import make_adapter
from test_report import XSS, _console_messages, _run_chromium
from test_tasks_episodes import call

TASKS = [{"id": "count", "category": "run", "instruction": "What does scripts/count.py print?", "workspace": "ws",
          "max_steps": 2, "checks": [{"type": "answer_includes_output_of", "command": "python scripts/count.py"}]},
         {"id": "notes", "category": "read", "instruction": "What is in notes.txt?", "workspace": "ws", "max_steps": 2,
          "tools": ["read_file"], "checks": [{"type": "answer_contains", "value": "milk"}]}]


@pytest.fixture
def tasks_file(tmp_path) -> Path:
    ws = tmp_path / "ws"
    (ws / "scripts").mkdir(parents=True)
    (ws / "scripts" / "count.py").write_text('print("95 units of 7 products in stock.")\n')
    (ws / "notes.txt").write_text("buy milk\n")
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in TASKS))
    return path


def test_cli_task_eval_end_to_end(tiny_model, tasks_file, tmp_path, run_cli):
    adapter = make_adapter(tiny_model, tmp_path / "strong", 1.0)
    out = tmp_path / "out"
    proc = run_cli("eval", "--tasks", str(tasks_file), "--model", str(tiny_model), "--adapter", str(adapter),
                   "--out", str(out), "--max-tokens", "6", "--record")
    assert proc.returncode == 0, proc.stderr
    assert "task success" in proc.stdout and "baseline" in proc.stdout and "strong" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    assert data["kind"] == "tasks" and data["timing"] == "batched"
    assert [len(r["episodes"]) for r in data["runs"]] == [2, 2]
    # A random model answers nothing useful: every episode fails, with the reason recorded.
    assert all(not e["passed"] and e["failed_checks"] for r in data["runs"] for e in r["episodes"])
    html = (out / "report.html").read_text()
    assert html.count('class="case"') == 2 and "What does scripts/count.py print?" in html
    # --record stored every episode; none passed, so --only-passed has nothing to export.
    listed = run_cli("traces", "list")
    assert listed.stdout.count(" eval ") == 4 and " failed " in listed.stdout
    exported = run_cli("traces", "export", "--out", str(tmp_path / "data"), "--only-passed", "--no-check")
    assert exported.returncode == 1 and "4 skipped as not passed" in exported.stderr


def test_cli_bad_task_line_is_a_clear_error(tasks_file, tmp_path, run_cli):
    with open(tasks_file, "a") as fh:
        fh.write(json.dumps(TASKS[1] | {"id": "escape", "checks": [
            {"type": "file_unchanged", "path": "../tasks.jsonl"}]}) + "\n")
    proc = run_cli("eval", "--tasks", str(tasks_file), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"Error: {tasks_file}:3: checks.0 (file_unchanged): '../tasks.jsonl' is outside the workspace" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_refusals(tiny_model, tasks_file, tmp_path, run_cli):
    both = run_cli("eval", "--tasks", str(tasks_file), "--suite", str(tasks_file))
    assert both.returncode == 1 and "give one of --suite" in both.stderr
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    held = run_cli("eval", "--tasks", str(tasks_file), "--model", str(tiny_model), "--out", str(out))
    assert held.returncode == 1 and "already holds results.json" in held.stderr and "--force" in held.stderr
    assert (out / "results.json").read_text() == "{}"
    from conftest import write_random_model

    other = write_random_model(tmp_path / "other", vocab_size=300)
    wrong = make_adapter(other, tmp_path / "for-other", 0.0)
    refused = run_cli("eval", "--tasks", str(tasks_file), "--model", str(tiny_model), "--adapter", str(wrong),
                      "--out", str(tmp_path / "out2"))
    assert refused.returncode == 1 and "was trained on" in refused.stderr and "Traceback" not in refused.stderr


class _Agent(BaseHTTPRequestHandler):
    """An OpenAI-compatible server playing an agent: reads notes.txt, then quotes it; 500 for 'boom'."""

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        messages = body["messages"]
        if "boom" in messages[1]["content"]:
            self._send(500, {"error": "model crashed"})
            return
        done = any(m["role"] == "tool" for m in messages)
        message = ({"role": "assistant", "content": "It says: buy milk."} if done else
                   {"role": "assistant", "content": call("read_file", path="notes.txt")})
        self._send(200, {"choices": [{"message": message}], "usage": {"completion_tokens": 7}})

    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def agent_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Agent)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_endpoint_engine_runs_episodes_one_at_a_time(agent_server, tasks_file, tmp_path):
    lines = [TASKS[1], TASKS[1] | {"id": "boom", "instruction": "boom"}, TASKS[1] | {"id": "again"}]
    tasks_file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = run_task_eval(tasks_file, endpoint=agent_server, out_dir=tmp_path / "out")
    [run] = results.runs
    assert [(e.id, e.outcome, e.steps, e.tokens) for e in run.episodes] == [
        ("notes", "passed", 2, 14), ("boom", "error", 0, 0), ("again", "passed", 2, 14)]
    assert "HTTP 500" in run.episodes[1].error and not results.batched
    summary = results.to_dict()["runs"][0]["summary"]
    assert (summary["errors"], summary["passed"], summary["mean_tokens"]) == (1, 2, 28 / 3)
    assert summary["time_per_task_s"] == pytest.approx(sum(e.duration_s for e in run.episodes) / 3)


def test_cli_agent_run_with_checks(agent_server, tasks_file, run_cli):
    ws = tasks_file.parent / "ws"
    passed = run_cli("agent", "run", "What is in notes.txt?", "--workspace", str(ws), "--endpoint", agent_server,
                     "--check-answer-contains", "MILK", "--check-answer-matches", r"buy \w+")
    assert passed.returncode == 0, passed.stderr
    assert "passed after 2 steps; stored as trace 1" in passed.stdout
    failed = run_cli("agent", "run", "What is in notes.txt?", "--workspace", str(ws), "--endpoint", agent_server,
                     "--check-answer-contains", "eggs")
    assert "failed after 2 steps; stored as trace 2" in failed.stdout
    assert "failed check answer_contains: the answer does not contain 'eggs'" in failed.stdout
    unchecked = run_cli("agent", "run", "What is in notes.txt?", "--workspace", str(ws), "--endpoint", agent_server)
    assert "finished after 2 steps; stored as trace 3" in unchecked.stdout
    shown = run_cli("traces", "show", "2", "--json")
    assert json.loads(shown.stdout)["meta"]["failed_checks"][0]["type"] == "answer_contains"
    bad = run_cli("agent", "run", "x", "--workspace", str(ws), "--endpoint", agent_server,
                  "--check-answer-matches", "(")
    assert bad.returncode == 1 and "not a valid regular expression" in bad.stderr and "Traceback" not in bad.stderr


def _episode(passed: bool, answer: str, messages: list) -> dict:
    checks = [{"type": "answer_contains", "passed": passed, "reason": "" if passed else "the answer does not "
                                                                                       "contain 'milk'"}]
    return {"id": "notes", "category": "read", "passed": passed, "outcome": "passed" if passed else "failed",
            "checks": checks, "answer": answer, "steps": 2, "tool_calls": 1, "tool_errors": 0, "tokens": 9,
            "duration_s": 0.5, "messages": messages, "error": None, "trace_id": None, "workspace": None}


def test_task_report_shows_episodes_side_by_side_escaped(tmp_path):
    turns = [{"role": "system", "content": "sys"}, {"role": "user", "content": "What is in notes.txt?"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"type": "function", "function": {"name": "read_file", "arguments": {"path": "notes.txt"}}}]},
             {"role": "tool", "content": XSS}]
    base = _episode(False, "Sure, it is " + XSS, [*turns, {"role": "assistant", "content": "Sure, it is " + XSS}])
    tuned = _episode(True, "It says buy milk.", [*turns, {"role": "assistant", "content": "It says buy milk."}])
    summary = {"n": 1, "n_suite": 1, "passed": 0, "accuracy": 0.0, "ci95": [0.0, 0.79], "errors": 0,
               "by_category": {"read": {"n": 1, "passed": 0, "accuracy": 0.0}}, "failed_checks": {"answer_contains": 1},
               "mean_steps": 2.0, "mean_tool_calls": 1.0, "mean_tool_errors": 0.0, "mean_tokens": 9.0,
               "time_per_task_s": 0.5, "elapsed_s": 0.5, "complete": True}
    tuned_summary = summary | {"passed": 1, "accuracy": 1.0, "ci95": [0.21, 1.0], "failed_checks": {},
                               "by_category": {"read": {"n": 1, "passed": 1, "accuracy": 1.0}}}
    comparison = {"run": "tuned", "baseline": "baseline", "n_paired": 1, "delta": 1.0, "ci95": [-0.2, 1.0],
                  "improved": 1, "regressed": 0, "p_value": 1.0, "p_adjusted": 1.0, "significant": False,
                  "verdict": "no significant difference", "note": "", "by_category": {"read": {
                      "n": 1, "baseline_accuracy": 0.0, "accuracy": 1.0, "delta": 1.0, "p_value": 1.0}}, "changed": []}
    data = {"kind": "tasks", "created": "2025-01-01", "suite": {"path": "tasks.jsonl", "cases": 1}, "model": "m",
            "engine": "inprocess", "max_tokens": 64, "timing": "batched", "sandbox": "auto", "interrupted": False,
            "error": None, "runs": [{"name": "baseline", "adapter": None, "summary": summary, "episodes": [base]},
                                    {"name": "tuned", "adapter": "a", "summary": tuned_summary,
                                     "episodes": [tuned]}],
            "comparisons": [comparison],
            "tasks": [{"id": "notes", "category": "read", "instruction": "What is in notes.txt?",
                       "tools": ["read_file"], "checks": [{"type": "answer_contains", "value": "milk"}]}]}
    out = tmp_path / "out"
    fileio.write_json(out / "results.json", data)
    html = write_report(out).read_text()
    assert "<script>document.title" not in html
    assert html.count("&lt;script&gt;document.title") == 3  # two tool results and an answer, as text
    assert html.count("<script") == 1  # only the report's own filter script
    assert "answer_contains: the answer does not contain &#39;milk&#39;" in html  # which check failed and why
    assert html.count('read_file({&#34;path&#34;: &#34;notes.txt&#34;})') == 2  # each run's tool call
    assert "final answer" in html and "It says buy milk." in html and "95% CI 21.0% to 100.0%" in html
    assert "passed · 2 steps · 1 tool call · 9 tokens" in html
    assert "0.5 s per task, run 0.5 s for 1 tasks, batched" in html and "answer_contains ×1" in html
    dumped = _run_chromium(out / "report.html", tmp_path, "--dump-dom")
    assert dumped.returncode == 0 and _console_messages(dumped.stderr) == []
    assert "1 of 1 tasks shown" in dumped.stdout


@pytest.mark.slow
def test_server_engine_runs_the_same_episodes_as_inprocess(tiny_model, tasks_file, tmp_path):
    adapter = make_adapter(tiny_model, tmp_path / "strong", 1.0)
    served = run_task_eval(tasks_file, model=str(tiny_model), adapters=[adapter], engine="server", max_tokens=6,
                           out_dir=tmp_path / "server")
    local = run_task_eval(tasks_file, model=str(tiny_model), adapters=[adapter], max_tokens=6,
                          out_dir=tmp_path / "inprocess")
    assert [r.name for r in served.runs] == ["baseline", "strong"] and not served.batched and local.batched
    for s_run, l_run in zip(served.runs, local.runs, strict=True):
        assert [(e.id, e.answer, e.steps) for e in s_run.episodes] == [
            (e.id, e.answer, e.steps) for e in l_run.episodes]
    assert [e.answer for e in served.runs[0].episodes] != [e.answer for e in served.runs[1].episodes]
