"""The recording proxy, against a fake OpenAI-compatible upstream on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from punie.traces.proxy import RecordingProxy, assemble_stream
from punie.traces.store import TraceStore
from test_serve_client import point_proxy_variables_at_nothing

TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a text file.",
                                           "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                                          "required": ["path"]}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\": \"a.txt\"}"}}


class Upstream(BaseHTTPRequestHandler):
    """Answers a first chat request with a tool call, a continued one with text; streams on request."""

    requests: list[tuple[str, str, dict]] = []

    def do_GET(self):  # noqa: N802
        self.requests.append(("GET", self.path, {}))
        self._send(200, {"object": "list", "data": [{"id": "fake-model"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        if body.get("model") == "broken":
            self._send(500, {"error": "boom"})
        elif body.get("model") == "cut":  # a stream that breaks off: promises more bytes than it sends
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n')
            self.wfile.flush()
        elif body.get("stream"):
            self._stream()
        elif len(body["messages"]) <= 2:
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                          "finish_reason": "tool_calls"}]})
        else:
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": "It says A."},
                                          "finish_reason": "stop"}]})

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for delta in ({"role": "assistant", "content": "Hel"}, {"content": "lo"},
                      {"tool_calls": [{"index": 0, "function": {"name": "read_file", "arguments": "{\"path\": "}}]},
                      {"tool_calls": [{"index": 0, "function": {"arguments": "\"b.txt\"}"}}]}):
            self.wfile.write(f"data: {json.dumps({'choices': [{'delta': delta}]})}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    Upstream.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream, tmp_path):
    store = TraceStore(tmp_path / "traces.sqlite")
    with RecordingProxy(upstream, store, category="read", log=open("/dev/null", "w")) as server:  # noqa: SIM115
        yield server
    store.close()


def chat(proxy, messages, **extra):
    return httpx.post(f"{proxy.url}/v1/chat/completions", json={"model": "m", "messages": messages, "tools": TOOLS,
                                                                 **extra}, timeout=10, trust_env=False)


def test_proxy_binds_to_localhost(proxy):
    assert proxy.url.startswith("http://127.0.0.1:")


def test_chat_completions_are_forwarded_and_recorded(proxy):
    asked = [{"role": "user", "content": "What is in a.txt?"}]
    reply = chat(proxy, asked)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["tool_calls"] == [CALL]
    assert Upstream.requests[0][2]["tools"] == TOOLS  # forwarded unchanged
    [trace] = list(proxy.store.iter_traces())
    assert (trace.source, trace.category, trace.model, trace.outcome) == ("proxy", "read", "m", "incomplete")
    assert trace.task == "What is in a.txt?"
    assert trace.tools == TOOLS
    assert trace.messages[-1] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "read_file", "arguments": {"path": "a.txt"}}}]}
    assert trace.turns[0].message_index == 1 and json.loads(trace.turns[0].raw)["tool_calls"] == [CALL]


def test_a_continued_conversation_extends_its_trace(proxy):
    first = [{"role": "user", "content": "What is in a.txt?"}]
    message = chat(proxy, first).json()["choices"][0]["message"]
    follow = [*first, message, {"role": "tool", "tool_call_id": "call_1", "content": "A"}]
    assert chat(proxy, follow).json()["choices"][0]["message"]["content"] == "It says A."
    [trace] = list(proxy.store.iter_traces())
    assert [m["role"] for m in trace.messages] == ["user", "assistant", "tool", "assistant"]
    assert trace.outcome == "finished" and len(trace.turns) == 2
    assert [(c.name, c.arguments, c.result) for c in trace.tool_calls] == [("read_file", {"path": "a.txt"}, "A")]
    # a different conversation starts a new trace
    chat(proxy, [{"role": "user", "content": "Something else"}])
    assert proxy.store.count() == 2


def test_other_paths_are_forwarded_not_recorded(proxy):
    reply = httpx.get(f"{proxy.url}/v1/models", timeout=10, trust_env=False)
    assert reply.json()["data"][0]["id"] == "fake-model"
    assert Upstream.requests == [("GET", "/v1/models", {})]
    assert proxy.store.count() == 0


def test_upstream_errors_pass_through_unrecorded(proxy):
    reply = chat(proxy, [{"role": "user", "content": "x"}], model="broken")
    assert reply.status_code == 500 and reply.json() == {"error": "boom"}
    assert proxy.store.count() == 0


def test_unreachable_upstream_is_a_502(tmp_path):
    with TraceStore(tmp_path / "t.sqlite") as store, \
            RecordingProxy("http://127.0.0.1:9", store, log=open("/dev/null", "w")) as server:  # noqa: SIM115
        reply = chat(server, [{"role": "user", "content": "x"}])
    assert reply.status_code == 502 and "upstream" in reply.json()["error"]["message"]


def test_streaming_is_passed_through_and_recorded(proxy):
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", timeout=10, trust_env=False,
                      json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        body = b"".join(r.iter_raw())
    assert body.count(b"data:") == 5 and body.endswith(b"data: [DONE]\n\n")
    [trace] = list(proxy.store.iter_traces())
    assert trace.messages[-1] == {"role": "assistant", "content": "Hello", "tool_calls": [
        {"type": "function", "function": {"name": "read_file", "arguments": {"path": "b.txt"}}}]}


def test_upstream_with_v1_suffix(upstream, tmp_path):
    with TraceStore(tmp_path / "t.sqlite") as store, \
            RecordingProxy(upstream + "/v1", store, log=open("/dev/null", "w")) as server:  # noqa: SIM115
        assert httpx.get(f"{server.url}/v1/models", timeout=10, trust_env=False).status_code == 200
    assert Upstream.requests[0][1] == "/v1/models"


def test_assemble_stream_ignores_noise():
    data = b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n: comment\n\ndata: nonsense\n\ndata: [DONE]\n\n'
    assert assemble_stream(data) == {"role": "assistant", "content": "a"}


def test_proxy_variables_are_ignored_upstream(upstream, tmp_path, monkeypatch):
    """HTTP_PROXY pointing nowhere must not reroute the proxy's own upstream requests (regression)."""
    point_proxy_variables_at_nothing(monkeypatch)
    with TraceStore(tmp_path / "t.sqlite") as store, \
            RecordingProxy(upstream, store, log=open("/dev/null", "w")) as server:  # noqa: SIM115
        reply = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "m", "messages": [
            {"role": "user", "content": "hi"}]}, timeout=10, trust_env=False)
        assert reply.status_code == 200, reply.text
        assert len(list(store.iter_traces())) == 1


def test_a_stream_that_breaks_off_is_logged_not_patched_with_a_502(upstream, tmp_path):
    log = tmp_path / "proxy.log"
    with TraceStore(tmp_path / "t.sqlite") as store, open(log, "w") as log_file, \
            RecordingProxy(upstream, store, log=log_file) as server:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=10, trust_env=False,
                          json={"model": "cut", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
            status, body = r.status_code, b"".join(r.iter_raw())
        assert store.count() == 0
    assert status == 200 and body.startswith(b"data: ") and b"502" not in body and b"upstream" not in body
    assert "upstream stream failed" in log.read_text()
