"""``punie eval`` as a user runs it, and the HTTP engines (a fake OpenAI endpoint, a real punie serve)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from punie.errors import ConfigError
from punie.eval import run_eval
from punie.report.eval_report import write_report
from test_eval_engine import make_adapter, write_suite
from test_serve_client import point_proxy_variables_at_nothing

READ_FILE = {"type": "function", "function": {"name": "read_file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}


@pytest.fixture(scope="module")
def strong_adapter(tiny_model, tmp_path_factory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("cli") / "strong", 1.0)


def test_cli_eval_end_to_end(tiny_model, strong_adapter, tmp_path, run_cli):
    suite = write_suite(tmp_path / "suite.jsonl", n=3)
    out = tmp_path / "out"
    proc = run_cli("eval", "--suite", str(suite), "--model", str(tiny_model), "--adapter", str(strong_adapter),
                   "--out", str(out), "--max-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    assert "baseline" in proc.stdout and "strong" in proc.stdout and "p (McNemar)" in proc.stdout
    assert str(out / "report.html") in proc.stdout.replace("\n", "")
    data = json.loads((out / "results.json").read_text())
    assert [len(r["cases"]) for r in data["runs"]] == [3, 3]
    assert data["comparisons"][0]["verdict"] == "no significant difference"  # 3 cases can never be significant


def test_cli_bad_suite_line_is_a_clear_error(tmp_path, run_cli):
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"id": "a", "messages": [{"role": "user", "content": "x"}], "scorer": "exact", '
                     '"expect": {"answer": "y"}}\n{"id": "b", "messages": \n')
    proc = run_cli("eval", "--suite", str(suite), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert f"Error: {suite}:2: not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_adapter_for_another_model_is_refused(tiny_model, default_model, tmp_path, run_cli):
    wrong = make_adapter(default_model, tmp_path / "for-smollm", 0.0, rank=2)
    proc = run_cli("eval", "--suite", str(write_suite(tmp_path / "suite.jsonl")), "--model", str(tiny_model),
                   "--adapter", str(wrong), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "was trained on" in proc.stderr and "hidden_size 576 vs 64" in proc.stderr
    assert "Traceback" not in proc.stderr


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Answers like an OpenAI server: a tool call for 'file' questions, HTTP 500 for 'boom', text otherwise."""

    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeOpenAI.requests.append({"path": self.path, "body": body})
        question = body["messages"][-1]["content"]
        if "boom" in question:
            self._send(500, {"error": "model crashed"})
            return
        if "file" in question:
            message = {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                       "function": {"name": "read_file", "arguments": json.dumps({"path": "setup.cfg"})}}]}
        else:
            message = {"role": "assistant", "content": "The answer is <answer>4</answer>"}
        self._send(200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_endpoint() -> Iterator[str]:
    _FakeOpenAI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_endpoint_engine_reads_openai_tool_calls(fake_endpoint, tmp_path):
    lines = [
        {"id": "t1", "messages": [{"role": "user", "content": "show the file setup.cfg"}], "tools": [READ_FILE],
         "scorer": "tool_call", "expect": {"tool_calls": [{"name": "read_file", "arguments": {"path": "setup.cfg"}}]}},
        {"id": "n1", "messages": [{"role": "user", "content": "2+2?"}], "scorer": "numeric", "expect": {"answer": "4"}},
        {"id": "x1", "messages": [{"role": "user", "content": "boom"}], "scorer": "numeric", "expect": {"answer": "4"}},
    ]
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = run_eval(suite, endpoint=fake_endpoint + "/v1", max_tokens=32, out_dir=tmp_path / "out",
                       on_written=write_report)
    assert results.engine == "endpoint" and [r.name for r in results.runs] == ["endpoint"]
    by_id = {c.id: c for c in results.runs[0].cases}
    assert by_id["t1"].passed and by_id["t1"].tool_calls == [{"name": "read_file", "arguments": {"path": "setup.cfg"}}]
    assert by_id["n1"].passed
    assert not by_id["x1"].passed and "HTTP 500" in (by_id["x1"].error or "")
    assert "engine error" in by_id["x1"].reason
    first = _FakeOpenAI.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["body"]["temperature"] == 0 and first["body"]["max_tokens"] == 32
    assert first["body"]["tools"] == [READ_FILE]
    assert "tools" not in _FakeOpenAI.requests[1]["body"]
    # one request at a time: each case's latency is its own, and the report says so
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["timing"] == "per_case" and data["batch_size"] is None
    latencies = [case["latency_s"] for case in data["runs"][0]["cases"]]
    assert all(t is not None and t > 0 for t in latencies)
    assert data["runs"][0]["summary"]["mean_latency_s"] == pytest.approx(sum(latencies) / 3)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "per case" in html and "tokens/s" not in html


def test_endpoint_engine_ignores_proxy_variables(fake_endpoint, tmp_path, monkeypatch):
    """A local endpoint is asked directly, whatever HTTP_PROXY says (regression: it went through the proxy)."""
    point_proxy_variables_at_nothing(monkeypatch)
    results = run_eval(write_suite(tmp_path / "suite.jsonl", n=2), endpoint=fake_endpoint, max_tokens=8,
                       out_dir=tmp_path / "out")
    assert [c.error for c in results.runs[0].cases] == [None, None]
    assert len(_FakeOpenAI.requests) == 2


def test_endpoint_refuses_adapters(fake_endpoint, strong_adapter, tmp_path):
    with pytest.raises(ConfigError, match="cannot switch adapters"):
        run_eval(write_suite(tmp_path / "suite.jsonl"), endpoint=fake_endpoint, adapters=[strong_adapter],
                 out_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="cannot be combined with --engine server"):
        run_eval(write_suite(tmp_path / "suite.jsonl"), endpoint=fake_endpoint, engine="server",
                 out_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="must start with http"):
        run_eval(write_suite(tmp_path / "suite.jsonl"), endpoint="localhost:8080", out_dir=tmp_path / "out")


@pytest.mark.slow
def test_server_engine_matches_inprocess(tiny_model, strong_adapter, tmp_path):
    suite = write_suite(tmp_path / "suite.jsonl", n=3)
    served = run_eval(suite, model=str(tiny_model), adapters=[strong_adapter], engine="server", max_tokens=6,
                      out_dir=tmp_path / "server")
    local = run_eval(suite, model=str(tiny_model), adapters=[strong_adapter], engine="inprocess", max_tokens=6,
                     out_dir=tmp_path / "inprocess")
    assert [r.name for r in served.runs] == ["baseline", "strong"]
    for s_run, l_run in zip(served.runs, local.runs, strict=True):
        assert [c.output for c in s_run.cases] == [c.output for c in l_run.cases]
    assert [c.output for c in served.runs[0].cases] != [c.output for c in served.runs[1].cases]


def test_cli_ctrl_c_keeps_finished_cases(tiny_model, strong_adapter, tmp_path, punie_home):
    suite = write_suite(tmp_path / "suite.jsonl", n=48)
    out = tmp_path / "out"
    env = dict(os.environ, PUNIE_HOME=str(punie_home))
    env.pop("PUNIE_BLAS_REEXEC", None)
    proc = subprocess.Popen([sys.executable, "-m", "punie", "eval", "--suite", str(suite), "--model", str(tiny_model),
                             "--adapter", str(strong_adapter), "--out", str(out), "--max-tokens", "64",
                             "--batch-size", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "results.json").exists():  # written when the baseline run is complete
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the baseline run did not finish in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Interrupted: kept" in stderr and "Traceback" not in stderr
    data = json.loads((out / "results.json").read_text())
    assert data["interrupted"] is True
    assert len(data["runs"][0]["cases"]) == 48
    # The signal can land while the baseline's results.json is still being written, before the
    # adapter run is started: then there is no second run. Either way it must be unfinished.
    assert len(data["runs"]) == 1 or len(data["runs"][1]["cases"]) < 48
    assert (out / "report.html").is_file()


def test_server_failure_mid_run_keeps_finished_cases(fake_endpoint, tmp_path, monkeypatch):
    from punie.serve.client import EndpointUnreachable, OpenAIClient

    real_chat = OpenAIClient.chat
    asked = []

    def dying(self, messages, tools=None, **options):
        asked.append(messages)
        if len(asked) == 3:
            raise EndpointUnreachable("cannot reach the server (it died)", url=self.url)
        return real_chat(self, messages, tools, **options)

    monkeypatch.setattr(OpenAIClient, "chat", dying)
    with pytest.raises(EndpointUnreachable, match="it died"):
        run_eval(write_suite(tmp_path / "suite.jsonl", n=5), endpoint=fake_endpoint, out_dir=tmp_path / "out",
                 on_written=write_report)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["interrupted"] and "it died" in data["error"]
    assert [c["id"] for c in data["runs"][0]["cases"]] == ["c0", "c1"]
    assert "it died" in (tmp_path / "out" / "report.html").read_text()


def test_http_engines_tell_failures_apart_by_type():
    """An error answer fails its case; a server that is gone or silent stops the eval (no matching on text)."""
    from punie.eval.engines import EngineOptions
    from punie.eval.http import answer_cases
    from punie.eval.suite import EvalCase
    from punie.serve.client import EndpointHTTPError, EndpointReplyError, EndpointTimeout, EndpointUnreachable

    url = "http://h:1/v1/chat/completions"
    answers = {"ok": {"choices": [{"message": {"role": "assistant", "content": "4"}}], "usage": {
                   "completion_tokens": 3}},
               "status": EndpointHTTPError("the server said no", url=url, status=400, body="bad request"),
               "shape": EndpointReplyError("not a completion", url=url, body="{}"),
               "gone": EndpointUnreachable("refused", url=url),
               "slow": EndpointTimeout("too slow", url=url)}

    def chat(messages, tools, **options):
        answer = answers[messages[-1]["content"]]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def case(text: str) -> EvalCase:
        return EvalCase(id=text, messages=[{"role": "user", "content": text}], scorer="numeric",
                        expect={"answer": "4"})

    got: dict[int, Any] = {}
    answer_cases(chat, url, [case("ok"), case("status"), case("shape")], EngineOptions(), got.__setitem__)
    assert got[0].error is None and got[0].output.content == "4" and got[0].tokens == 3
    assert got[0].latency_s is not None and got[0].latency_s >= 0
    assert got[1].error == "the server said no" and got[2].error == "not a completion"
    for stopper, error in (("gone", EndpointUnreachable), ("slow", EndpointTimeout)):
        with pytest.raises(error):
            answer_cases(chat, url, [case(stopper)], EngineOptions(), got.__setitem__)
