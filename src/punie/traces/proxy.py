"""A recording proxy for OpenAI-compatible endpoints.

Point any agent at it (``base_url = http://127.0.0.1:PORT/v1``): every request is
forwarded to the upstream unchanged, and each ``/v1/chat/completions`` exchange
(tools and tool calls included) is stored as a trace. An agent resends the whole
conversation on every call, so a request that continues a conversation recorded
earlier by this proxy extends that trace instead of starting a new one.

Streaming requests are passed through chunk by chunk and recorded from the
reassembled deltas. Other paths (``/v1/models`` ...) are forwarded, not recorded.
The proxy binds to 127.0.0.1 only, and talks upstream through punie's one
OpenAI client (:mod:`punie.serve.client`: its URL rule, no proxy from the
environment, typed errors).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from punie.serve.client import EndpointError, OpenAIClient, api_url
from punie.traces.messages import normalize_message, normalize_messages
from punie.traces.store import FINISHED, INCOMPLETE, ToolCallRecord, Trace, TraceStore, TurnRecord

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                         "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"})


class RecordingProxy:
    """The proxy server; use as a context manager (serves in a thread) or call :meth:`serve_forever`."""

    def __init__(self, upstream: str, store: TraceStore, *, port: int = 0, category: str | None = None,
                 timeout_s: float = 600.0, log: Any = None) -> None:
        self.client = OpenAIClient(upstream, timeout_s=timeout_s)
        self.upstream = self.client.base_url
        self.store = store
        self.category = category
        self.log = log if log is not None else sys.stderr
        self._conversations: dict[str, int] = {}  # hash of a recorded conversation -> trace id
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.server.serve_forever(poll_interval=poll_interval)

    def __enter__(self) -> RecordingProxy:
        # A short poll interval makes close() (which waits for the serving loop to notice) quick.
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
        self.server.server_close()
        self.client.close()

    def target(self, path: str) -> str:
        return api_url(self.upstream, path)

    def record(self, request: dict[str, Any], reply: dict[str, Any], duration_s: float) -> int:
        """Store one exchange, extending the trace of the conversation it continues; returns the trace id."""
        asked = normalize_messages(request.get("messages") or [])
        answer = normalize_message(reply)
        messages = [*asked, answer]
        tools = request.get("tools") or []
        with self._lock:
            trace = self._continued(asked, tools)
            if trace is None:
                task = next((m["content"] for m in asked if m["role"] == "user"), None)
                trace = Trace(messages=messages, tools=tools, source="proxy", task=task, category=self.category,
                              model=request.get("model"), duration_s=0.0, meta={"upstream": self.upstream})
            trace.messages = messages
            trace.outcome = INCOMPLETE if answer.get("tool_calls") else FINISHED
            trace.duration_s = (trace.duration_s or 0.0) + duration_s
            trace.turns.append(TurnRecord(len(asked), json.dumps(reply, ensure_ascii=False), duration_s))
            trace.tool_calls = tool_call_records(messages)
            if trace.id is None:
                self.store.add(trace)
            else:
                self.store.replace(trace)
            assert trace.id is not None
            self._conversations[_key(messages, tools)] = trace.id
            return trace.id

    def _continued(self, asked: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Trace | None:
        for length in range(len(asked), 0, -1):
            trace_id = self._conversations.get(_key(asked[:length], tools))
            if trace_id is not None:
                return self.store.get(trace_id)
        return None


def tool_call_records(messages: list[dict[str, Any]]) -> list[ToolCallRecord]:
    """Tool calls of a conversation, each with the tool message that answered it (in order), if any."""
    records: list[ToolCallRecord] = []
    pending: list[ToolCallRecord] = []
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            for position, call in enumerate(message.get("tool_calls") or []):
                fn = call.get("function", call)
                record = ToolCallRecord(index, position, fn.get("name", ""), fn.get("arguments") or {})
                records.append(record)
                pending.append(record)
        elif message["role"] == "tool" and pending:
            record = pending.pop(0)
            record.result = message.get("content")
            record.is_error = str(record.result or "").startswith("Error")
    return records


def _key(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps([messages, tools], sort_keys=True).encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    proxy: RecordingProxy
    _headers_sent = False  # set once a streamed reply has begun: an error after that cannot become a 502

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._forward()

    def do_POST(self) -> None:  # noqa: N802
        self._forward()

    def do_PUT(self) -> None:  # noqa: N802
        self._forward()

    def do_DELETE(self) -> None:  # noqa: N802
        self._forward()

    def do_PATCH(self) -> None:  # noqa: N802
        self._forward()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        print(f"proxy: {format % args}", file=self.proxy.log)

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        request = _chat_request(self.path, body)
        url = self.proxy.target(self.path)
        try:
            if request is not None and request.get("stream"):
                self._stream(url, headers, body, request)
                return
            start = time.perf_counter()
            response = self.proxy.client.send(self.command, url, headers=headers, content=body)
            duration = time.perf_counter() - start
        except EndpointError as exc:
            if self._headers_sent:  # a stream broke midway: the client sees it cut short; say why here
                self.log_message("upstream stream failed: %s", exc)
                return
            self._reply(502, {"content-type": "application/json"},
                        json.dumps({"error": {"message": f"upstream {url} failed: {exc}"}}).encode())
            return
        # Record before replying, so a client that looks at the store next finds the trace.
        if request is not None and response.status_code == 200:
            self._record(request, response.content, duration)
        self._reply(response.status_code, dict(response.headers), response.content)

    def _record(self, request: dict[str, Any], content: bytes, duration: float) -> None:
        try:
            reply = json.loads(content)["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            self.log_message("not recorded: the upstream reply is not a chat completion")
            return
        try:
            trace_id = self.proxy.record(request, reply, duration)
        except Exception as exc:  # the client still gets its answer; the failure is logged, not hidden
            self.log_message("NOT RECORDED: %s: %s", type(exc).__name__, exc)
            return
        self.log_message("recorded trace %s", trace_id)

    def _reply(self, status: int, headers: dict[str, str], content: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def _stream(self, url: str, headers: dict[str, str], body: bytes, request: dict[str, Any]) -> None:
        start = time.perf_counter()
        chunks: list[bytes] = []
        with self.proxy.client.stream("POST", url, headers=headers, content=body) as response:
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            self._headers_sent = True
            self.close_connection = True
            for chunk in response.iter_raw():
                chunks.append(chunk)
                self.wfile.write(chunk)
                self.wfile.flush()
            ok = response.status_code == 200
        self.close_connection = True
        if ok:
            reply = {"choices": [{"message": assemble_stream(b"".join(chunks))}]}
            self._record(request, json.dumps(reply).encode(), time.perf_counter() - start)


def _chat_request(path: str, body: bytes) -> dict[str, Any] | None:
    if not path.split("?")[0].rstrip("/").endswith("/chat/completions"):
        return None
    try:
        request = json.loads(body)
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def assemble_stream(data: bytes) -> dict[str, Any]:
    """The assistant message a stream of ``chat.completion.chunk`` server-sent events adds up to."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        try:
            delta = json.loads(line[5:])["choices"][0].get("delta") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        content.append(delta.get("content") or "")
        for i, part in enumerate(delta.get("tool_calls") or []):
            call = calls.setdefault(part.get("index", i), {"type": "function", "function": {"name": "",
                                                                                            "arguments": ""}})
            fn = part.get("function") or {}
            call["function"]["name"] += fn.get("name") or ""
            args = fn.get("arguments") or ""
            call["function"]["arguments"] += args if isinstance(args, str) else json.dumps(args)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message
