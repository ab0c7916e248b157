"""Engines that evaluate over HTTP (OpenAI chat completions).

``server`` starts one ``punie serve`` process per run (the base alone, then the
base with each adapter) through :class:`punie.serve.ServerProcess`, and sends
the cases one request at a time. ``endpoint`` evaluates any OpenAI-compatible
URL the user already runs, as a single run. Both read the answer's ``content``
and ``tool_calls`` with punie's one tool-call parser.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from punie.errors import ConfigError, ServeError
from punie.eval.engines import EngineOptions, Generation, OnResult
from punie.eval.outputs import ModelOutput
from punie.eval.suite import EvalCase


def completions_url(endpoint: str) -> str:
    """``.../v1/chat/completions`` for a base URL, a ``/v1`` URL or the full path."""
    url = endpoint.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint {endpoint!r} must start with http:// or https://.")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def message_of(response: dict[str, Any]) -> dict[str, Any]:
    """The assistant message of a chat-completions response (or the message itself)."""
    if "choices" in response:
        choices = response.get("choices") or []
        if not choices or not isinstance(choices[0].get("message"), dict):
            raise ServeError(f"the server's answer has no choices[0].message: {str(response)[:200]}")
        message: dict[str, Any] = choices[0]["message"]
        return message
    return response


def body_for(case: EvalCase, max_tokens: int, model: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": case.messages, "max_tokens": max_tokens, "temperature": 0.0}
    if case.tools:
        body["tools"] = case.tools
    if model:
        body["model"] = model
    return body


class EndpointEngine:
    """Any OpenAI-compatible server at ``--endpoint``: one run, no adapters."""

    name = "endpoint"

    def __init__(self, options: EngineOptions):
        if not options.endpoint:
            raise ConfigError("the endpoint engine needs --endpoint URL (an OpenAI-compatible server).")
        self.options = options
        self.url = completions_url(options.endpoint)
        self.client = httpx.Client(timeout=options.timeout_s)

    def prepare(self, adapters: list[Path]) -> None:
        if adapters:
            raise ConfigError("the endpoint engine evaluates the one model the server runs; it cannot switch adapters.")

    def generate(self, adapter: Path | None, cases: list[EvalCase], on_result: OnResult) -> None:
        for i, case in enumerate(cases):
            on_result(i, self._ask(case))

    def _ask(self, case: EvalCase) -> Generation:
        tic = time.perf_counter()
        try:
            response = self.client.post(self.url, json=body_for(case, self.options.max_tokens, self.options.model))
        except httpx.TimeoutException as exc:
            raise ServeError(f"no answer from {self.url} within {self.options.timeout_s:g} s "
                             f"(case {case.id}).") from exc
        except httpx.HTTPError as exc:
            raise ServeError(f"cannot reach {self.url} ({type(exc).__name__}: {exc}); is the server running?") from exc
        latency = time.perf_counter() - tic
        if response.status_code != 200:
            # One bad answer is that case's failure, recorded with the reason; the run goes on.
            error = f"HTTP {response.status_code}: {response.text[:300]}"
            return Generation(ModelOutput.from_text(""), latency, error=error)
        try:
            message = message_of(response.json())
        except (ValueError, ServeError) as exc:
            return Generation(ModelOutput.from_text(""), latency, error=f"unreadable answer: {exc}")
        return Generation(ModelOutput.from_message(message), latency)

    def close(self) -> None:
        self.client.close()


class ServerEngine:
    """One managed mlx_lm.server per run (``punie serve``), one request per case."""

    name = "server"

    def __init__(self, options: EngineOptions):
        self.options = options

    def prepare(self, adapters: list[Path]) -> None:
        """Nothing is shared across runs: each run starts its own server (adapters were checked already)."""

    def generate(self, adapter: Path | None, cases: list[EvalCase], on_result: OnResult) -> None:
        from punie.serve import ServerProcess

        with ServerProcess(model=self.options.model, adapter=adapter, port="auto") as server:
            for i, case in enumerate(cases):
                tic = time.perf_counter()
                try:
                    response = server.chat(case.messages, case.tools, max_tokens=self.options.max_tokens,
                                           temperature=0.0, timeout=self.options.timeout_s)
                except ServeError as exc:
                    # An error answer fails that case; a dead or silent server stops the eval.
                    if not server.alive() or "answered HTTP" not in str(exc):
                        raise
                    on_result(i, Generation(ModelOutput.from_text(""), time.perf_counter() - tic, error=str(exc)))
                    continue
                latency = time.perf_counter() - tic
                on_result(i, Generation(ModelOutput.from_message(message_of(response)), latency))

    def close(self) -> None:
        pass
