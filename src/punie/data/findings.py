"""What ``punie data check`` can report: one registry of codes, each an error or a warning.

Errors stop ``punie train`` (the data would train the wrong thing or crash);
warnings are printed and training goes on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ERROR, WARNING = "error", "warning"

CODES: dict[str, tuple[str, str]] = {
    "missing-split": (ERROR, "train.jsonl or valid.jsonl is missing"),
    "empty-split": (ERROR, "a split file holds no records"),
    "bad-json": (ERROR, "a line is not valid JSON"),
    "bad-encoding": (ERROR, "a line is not UTF-8"),
    "not-object": (ERROR, "a line is JSON but not an object"),
    "no-format": (ERROR, "a record fits no format"),
    "mixed-keys": (ERROR, "a record has the keys of more than one format"),
    "mixed-format": (ERROR, "a record's format differs from the rest of its file"),
    "schema": (ERROR, "a record's fields have the wrong type or shape"),
    "empty-target": (ERROR, "the reply the model is trained to give is empty or whitespace"),
    "identical-pair": (ERROR, "a preference pair's chosen and rejected replies are the same"),
    "tool-call": (ERROR, "an assistant tool call does not parse with the eval parser"),
    "undeclared-tool": (ERROR, "an assistant calls a tool its record does not declare"),
    "no-chat-template": (ERROR, "the tokenizer has no chat template but the data needs one"),
    "template-error": (ERROR, "the chat template fails on a record"),
    "roundtrip": (ERROR, "a rendered tool call does not parse back as itself"),
    "leakage": (ERROR, "a valid/test record duplicates a train record"),
    "missing-test": (WARNING, "no test.jsonl (punie eval needs held-out data)"),
    "blank-line": (WARNING, "a blank line (mlx_lm.lora fails on them)"),
    "unknown-key": (WARNING, "a message has a key the chat template ignores"),
    "message-order": (WARNING, "messages are in an unusual order"),
    "tool-arguments": (WARNING, "tool-call arguments do not match the tool's schema"),
    "too-long": (WARNING, "records longer than --max-seq-length would be truncated"),
    "duplicate": (WARNING, "a record repeats an earlier one in the same split"),
    "near-duplicate": (WARNING, "a record repeats an earlier one up to case, spacing and punctuation"),
    "imbalance": (WARNING, "one label outnumbers another past the ratio threshold"),
    "split-format": (WARNING, "splits use different formats"),
    "shared-arguments": (WARNING, "valid/test tool calls reuse train's argument values past the threshold"),
    "no-tokenizer": (WARNING, "no tokenizer: template, length and round-trip checks skipped"),
}


def severity(code: str) -> str:
    return CODES[code][0]


@dataclass(frozen=True)
class Problem:
    """Something wrong with one record, before it is tied to a file and line."""

    code: str
    message: str


@dataclass(frozen=True)
class Finding:
    """One reported problem: where (file, optional line), which check (code), and what to do."""

    file: str
    line: int | None
    code: str
    message: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
