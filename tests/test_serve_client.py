"""punie's one OpenAI-compatible client: request shape, URL rule, no env proxy, and one error type per failure."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from punie.errors import ConfigError, PunieError, ServeError
from punie.serve.client import (
    EndpointError,
    EndpointHTTPError,
    EndpointReplyError,
    EndpointTimeout,
    EndpointUnreachable,
    OpenAIClient,
    api_url,
    chat_completion,
)

HELLO = {"role": "user", "content": "hi"}
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]
REPLY = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
         "usage": {"completion_tokens": 2}}


def mock(handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def answering(status: int = 200, **kwargs) -> httpx.MockTransport:
    return mock(lambda request: httpx.Response(status, **kwargs))


def test_request_shape():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=REPLY)

    with OpenAIClient("http://h:1/v1", model="m", transport=mock(handler)) as client:
        assert client.chat([HELLO], TOOLS, max_tokens=7, temperature=0.5, seed=3) == REPLY
        assert client.chat_message([HELLO]) == REPLY["choices"][0]["message"]
    first, second = (json.loads(r.content) for r in seen)
    assert str(seen[0].url) == "http://h:1/v1/chat/completions" and seen[0].method == "POST"
    assert first == {"model": "m", "messages": [HELLO], "tools": TOOLS, "max_tokens": 7, "temperature": 0.5,
                     "seed": 3}
    # no tools and no model: the keys are left out (some servers reject an empty tools list)
    assert second == {"model": "m", "messages": [HELLO], "max_tokens": 256, "temperature": 0.0}
    with OpenAIClient("http://h:1", transport=mock(handler)) as client:
        client.chat([HELLO])
    assert "model" not in json.loads(seen[-1].content)


def test_http_error_status_is_typed_with_status_and_body():
    client = OpenAIClient("http://h:1", transport=answering(503, text="overloaded " * 100))
    with pytest.raises(EndpointHTTPError) as info:
        client.chat([HELLO])
    error = info.value
    assert error.status == 503 and error.body.startswith("overloaded") and len(error.body) == 300
    assert error.url == "http://h:1/v1/chat/completions"
    assert isinstance(error, EndpointError) and isinstance(error, ServeError) and isinstance(error, PunieError)


def test_invalid_json_is_a_reply_error():
    client = OpenAIClient("http://h:1", transport=answering(200, text="<html>not json</html>"))
    with pytest.raises(EndpointReplyError) as info:
        client.chat([HELLO])
    assert info.value.body == "<html>not json</html>"
    assert not isinstance(info.value, EndpointHTTPError | EndpointUnreachable)


@pytest.mark.parametrize("payload", [{"choices": []}, {"choices": [{"text": "old completions API"}]}, {"id": "x"},
                                     [1, 2]])
def test_json_that_is_not_a_chat_completion_is_a_reply_error(payload):
    client = OpenAIClient("http://h:1", transport=answering(200, json=payload))
    with pytest.raises(EndpointReplyError, match=r"no choices\[0\]\.message"):
        client.chat([HELLO])


def test_timeout_is_typed():
    def handler(request):
        raise httpx.ReadTimeout("slow", request=request)

    client = OpenAIClient("http://h:1", timeout_s=0.5, transport=mock(handler))
    with pytest.raises(EndpointTimeout, match="within 0.5 s"):
        client.chat([HELLO])


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_unreachable_on_a_real_socket():
    url = f"http://127.0.0.1:{_unused_port()}"
    with pytest.raises(EndpointUnreachable, match="punie serve start") as info:
        chat_completion(url, [HELLO], timeout=5)
    assert not isinstance(info.value, EndpointTimeout | EndpointHTTPError)


class _Server(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["Content-Length"]))
        data = json.dumps(REPLY).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def point_proxy_variables_at_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY and friends name a port nobody listens on: a client that honours them cannot connect."""
    dead_proxy = f"http://127.0.0.1:{_unused_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


def test_proxy_variables_are_ignored(monkeypatch):
    """A local server is asked directly even when HTTP_PROXY points at a proxy that is not there."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    point_proxy_variables_at_nothing(monkeypatch)
    try:
        assert chat_completion(f"http://127.0.0.1:{server.server_address[1]}", [HELLO], timeout=10) == REPLY
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("base,path,url", [
    ("http://h:1", "/v1/chat/completions", "http://h:1/v1/chat/completions"),
    ("http://h:1/v1/", "/v1/chat/completions", "http://h:1/v1/chat/completions"),
    ("http://h:1/v1/chat/completions", "/v1/chat/completions", "http://h:1/v1/chat/completions"),
    ("https://api.example/openai/chat/completions", "/v1/chat/completions",
     "https://api.example/openai/chat/completions"),
    ("http://h:1/v1", "/v1/models", "http://h:1/v1/models"),
    ("http://h:1", "/v1/models", "http://h:1/v1/models"),
    ("http://h:1/v1", "/v1", "http://h:1/v1"),
    ("http://h:1", "/health", "http://h:1/health"),
])
def test_api_url(base, path, url):
    assert api_url(base, path) == url


def test_api_url_refuses_a_url_without_scheme():
    with pytest.raises(ConfigError, match="must start with http"):
        api_url("localhost:8080")
