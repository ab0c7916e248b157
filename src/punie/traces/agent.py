"""The tool-using agent loop.

Each step renders the conversation through the model's chat template (tool
schemas included), gets one assistant turn, parses its tool calls with the
shared parser, runs them with the real tools and feeds each result back as a
``tool`` message. The loop ends when the model answers without a tool call, or
after ``max_steps`` assistant turns. Every run is stored as a trace. The per-step code is
:class:`AgentEpisode`; :func:`run_episodes` steps several episodes together (the eval batches
their turns), and :func:`run_agent` is one episode driven the same way.

An engine is anything with ``complete(messages, tools) -> Completion``: the
in-process model (:func:`local_engine`), an OpenAI-compatible server
(:class:`ChatCompletionsEngine`), or a scripted policy (the demo data generator, tests).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from punie.chat.template import render
from punie.chat.toolcalls import ParsedResponse, parse_message, parse_text
from punie.errors import ConfigError
from punie.serve.client import OpenAIClient, assistant_message, completion_tokens
from punie.traces.messages import text_of, to_openai_messages
from punie.traces.store import ERROR, FINISHED, INCOMPLETE, MAX_STEPS, ToolCallRecord, Trace, TraceStore, TurnRecord
from punie.traces.tools import Tool, call_tool, tool_schemas

# Short on purpose: the system prompt is rendered into every training example and prompt.
DEFAULT_SYSTEM = "You are a coding agent in a project folder. Use a tool when the task needs the files; " \
                 "otherwise answer directly."
DEFAULT_MAX_STEPS = 8


@dataclass
class Completion:
    """One assistant turn: the parsed calls and text, what the model literally returned (``raw``:
    generated text, or the API message as JSON), its text content (``text``, default ``raw``) and
    how many tokens were generated for it (``tokens``, stop token included, None when unknown)."""

    parsed: ParsedResponse
    raw: str
    text: str | None = None
    tokens: int | None = None  # generated tokens, when the engine says


class Engine(Protocol):
    @property
    def model_id(self) -> str | None: ...

    @property
    def adapter(self) -> str | None: ...

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion: ...


@dataclass
class TemplateEngine:
    """A text generator behind the chat template: prompt in, text out, calls parsed from the text."""

    tokenizer: Any
    generate: Callable[[str], str]
    model_id: str | None = None
    adapter: str | None = None

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        prompt = render(self.tokenizer, messages, tools, add_generation_prompt=True)
        text = self.generate(prompt)
        return Completion(parse_text(text), text)


def local_engine(model: str | None = None, adapter: Path | str | None = None, *, max_tokens: int = 256
                 ) -> TemplateEngine:
    """The in-process model (greedy decoding through ``mlx_lm.generate``)."""
    import mlx_lm

    from punie.models.loading import load
    from punie.models.registry import resolve_model

    mdl, tok = load(model, adapter)

    def generate(prompt: str) -> str:
        return mlx_lm.generate(mdl, tok, prompt, max_tokens=max_tokens, verbose=False)

    return TemplateEngine(tok, generate, model_id=resolve_model(model), adapter=str(adapter) if adapter else None)


class ChatCompletionsEngine:
    """The agent's engine on an OpenAI-compatible server (``punie serve``, mlx_lm.server, others).

    Each turn is one chat completion through :class:`punie.serve.client.OpenAIClient`
    (its typed errors propagate); tool calls come back as API ``tool_calls``.
    """

    def __init__(self, client: OpenAIClient, *, adapter: str | None = None, max_tokens: int = 256,
                 chat: Callable[..., dict[str, Any]] | None = None):
        self.client = client
        self.adapter = adapter
        self.max_tokens = max_tokens
        # What sends a request: the client's chat, or ServerProcess.chat, whose errors name a dead server's log.
        self.chat = chat or client.chat

    @classmethod
    def at(cls, url: str, *, model: str | None = None, adapter: str | None = None, max_tokens: int = 256,
           timeout_s: float = 300.0) -> ChatCompletionsEngine:
        """The engine for the server at ``url`` (its root, ``/v1`` or full chat-completions URL)."""
        return cls(OpenAIClient(url, model=model, timeout_s=timeout_s), adapter=adapter, max_tokens=max_tokens)

    @property
    def model_id(self) -> str | None:
        return self.client.model or self.client.base_url

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        response = self.chat(to_openai_messages(messages), tools, max_tokens=self.max_tokens, temperature=0.0)
        message = assistant_message(response, self.client.url)
        return Completion(parse_message(message), json.dumps(message, ensure_ascii=False),
                          text_of(message.get("content")), completion_tokens(response))

    def close(self) -> None:
        self.client.close()


@dataclass
class AgentResult:
    trace: Trace
    answer: str | None
    outcome: str
    steps: int = 0
    errors: list[str] = field(default_factory=list)
    tokens: int | None = 0  # generated tokens over every turn; None when an engine did not say


Request = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (messages, tool schemas) of one next turn
CompleteMany = Callable[[list[Request]], list[Completion]]
Judge = Callable[[AgentResult], None]


class AgentEpisode:
    """One conversation in progress: the per-step code of the agent loop.

    :func:`run_agent` drives one episode; an eval drives many together (:func:`run_episodes`), so
    each step's assistant turns can come from one batched generation. ``advance`` takes the next
    assistant turn, runs its tool calls and appends their results; ``done`` says the loop is over.
    """

    def __init__(self, task: str, *, tools: dict[str, Tool], system: str | None = DEFAULT_SYSTEM,
                 max_steps: int = DEFAULT_MAX_STEPS, model_id: str | None = None, adapter: str | None = None,
                 category: str | None = None, source: str = "agent", meta: dict[str, Any] | None = None,
                 on_message: Callable[[dict[str, Any]], None] | None = None) -> None:
        if max_steps < 1:
            raise ConfigError(f"--max-steps must be at least 1, got {max_steps}")
        self.tools, self.max_steps, self.on_message = tools, max_steps, on_message
        messages: list[dict[str, Any]] = ([{"role": "system", "content": system}] if system else [])
        messages.append({"role": "user", "content": task})
        trace = Trace(messages=messages, tools=tool_schemas(tools), source=source, task=task, category=category,
                      model=model_id, adapter=adapter, meta=dict(meta or {}))
        # "incomplete" until the loop ends: an interrupted episode is stored as such, not as max_steps.
        self.result = AgentResult(trace=trace, answer=None, outcome=INCOMPLETE)
        self.done = False
        self._started = time.perf_counter()

    @property
    def trace(self) -> Trace:
        return self.result.trace

    def request(self) -> Request:
        """What the engine completes next: the conversation so far and the tool schemas."""
        return self.trace.messages, self.trace.tools

    def advance(self, completion: Completion, duration_s: float | None = None) -> None:
        """Take one assistant turn: record it, run its tool calls, end the loop on an answer or the last step."""
        result, trace, messages = self.result, self.trace, self.trace.messages
        result.steps += 1
        parsed = completion.parsed
        index = len(messages)
        trace.turns.append(TurnRecord(index, completion.raw, duration_s))
        if result.tokens is not None and completion.tokens is not None:
            result.tokens += completion.tokens
        else:
            result.tokens = None  # one turn of unknown length makes the total unknown
        messages.append(_assistant_message(completion))
        self._emit(messages[-1])
        if parsed.errors:
            # The model meant to call a tool but the call is malformed: say so, as a tool result.
            result.errors.extend(parsed.errors)
            messages.append({"role": "tool", "content": "Error: your tool call could not be parsed: "
                                                        + "; ".join(parsed.errors)})
            self._emit(messages[-1])
        elif not parsed.tool_calls:
            result.answer, result.outcome, self.done = parsed.content, FINISHED, True
            return
        else:
            for position, call in enumerate(parsed.tool_calls):
                outcome = call_tool(self.tools, call)
                trace.tool_calls.append(ToolCallRecord(index, position, call.name, call.arguments, outcome.content,
                                                       outcome.is_error, outcome.duration_s))
                messages.append({"role": "tool", "content": outcome.content})
                self._emit(messages[-1])
        if result.steps >= self.max_steps:
            result.outcome, self.done = MAX_STEPS, True

    def fail(self, exc: Exception) -> None:
        """The engine (or a tool runner) raised: the episode ends as an error, with the reason in its meta."""
        self.result.outcome, self.done = ERROR, True
        self.trace.meta["error"] = f"{type(exc).__name__}: {exc}"

    def close(self, store: TraceStore | None = None, judge: Judge | None = None) -> AgentResult:
        """Set the outcome and duration, let ``judge`` score a loop that ended (it may set the outcome to
        passed/failed), and store the trace when a store is given."""
        if judge is not None and self.result.outcome in (FINISHED, MAX_STEPS):
            judge(self.result)
        self.trace.outcome = self.result.outcome
        self.trace.duration_s = time.perf_counter() - self._started
        if store is not None:
            store.add(self.trace)
        return self.result

    def _emit(self, message: dict[str, Any]) -> None:
        if self.on_message is not None:
            self.on_message(message)


def run_episodes(episodes: list[AgentEpisode], complete_many: CompleteMany, *,
                 on_done: Callable[[AgentEpisode], None] | None = None) -> None:
    """Step every unfinished episode together until each is done.

    At each step ``complete_many`` gets the next request of every episode still running and returns
    their assistant turns in order (one batched generation, or one call after another). A step's wall
    time is recorded on each of its turns; with several episodes it is shared, not any one's own.
    ``on_done(episode)`` runs as each one ends. An exception fails every episode still running (an
    interrupt leaves them ``incomplete``).
    """
    for episode in episodes:
        if episode.done and on_done is not None:
            on_done(episode)
    while active := [e for e in episodes if not e.done]:
        started = time.perf_counter()
        try:
            completions = complete_many([e.request() for e in active])
        except Exception as exc:
            for episode in active:
                episode.fail(exc)
            raise
        if len(completions) != len(active):
            raise ConfigError(f"an engine returned {len(completions)} turns for {len(active)} requests")
        elapsed = time.perf_counter() - started
        for episode, completion in zip(active, completions, strict=True):
            episode.advance(completion, elapsed)
            if episode.done and on_done is not None:
                on_done(episode)


def one_at_a_time(engine: Engine) -> CompleteMany:
    """``complete_many`` for an engine that answers one conversation per call."""
    return lambda requests: [engine.complete(messages, tools) for messages, tools in requests]


def run_agent(task: str, *, engine: Engine, tools: dict[str, Tool], system: str | None = DEFAULT_SYSTEM,
              max_steps: int = DEFAULT_MAX_STEPS, store: TraceStore | None = None, category: str | None = None,
              source: str = "agent", meta: dict[str, Any] | None = None,
              on_message: Callable[[dict[str, Any]], None] | None = None, judge: Judge | None = None) -> AgentResult:
    """Run the loop on one task; the trace is stored in ``store`` when one is given.

    ``judge`` scores a loop that ended (passed/failed, see :mod:`punie.eval.tasks`) before the trace
    is stored; without one, an answer is only ``finished``.
    """
    episode = AgentEpisode(task, tools=tools, system=system, max_steps=max_steps, model_id=engine.model_id,
                           adapter=engine.adapter, category=category, source=source, meta=meta, on_message=on_message)
    try:
        run_episodes([episode], one_at_a_time(engine))
    finally:
        episode.close(store, judge)
    return episode.result


def _assistant_message(completion: Completion) -> dict[str, Any]:
    parsed = completion.parsed
    if parsed.errors:
        # Keep the literal text so the broken call stays visible (export rejects such traces).
        text = completion.raw if completion.text is None else completion.text
        return {"role": "assistant", "content": text, "tool_calls":
                [c.to_message_call() for c in parsed.tool_calls], "tool_call_errors": True}
    message: dict[str, Any] = {"role": "assistant", "content": parsed.content}
    if parsed.tool_calls:
        message["tool_calls"] = [c.to_message_call() for c in parsed.tool_calls]
    return message

