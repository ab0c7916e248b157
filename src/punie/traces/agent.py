"""The tool-using agent loop.

Each step renders the conversation through the model's chat template (tool
schemas included), gets one assistant turn, parses its tool calls with the
shared parser, runs them with the real tools and feeds each result back as a
``tool`` message. The loop ends when the model answers without a tool call, or
after ``max_steps`` assistant turns. Every run is stored as a trace.

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
from punie.serve.client import OpenAIClient
from punie.traces.messages import text_of, to_openai_messages
from punie.traces.store import SUCCESS, ToolCallRecord, Trace, TraceStore, TurnRecord
from punie.traces.tools import Tool, call_tool, tool_schemas

# Short on purpose: the system prompt is rendered into every training example and prompt.
DEFAULT_SYSTEM = "You are a coding agent in a project folder. Use a tool when the task needs the files; " \
                 "otherwise answer directly."
DEFAULT_MAX_STEPS = 8


@dataclass
class Completion:
    """One assistant turn: the parsed calls and text, what the model literally returned (``raw``:
    generated text, or the API message as JSON) and its text content (``text``, default ``raw``)."""

    parsed: ParsedResponse
    raw: str
    text: str | None = None


class Engine(Protocol):
    model_id: str | None
    adapter: str | None

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

    def __init__(self, client: OpenAIClient, *, adapter: str | None = None, max_tokens: int = 256):
        self.client = client
        self.adapter = adapter
        self.max_tokens = max_tokens

    @classmethod
    def at(cls, url: str, *, model: str | None = None, adapter: str | None = None, max_tokens: int = 256,
           timeout_s: float = 300.0) -> ChatCompletionsEngine:
        """The engine for the server at ``url`` (its root, ``/v1`` or full chat-completions URL)."""
        return cls(OpenAIClient(url, model=model, timeout_s=timeout_s), adapter=adapter, max_tokens=max_tokens)

    @property
    def model_id(self) -> str | None:
        return self.client.model or self.client.base_url

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        message = self.client.chat_message(to_openai_messages(messages), tools, max_tokens=self.max_tokens,
                                           temperature=0.0)
        return Completion(parse_message(message), json.dumps(message, ensure_ascii=False),
                          text_of(message.get("content")))

    def close(self) -> None:
        self.client.close()


@dataclass
class AgentResult:
    trace: Trace
    answer: str | None
    outcome: str
    steps: int = 0
    errors: list[str] = field(default_factory=list)


def run_agent(task: str, *, engine: Engine, tools: dict[str, Tool], system: str | None = DEFAULT_SYSTEM,
              max_steps: int = DEFAULT_MAX_STEPS, store: TraceStore | None = None, category: str | None = None,
              source: str = "agent", meta: dict[str, Any] | None = None,
              on_message: Callable[[dict[str, Any]], None] | None = None) -> AgentResult:
    """Run the loop on one task; the trace is stored in ``store`` when one is given."""
    if max_steps < 1:
        raise ConfigError(f"--max-steps must be at least 1, got {max_steps}")
    schemas = tool_schemas(tools)
    messages: list[dict[str, Any]] = ([{"role": "system", "content": system}] if system else [])
    messages.append({"role": "user", "content": task})
    trace = Trace(messages=messages, tools=schemas, source=source, task=task, category=category,
                  model=engine.model_id, adapter=engine.adapter, meta=dict(meta or {}))
    result = AgentResult(trace=trace, answer=None, outcome="max_steps")
    start = time.perf_counter()
    try:
        _loop(result, engine, tools, max_steps, on_message)
    except Exception as exc:
        result.outcome = "error"
        trace.meta["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        trace.outcome = result.outcome
        trace.duration_s = time.perf_counter() - start
        if store is not None:
            store.add(trace)
    return result


def _loop(result: AgentResult, engine: Engine, tools: dict[str, Tool], max_steps: int,
          on_message: Callable[[dict[str, Any]], None] | None) -> None:
    trace, messages = result.trace, result.trace.messages
    for _ in range(max_steps):
        result.steps += 1
        started = time.perf_counter()
        completion = engine.complete(messages, trace.tools)
        parsed = completion.parsed
        index = len(messages)
        trace.turns.append(TurnRecord(index, completion.raw, time.perf_counter() - started))
        messages.append(_assistant_message(completion))
        _emit(on_message, messages[-1])
        if parsed.errors:
            # The model meant to call a tool but the call is malformed: say so, as a tool result.
            result.errors.extend(parsed.errors)
            messages.append({"role": "tool", "content": "Error: your tool call could not be parsed: "
                                                        + "; ".join(parsed.errors)})
            _emit(on_message, messages[-1])
            continue
        if not parsed.tool_calls:
            result.answer = parsed.content
            result.outcome = SUCCESS
            return
        for position, call in enumerate(parsed.tool_calls):
            outcome = call_tool(tools, call)
            trace.tool_calls.append(ToolCallRecord(index, position, call.name, call.arguments, outcome.content,
                                                   outcome.is_error, outcome.duration_s))
            messages.append({"role": "tool", "content": outcome.content})
            _emit(on_message, messages[-1])


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


def _emit(callback: Callable[[dict[str, Any]], None] | None, message: dict[str, Any]) -> None:
    if callback is not None:
        callback(message)
