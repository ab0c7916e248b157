"""punie's tool-aware chat template and how models get it.

The GGUF of the default model ships a ChatML template that ignores ``tools`` and
the ``tool`` role, so the model would never see a tool schema. At import punie
writes its own ChatML template with tools instead (and ``tool_parser_type:
json_tools``), so that training, ``mlx_lm.server``, the agent and eval all render
and parse tool calls the same way.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

TOOL_PARSER = "json_tools"
# Bumped whenever the template's output changes, so cached imports are refreshed.
TEMPLATE_VERSION = 2
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
_FALLBACK_SYSTEM = "You are a helpful AI assistant."


@cache
def _template_body() -> str:
    return resources.files("punie.chat").joinpath("chatml_tools.jinja").read_text(encoding="utf-8")


def chatml_tools_template(default_system: str = _FALLBACK_SYSTEM) -> str:
    """The template text, with ``default_system`` used when no system message is given."""
    # json.dumps yields a double-quoted literal whose escapes Jinja reads the same way.
    return "{%- set default_system = " + json.dumps(default_system) + " -%}\n" + _template_body()


def default_system_prompt(original: str | None) -> str:
    """The system prompt an original ChatML template inserts by default, if any."""
    if original:
        match = re.search(r"<\|im_start\|>system\\?n?\s*(.*?)<\|im_end\|>", original, re.S)
        if match:
            text = match.group(1)
            if text.startswith("\\n"):
                text = text[2:]
            if text.strip() and "{{" not in text and "+" not in text:
                return text.strip().replace("\\n", "\n")
    return _FALLBACK_SYSTEM


def template_for_model(original: str | None, vocab: set[str]) -> tuple[str | None, str | None]:
    """(chat template, tool parser type) to write for a model with this vocabulary.

    ChatML models get punie's tool template; other models keep their own template
    and no tool parser (tool calling is then unsupported for them).
    """
    if all(tok in vocab for tok in CHATML_TOKENS):
        return chatml_tools_template(default_system_prompt(original)), TOOL_PARSER
    return original, None


def render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
           *, add_generation_prompt: bool = False) -> str:
    """Render messages exactly as mlx-lm and mlx_lm.server do (the tokenizer's template)."""
    return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
