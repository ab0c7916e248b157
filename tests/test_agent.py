"""The agent loop, with a scripted fake model, a fake endpoint and (briefly) the tiny random model."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from punie.errors import ConfigError, ServeError
from punie.serve.client import EndpointHTTPError, OpenAIClient
from punie.traces.agent import DEFAULT_SYSTEM, ChatCompletionsEngine, TemplateEngine, run_agent
from punie.traces.export import trace_problems
from punie.traces.store import TraceStore
from punie.traces.tools import make_tools


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model)


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("buy milk\n")
    return root


class ScriptedModel:
    """A fake model: returns canned outputs in order and records every prompt it was given."""

    def __init__(self, *outputs: str) -> None:
        self.outputs = list(outputs)
        self.prompts: list[str] = []

    def generate(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.outputs.pop(0)


def call(name, **arguments):
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def test_loop_runs_real_tools_and_feeds_results_back(tokenizer, workspace):
    model = ScriptedModel(call("read_file", path="notes.txt"),
                          call("write_file", path="todo.txt", content="buy milk"),
                          "Copied the note to todo.txt.<|im_end|>")
    engine = TemplateEngine(tokenizer, model.generate, model_id="fake")
    with TraceStore() as store:
        result = run_agent("Copy notes.txt to todo.txt", engine=engine, tools=make_tools(workspace), store=store,
                           category="edit")
        stored = store.get(result.trace.id)
    assert result.outcome == "finished" and result.answer == "Copied the note to todo.txt." and result.steps == 3
    assert (workspace / "todo.txt").read_text() == "buy milk"
    # The model saw the system prompt, the tool schemas and, later, each tool result through the template.
    assert DEFAULT_SYSTEM in model.prompts[0] and "\nread_file(path: string)" in model.prompts[0]
    assert model.prompts[0].endswith("<|im_start|>assistant\n")
    assert "<tool_response>\nbuy milk\n\n</tool_response>" in model.prompts[1]
    assert "Created todo.txt" in model.prompts[2]
    roles = [m["role"] for m in stored.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert stored.messages[2]["tool_calls"] == [
        {"type": "function", "function": {"name": "read_file", "arguments": {"path": "notes.txt"}}}]
    assert [(c.message_index, c.name, c.is_error) for c in stored.tool_calls] == [(2, "read_file", False),
                                                                                   (4, "write_file", False)]
    assert [t.raw for t in stored.turns][0] == call("read_file", path="notes.txt")
    assert (stored.category, stored.model, stored.outcome, stored.task) == ("edit", "fake", "finished",
                                                                            "Copy notes.txt to todo.txt")
    assert stored.duration_s is not None and stored.duration_s >= 0
    assert trace_problems(stored, tokenizer) == []


def test_tool_errors_go_back_to_the_model(tokenizer, workspace):
    model = ScriptedModel(call("read_file", path="../../etc/passwd"), call("nope"), "I cannot do that.")
    result = run_agent("Read the password file", engine=TemplateEngine(tokenizer, model.generate),
                       tools=make_tools(workspace))
    tool_results = [m["content"] for m in result.trace.messages if m["role"] == "tool"]
    assert "outside the workspace" in tool_results[0] and "unknown tool 'nope'" in tool_results[1]
    assert result.outcome == "finished" and [c.is_error for c in result.trace.tool_calls] == [True, True]


def test_malformed_tool_call_is_reported_to_the_model_and_blocks_export(tokenizer, workspace):
    model = ScriptedModel('<tool_call>\n{"name": "read_file", "arguments": {"path": \n</tool_call>', "Sorry.")
    result = run_agent("Read notes.txt", engine=TemplateEngine(tokenizer, model.generate),
                       tools=make_tools(workspace))
    assert result.outcome == "finished" and result.errors
    assert result.trace.messages[3]["content"].startswith("Error: your tool call could not be parsed")
    assert "does not parse" in trace_problems(result.trace, tokenizer)[0]


def test_max_steps_ends_the_loop(tokenizer, workspace):
    model = ScriptedModel(*[call("list_dir", path=".")] * 5)
    result = run_agent("List forever", engine=TemplateEngine(tokenizer, model.generate), tools=make_tools(workspace),
                       max_steps=2)
    assert result.outcome == "max_steps" and result.steps == 2 and len(model.prompts) == 2
    with pytest.raises(ConfigError, match="at least 1"):
        run_agent("x", engine=TemplateEngine(tokenizer, model.generate), tools=make_tools(workspace), max_steps=0)


def test_a_failing_engine_is_recorded_then_raised(tokenizer, workspace):
    def broken(prompt):
        raise ServeError("server went away")

    with TraceStore() as store:
        with pytest.raises(ServeError):
            run_agent("Hi", engine=TemplateEngine(tokenizer, broken), tools=make_tools(workspace), store=store)
        [trace] = store.iter_traces()
    assert trace.outcome == "error" and "server went away" in trace.meta["error"]


def test_an_interrupted_run_is_stored_as_incomplete(tokenizer, workspace):
    """Regression: Ctrl-C in the middle of a run stored it as max_steps."""
    def interrupted(prompt):
        raise KeyboardInterrupt

    model = ScriptedModel(call("list_dir", path="."))
    steps = iter([model.generate, interrupted])
    with TraceStore() as store:
        with pytest.raises(KeyboardInterrupt):
            run_agent("List", engine=TemplateEngine(tokenizer, lambda p: next(steps)(p)), tools=make_tools(workspace),
                      store=store)
        [trace] = store.iter_traces()
    assert trace.outcome == "incomplete" and len(trace.tool_calls) == 1


def test_endpoint_engine_speaks_openai_and_parses_tool_calls(workspace):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if len(body["messages"]) == 2:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "read_file",
                                                              "arguments": "{\"path\": \"notes.txt\"}"}}]}
        else:
            message = {"role": "assistant", "content": "It says buy milk."}
        return httpx.Response(200, json={"choices": [{"message": message, "finish_reason": "stop"}]})

    engine = ChatCompletionsEngine(OpenAIClient("http://fake:1/v1", model="m",
                                                transport=httpx.MockTransport(handler)))
    result = run_agent("What is in notes.txt?", engine=engine, tools=make_tools(workspace))
    assert result.answer == "It says buy milk." and result.outcome == "finished"
    second = seen[1]
    assert second["model"] == "m" and second["temperature"] == 0 and len(second["tools"]) == 5
    assistant, tool = second["messages"][2], second["messages"][3]
    assert assistant["tool_calls"][0]["function"] == {"name": "read_file", "arguments": "{\"path\": \"notes.txt\"}"}
    assert tool == {"role": "tool", "content": "buy milk\n", "tool_call_id": assistant["tool_calls"][0]["id"]}
    # stored in training form: arguments as an object
    assert result.trace.messages[2]["tool_calls"][0]["function"]["arguments"] == {"path": "notes.txt"}


def test_endpoint_errors_name_the_fix(workspace):
    def handler(request):
        return httpx.Response(500, text="boom")

    engine = ChatCompletionsEngine(OpenAIClient("http://fake:1", transport=httpx.MockTransport(handler)))
    with pytest.raises(EndpointHTTPError) as info:
        run_agent("Hi", engine=engine, tools=make_tools(workspace))
    assert info.value.status == 500 and info.value.body == "boom"


def test_endpoint_mode_ignores_proxy_variables(workspace, monkeypatch):
    """The agent asks a local server directly, whatever HTTP_PROXY says (regression: it went through the proxy)."""
    from test_serve_client import _Server, point_proxy_variables_at_nothing

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    point_proxy_variables_at_nothing(monkeypatch)
    engine = ChatCompletionsEngine.at(f"http://127.0.0.1:{server.server_address[1]}/v1", timeout_s=10)
    try:
        result = run_agent("Hi", engine=engine, tools=make_tools(workspace))
    finally:
        engine.close()
        server.shutdown()
        server.server_close()
    assert result.outcome == "finished" and result.answer == "hello"


def test_local_engine_with_the_tiny_model(tiny_model, workspace):
    from punie.traces.agent import local_engine

    engine = local_engine(str(tiny_model), max_tokens=8)
    with TraceStore() as store:
        result = run_agent("List the files.", engine=engine, tools=make_tools(workspace), store=store, max_steps=2)
        stored = store.get(result.trace.id)
    # A random model says something arbitrary; the loop must still end and keep what it said.
    assert result.outcome in ("finished", "max_steps")
    assert stored.model == str(tiny_model) and stored.turns[0].raw is not None


def test_cli_agent_run_against_an_endpoint(run_cli, workspace):
    replies = iter([{"role": "assistant", "content": call("list_dir", path=".")},
                    {"role": "assistant", "content": "There is one file, notes.txt."}])

    class Upstream(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": next(replies)}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        proc = run_cli("agent", "run", "What files are here?", "--workspace", str(workspace), "--endpoint", url,
                       "--category", "list", timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    assert 'list_dir({"path": "."})' in proc.stdout and "notes.txt" in proc.stdout
    assert "finished after 2 steps; stored as trace 1" in proc.stdout
    shown = run_cli("traces", "show", "1")
    assert shown.returncode == 0 and "There is one file, notes.txt." in shown.stdout
    listed = run_cli("traces", "list")
    assert "What files are here?" in listed.stdout and "list" in listed.stdout


def test_cli_agent_run_refuses_a_missing_workspace(run_cli, tmp_path):
    proc = run_cli("agent", "run", "hi", "--workspace", str(tmp_path / "nope"), "--endpoint", "http://127.0.0.1:9")
    assert proc.returncode == 1 and "Error: workspace" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_agent_run_refuses_without_a_sandbox_unless_told(run_cli, workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH (sandbox-exec has a fixed path on macOS)
    if sys.platform == "darwin":
        pytest.skip("macOS always has sandbox-exec")
    proc = run_cli("agent", "run", "hi", "--workspace", str(workspace), "--endpoint", "http://127.0.0.1:9")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "no OS sandbox" in proc.stderr and "bubblewrap" in proc.stderr and "--no-sandbox" in proc.stderr
    opted = run_cli("agent", "run", "hi", "--workspace", str(workspace), "--endpoint", "http://127.0.0.1:9",
                    "--no-sandbox")
    assert "--no-sandbox: run_command runs programs unconfined" in opted.stderr and "no OS sandbox" not in opted.stderr
