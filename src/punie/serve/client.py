"""Talking to a running mlx_lm.server over HTTP (health and OpenAI chat completions).

Requests ignore HTTP_PROXY and friends (``trust_env=False``): managed servers are
local, and httpx would otherwise send requests for 127.0.0.1 through a proxy
unless NO_PROXY happens to list it.
"""

from __future__ import annotations

from typing import Any

import httpx

from punie.errors import ServeError


def health(url: str, timeout: float = 2.0) -> str:
    """``ok`` (200), ``unavailable`` (the server answered but cannot generate) or ``no answer``."""
    try:
        response = httpx.get(f"{url}/health", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return "no answer"
    if response.status_code == 200:
        return "ok"
    return "unavailable"


def chat_completion(url: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
                    max_tokens: int = 256, temperature: float = 0.0, timeout: float = 300.0,
                    **extra: Any) -> dict[str, Any]:
    """POST ``/v1/chat/completions`` and return the response JSON.

    ``extra`` goes into the request body as is (``top_p``, ``seed``, ``stop`` ...).
    Raises ServeError when the server cannot be reached or answers with an error.
    """
    body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature, **extra}
    if tools:
        body["tools"] = tools
    endpoint = f"{url}/v1/chat/completions"
    try:
        response = httpx.post(endpoint, json=body, timeout=timeout, trust_env=False)
    except httpx.TimeoutException as exc:
        raise ServeError(f"no answer from {endpoint} within {timeout:g} s; the server may be overloaded or hung. "
                         "See 'punie serve status' and 'punie serve logs NAME'.") from exc
    except httpx.HTTPError as exc:
        raise ServeError(f"cannot reach the server at {url} ({type(exc).__name__}: {exc}); it is probably not "
                         "running any more. See 'punie serve status'.") from exc
    if response.status_code != 200:
        raise ServeError(f"{endpoint} answered HTTP {response.status_code}: {response.text[:300]}")
    try:
        return response.json()
    except ValueError as exc:
        raise ServeError(f"{endpoint} answered with invalid JSON: {response.text[:300]!r}") from exc
