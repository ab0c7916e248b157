"""punie's one client for OpenAI-compatible servers (``punie serve``, mlx_lm.server, any other).

Every HTTP call punie makes to such a server goes through here: the eval engines,
``ServerProcess.chat``, the agent's endpoint mode and the recording proxy. That
gives one URL rule (:func:`api_url`), one request shape (:meth:`OpenAIClient.chat`)
and one set of errors, told apart by type, never by message text:

* :class:`EndpointUnreachable`: no connection (refused, unknown host, reset).
* :class:`EndpointTimeout`: connected, but no answer in time.
* :class:`EndpointHTTPError`: the server answered with a non-200 status.
* :class:`EndpointReplyError`: a 200 whose body is not a chat completion.

Requests ignore HTTP_PROXY and friends (``trust_env=False``): the servers punie
talks to are usually local, and httpx would otherwise send requests for
127.0.0.1 through a proxy unless NO_PROXY happens to list it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from punie.errors import ConfigError, ServeError

CHAT_COMPLETIONS = "/v1/chat/completions"
EXCERPT_CHARS = 300


class EndpointError(ServeError):
    """Talking to an OpenAI-compatible server failed; ``url`` is the address asked."""

    def __init__(self, message: str, *, url: str):
        super().__init__(message)
        self.url = url


class EndpointUnreachable(EndpointError):
    """No connection to the server (refused, unknown host, dropped before an answer)."""


class EndpointTimeout(EndpointError):
    """The server did not answer within the timeout."""


class EndpointHTTPError(EndpointError):
    """The server answered with an HTTP error status; ``status`` and a ``body`` excerpt say which."""

    def __init__(self, message: str, *, url: str, status: int, body: str):
        super().__init__(message, url=url)
        self.status = status
        self.body = body


class EndpointReplyError(EndpointError):
    """The server answered 200, but not with a chat completion (invalid JSON, no message); ``body`` is an excerpt."""

    def __init__(self, message: str, *, url: str, body: str):
        super().__init__(message, url=url)
        self.body = body


def api_url(base: str, path: str = CHAT_COMPLETIONS) -> str:
    """The URL of ``path`` (e.g. ``/v1/models``) on a server given by its root, its ``/v1`` URL or the full URL.

    ``http://h:8080``, ``http://h:8080/v1/`` and ``http://h:8080/v1/chat/completions``
    all give ``http://h:8080/v1/chat/completions`` for the default path.
    """
    url = base.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"server URL {base!r} must start with http:// or https:// "
                          "(for example http://127.0.0.1:8080/v1).")
    versioned = path == "/v1" or path.startswith("/v1/")
    tail = path[3:] if versioned else path
    if tail and url.endswith(tail):  # the full URL was given already
        return url
    if versioned and url.endswith("/v1"):
        path = tail
    return url + path


def http_client(timeout_s: float, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client that never goes through a proxy from the environment (see the module docstring)."""
    return httpx.Client(timeout=timeout_s, trust_env=False, transport=transport)


class OpenAIClient:
    """One OpenAI-compatible server at ``base_url`` (root, ``/v1`` or full chat-completions URL).

    ``model`` is sent as the request's ``model`` when given (servers that run
    one model ignore it). ``transport`` replaces the network (tests pass an
    ``httpx.MockTransport``). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, base_url: str, *, model: str | None = None, timeout_s: float = 300.0,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.url = api_url(base_url)
        self.model = model
        self.timeout_s = timeout_s
        self.http = http_client(timeout_s, transport)

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request_body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
                     max_tokens: int = 256, temperature: float = 0.0, **extra: Any) -> dict[str, Any]:
        """The chat-completions request: ``extra`` goes in as is (``top_p``, ``seed``, ``stop`` ...)."""
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if tools:
            body["tools"] = tools
        if self.model:
            body["model"] = self.model
        return body | extra

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
             max_tokens: int = 256, temperature: float = 0.0, timeout: float | None = None,
             **extra: Any) -> dict[str, Any]:
        """POST one chat completion and return the response JSON (checked to hold ``choices[0].message``)."""
        body = self.request_body(messages, tools, max_tokens=max_tokens, temperature=temperature, **extra)
        response = self.send("POST", self.url, json=body, timeout=timeout)
        if response.status_code != 200:
            text = response.text[:EXCERPT_CHARS]
            raise EndpointHTTPError(f"{self.url} answered HTTP {response.status_code}: {text}", url=self.url,
                                    status=response.status_code, body=text)
        try:
            reply = response.json()
        except ValueError as exc:
            text = response.text[:EXCERPT_CHARS]
            raise EndpointReplyError(f"{self.url} answered with invalid JSON: {text!r}", url=self.url,
                                     body=text) from exc
        assistant_message(reply, self.url)  # fail here, not later in a caller, when the reply has no message
        return reply

    def chat_message(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                     **options: Any) -> dict[str, Any]:
        """The assistant message of one chat completion (see :meth:`chat` for the options)."""
        return assistant_message(self.chat(messages, tools, **options), self.url)

    def send(self, method: str, url: str, *, timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        """Any request to the server, its status unchecked; a failed connection raises a typed error."""
        with self._translated(url, timeout):
            return self.http.request(method, url, timeout=timeout or self.timeout_s, **kwargs)

    @contextmanager
    def stream(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed request (``with client.stream(...) as response``); errors while reading are typed too."""
        with self._translated(url, None), self.http.stream(method, url, **kwargs) as response:
            yield response

    @contextmanager
    def _translated(self, url: str, timeout: float | None) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise EndpointTimeout(f"no answer from {url} within {timeout or self.timeout_s:g} s; the server may be "
                                  "overloaded or hung (for punie servers see 'punie serve status' and "
                                  "'punie serve logs NAME').", url=url) from exc
        except httpx.HTTPError as exc:
            raise EndpointUnreachable(f"cannot reach the server at {url} ({type(exc).__name__}: {exc}); is it "
                                      "running? Start one with 'punie serve start' or check the URL.",
                                      url=url) from exc


def assistant_message(response: dict[str, Any], url: str) -> dict[str, Any]:
    """``choices[0].message`` of a chat-completions response; EndpointReplyError when there is none."""
    choices = response.get("choices") if isinstance(response, dict) else None
    message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(
        choices[0], dict) else None
    if not isinstance(message, dict):
        excerpt = str(response)[:EXCERPT_CHARS]
        raise EndpointReplyError(f"{url} answered with something that is not a chat completion (no "
                                 f"choices[0].message): {excerpt}", url=url, body=excerpt)
    return message


def completion_tokens(response: dict[str, Any]) -> int | None:
    """``usage.completion_tokens`` of a chat-completions response, when the server reports it."""
    usage = response.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else None


def chat_completion(url: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
                    max_tokens: int = 256, temperature: float = 0.0, timeout: float = 300.0,
                    **extra: Any) -> dict[str, Any]:
    """One chat completion from the server at ``url`` on a connection of its own; see :meth:`OpenAIClient.chat`."""
    with OpenAIClient(url, timeout_s=timeout) as client:
        return client.chat(messages, tools, max_tokens=max_tokens, temperature=temperature, **extra)


def health(url: str, timeout: float = 2.0) -> str:
    """``ok`` (200), ``unavailable`` (the server answered but cannot generate) or ``no answer``."""
    with http_client(timeout) as http:
        try:
            response = http.get(api_url(url, "/health"))
        except httpx.HTTPError:
            return "no answer"
    return "ok" if response.status_code == 200 else "unavailable"
