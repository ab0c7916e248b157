"""Engines that evaluate over HTTP (OpenAI chat completions), one request per case.

``server`` starts one ``punie serve`` process per run (the base alone, then the
base with each adapter) through :class:`punie.serve.ServerProcess`. ``endpoint``
evaluates any OpenAI-compatible URL the user already runs, as a single run.
Both talk through :mod:`punie.serve.client` and read the answer's ``content``
and ``tool_calls`` with punie's one tool-call parser. Requests go one at a time,
so each case's latency is its own request's wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from punie.errors import ConfigError
from punie.eval.engines import EngineOptions, Generation, OnResult, TurnSource
from punie.eval.outputs import ModelOutput
from punie.eval.suite import EvalCase
from punie.serve.client import (
    EndpointHTTPError,
    EndpointReplyError,
    OpenAIClient,
    assistant_message,
    completion_tokens,
)

Chat = Callable[..., dict[str, Any]]  # OpenAIClient.chat or ServerProcess.chat


def answer_cases(chat: Chat, url: str, cases: list[EvalCase], options: EngineOptions, on_result: OnResult) -> None:
    """Ask ``chat`` each case in turn (greedy) and hand back each answer with its request's latency.

    An error answer (an HTTP error status, a reply that is not a chat
    completion) fails that case with the reason and the run goes on; a server
    that cannot be reached or does not answer in time stops the eval.
    """
    for i, case in enumerate(cases):
        tic = time.perf_counter()
        try:
            response = chat(case.messages, case.tools, max_tokens=options.max_tokens, temperature=0.0,
                            timeout=options.timeout_s)
            message = assistant_message(response, url)
        except (EndpointHTTPError, EndpointReplyError) as exc:
            on_result(i, Generation(ModelOutput.from_text(""), time.perf_counter() - tic, error=str(exc)))
            continue
        latency = time.perf_counter() - tic
        on_result(i, Generation(ModelOutput.from_message(message), latency, tokens=completion_tokens(response)))


class EndpointEngine:
    """Any OpenAI-compatible server at ``--endpoint``: one run, no adapters."""

    name = "endpoint"
    per_case_latency = True

    def __init__(self, options: EngineOptions):
        if not options.endpoint:
            raise ConfigError("the endpoint engine needs --endpoint URL (an OpenAI-compatible server).")
        self.options = options
        self.client = OpenAIClient(options.endpoint, model=options.model, timeout_s=options.timeout_s)

    def prepare(self, adapters: list[Path]) -> None:
        if adapters:
            raise ConfigError("the endpoint engine evaluates the one model the server runs; it cannot switch adapters.")

    def generate(self, adapter: Path | None, cases: list[EvalCase], on_result: OnResult) -> None:
        answer_cases(self.client.chat, self.client.url, cases, self.options, on_result)

    @contextmanager
    def agent_turns(self, adapter: Path | None, *, batched: bool = True) -> Iterator[TurnSource]:
        from punie.traces.agent import ChatCompletionsEngine, one_at_a_time

        yield TurnSource(one_at_a_time(ChatCompletionsEngine(self.client, max_tokens=self.options.max_tokens)),
                         batched=False)

    def close(self) -> None:
        self.client.close()


class ServerEngine:
    """One managed mlx_lm.server per run (``punie serve``), one request per case."""

    name = "server"
    per_case_latency = True

    def __init__(self, options: EngineOptions):
        self.options = options

    def prepare(self, adapters: list[Path]) -> None:
        """Nothing is shared across runs: each run starts its own server (adapters were checked already)."""

    def generate(self, adapter: Path | None, cases: list[EvalCase], on_result: OnResult) -> None:
        from punie.serve import ServerProcess

        with ServerProcess(model=self.options.model, adapter=adapter, port="auto") as server:
            # ServerProcess.chat turns a failure of a server that died into an error naming its log.
            answer_cases(server.chat, server.url, cases, self.options, on_result)

    @contextmanager
    def agent_turns(self, adapter: Path | None, *, batched: bool = True) -> Iterator[TurnSource]:
        from punie.serve import ServerProcess
        from punie.traces.agent import ChatCompletionsEngine, one_at_a_time

        with ServerProcess(model=self.options.model, adapter=adapter, port="auto") as server, \
                OpenAIClient(server.url, timeout_s=self.options.timeout_s) as client:
            engine = ChatCompletionsEngine(client, max_tokens=self.options.max_tokens, chat=server.chat)
            yield TurnSource(one_at_a_time(engine), batched=False)

    def close(self) -> None:
        pass
