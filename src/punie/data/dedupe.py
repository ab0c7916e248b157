"""Exact and near-duplicate records, by hashing.

Only the format's own keys count (``messages``, ``tools``, ``prompt``, ...):
two records that differ only in ``id`` or ``category`` are the same example.

* exact: the same JSON content (key order ignored).
* near: the same text after lower-casing and turning every run of punctuation
  and whitespace into one space, so "Read a.txt" and "read  A.TXT!" match, and a
  tool call's arguments match whether written as an object or a JSON string.

Hashing is one pass and a dict lookup per record, so 10k records take
milliseconds. It does not find paraphrases; that would need embeddings or
MinHash over shingles, which we judged not worth it for this check.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from punie.data.formats import FORMAT_KEYS

_NON_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class RecordKeys:
    exact: str
    near: str


def record_keys(record: dict[str, Any]) -> RecordKeys:
    content = {k: v for k, v in record.items() if k in FORMAT_KEYS}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False)
    near = _NON_WORD.sub(" ", _unescape_strings(content).lower()).strip()
    return RecordKeys(exact=_digest(text), near=_digest(near))


def _unescape_strings(value: Any) -> str:
    """All keys and string values of a JSON value, in order, with JSON strings inside strings opened."""
    if isinstance(value, dict):
        return " ".join(f"{k} {_unescape_strings(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return " ".join(_unescape_strings(v) for v in value)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return _unescape_strings(json.loads(value))
        except json.JSONDecodeError:
            pass
    return str(value)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@dataclass
class DuplicateIndex:
    """Records seen so far, by exact and near key, mapped to their line."""

    exact: dict[str, int] = field(default_factory=dict)
    near: dict[str, int] = field(default_factory=dict)

    def match(self, keys: RecordKeys) -> tuple[str, int] | None:
        """("duplicate" or "near-duplicate", line of the earlier record), or None."""
        if keys.exact in self.exact:
            return "duplicate", self.exact[keys.exact]
        if keys.near in self.near:
            return "near-duplicate", self.near[keys.near]
        return None

    def add(self, keys: RecordKeys, line: int) -> None:
        self.exact.setdefault(keys.exact, line)
        self.near.setdefault(keys.near, line)
