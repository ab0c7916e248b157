"""Shared prompt prefixes: prefill the common part of many prompts once.

Suite cases usually share a long beginning (the system prompt and the same
tool schemas, often hundreds of tokens) and differ only in the user's turn.
Prompts are grouped by common token prefix; each group's prefix is run through
the model once into a KV cache, and every member starts from that cache with
only its own suffix left to prefill. mlx-lm's ``BatchGenerator`` merges such
caches into its batch (copying them, so one cache can seed many prompts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIN_PREFIX = 16  # shorter shared beginnings are not worth a separate prefill
MAX_GROUP = 512  # bounds the grouping search; a larger group only saves one more prefix prefill


@dataclass(frozen=True)
class PrefixGroup:
    members: list[int]  # prompt indices
    length: int  # tokens shared by every member (0: no shared prefix)


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_groups(prompts: list[list[int]], min_prefix: int = MIN_PREFIX,
                  max_group: int = MAX_GROUP) -> list[PrefixGroup]:
    """Group prompts by shared beginning, saving as much prefill as possible.

    Sorting puts prompts with common prefixes next to each other; a group is a
    run of neighbours, and its shared length is the smallest common prefix of
    adjacent members. A group of ``k`` prompts sharing ``L`` tokens saves
    ``(k - 1) * L`` tokens of prefill; dynamic programming over the sorted order
    picks the runs that save the most (so a long shared tool block is not given
    up for a short shared system prompt). Every member keeps at least one token
    of its own to prefill.
    """
    if not prompts:
        return []
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    # adjacent[k]: tokens shared by order[k] and order[k + 1], capped so each keeps one token
    adjacent = [min(_common(prompts[a], prompts[b]), len(prompts[a]) - 1, len(prompts[b]) - 1)
                for a, b in zip(order, order[1:], strict=False)]
    best = [0] * (len(order) + 1)  # best[j]: most tokens saved by grouping the first j prompts
    start = list(range(len(order) + 1))  # start[j]: where the last group of that best split begins
    for j in range(1, len(order) + 1):
        best[j], start[j] = best[j - 1], j - 1  # order[j - 1] alone
        shared = -1
        for i in range(j - 2, max(-1, j - 1 - max_group), -1):  # the group order[i .. j - 1]
            shared = adjacent[i] if shared < 0 else min(shared, adjacent[i])
            if shared < min_prefix:
                break
            saved = best[i] + (j - 1 - i) * shared
            if saved > best[j]:
                best[j], start[j] = saved, i
    groups: list[PrefixGroup] = []
    j = len(order)
    while j > 0:
        i = start[j]
        length = min(adjacent[i:j - 1]) if j - 1 > i else 0
        groups.append(PrefixGroup([order[k] for k in range(i, j)], length))
        j = i
    return groups[::-1]


def can_share(model: Any) -> bool:
    """True when every layer's cache can be merged into a batch with history (plain KV caches)."""
    from mlx_lm.models.cache import make_prompt_cache

    return all(hasattr(c, "merge") and type(c).__name__ == "KVCache" for c in make_prompt_cache(model))


def prefill(model: Any, tokens: list[int], step: int = 2048) -> list[Any]:
    """A KV cache holding ``tokens`` (run through the model in chunks of ``step``)."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    for start in range(0, len(tokens), step):
        model(mx.array(tokens[start:start + step])[None], cache=cache)
        mx.eval([c.state for c in cache])
    return cache
