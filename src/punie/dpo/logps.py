"""Summed completion log-probs of a batch of pairs, running each pair's prompt once.

The prompts of a batch are left-padded to one width P, so every prompt ends at
position P - 1, and run through the model with batch B. Their keys and values
are then shared by the pair's two replies (chosen rows first, then rejected:
batch 2B), which start at position P. Left padding shifts a pair's absolute
positions, which rotary position encodings do not see (attention depends on
relative positions only); padded keys are masked out. A padded query may attend
to itself only, which keeps its (unused) row finite instead of NaN.

Only completion tokens are scored: the first reply token is predicted from the
prompt's last hidden state, each later one from the reply's previous position,
and the output layer runs on reply positions only. Architectures this does not
cover, or position encodings that depend on the total length, take
:func:`plain_logps`, which runs the full rows.
"""

from __future__ import annotations

from typing import Any

from punie.training.losses import output_head, prefix_sharing_exact


class PairPromptCache:
    """One layer's prompt keys and values (batch B), shared by each pair's two replies (batch 2B).

    Implements the members mlx-lm's attention uses: ``offset``, ``update_and_fetch``
    and ``make_mask``; concatenation rather than in-place writes keeps it differentiable.
    """

    def __init__(self, prompt_mask: Any, reply_mask: Any):
        self.keys: Any = None
        self.values: Any = None
        self.offset = 0
        self._masks = (prompt_mask, reply_mask)

    def update_and_fetch(self, keys: Any, values: Any) -> tuple[Any, Any]:
        import mlx.core as mx

        if self.keys is None:
            self.keys, self.values, self.offset = keys, values, keys.shape[2]
            return keys, values
        shared_k = mx.concatenate([self.keys, self.keys], axis=0)  # chosen rows, then rejected rows
        shared_v = mx.concatenate([self.values, self.values], axis=0)
        return mx.concatenate([shared_k, keys], axis=2), mx.concatenate([shared_v, values], axis=2)

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> Any:
        if window_size is not None:
            raise NotImplementedError("sliding-window attention is not supported by the shared-prompt pass")
        return self._masks[0] if self.keys is None else self._masks[1]


def _masks(prompt_valid: Any, reply_width: int) -> tuple[Any, Any]:
    """Boolean masks [B, 1, P, P] for the prompt pass and [2B, 1, C, P + C] for the reply pass."""
    import mlx.core as mx

    b, p = prompt_valid.shape
    pos = mx.arange(p)
    causal = pos[None, :] <= pos[:, None]
    prompt_mask = causal[None] & (prompt_valid[:, None, :] | (pos[None, :] == pos[:, None])[None])
    valid2 = mx.concatenate([prompt_valid, prompt_valid], axis=0)
    shared = mx.broadcast_to(valid2[:, None, None, :], (2 * b, 1, reply_width, p))
    rpos = mx.arange(reply_width)
    own = mx.broadcast_to((rpos[None, :] <= rpos[:, None])[None, None], (2 * b, 1, reply_width, reply_width))
    return prompt_mask[:, None], mx.concatenate([shared, own], axis=-1)


def _reply_logps(logits: Any, replies: Any, reply_lengths: Any) -> Any:
    """Summed log-probs [2B] of each reply's tokens (padding excluded), in float32."""
    import mlx.core as mx
    import mlx.nn as nn

    mask = mx.arange(replies.shape[1])[None, :] < reply_lengths[:, None]
    logp = -nn.losses.cross_entropy(logits.astype(mx.float32), replies)
    return (logp * mask).sum(axis=1)


def shared_prompt_logps(model: Any, prompts: Any, prompt_valid: Any, replies: Any, reply_lengths: Any) -> Any:
    """Summed reply log-probs [2B] (chosen rows, then rejected), each pair's prompt run once."""
    import mlx.core as mx

    head = output_head(model)
    assert head is not None, "shared_prompt_logps needs a known decoder layout; use plain_logps"
    # The reply pass reads every reply token but the last (which only ever is a target).
    prompt_mask, reply_mask = _masks(prompt_valid, replies.shape[1] - 1)
    caches = [PairPromptCache(prompt_mask, reply_mask) for _ in model.layers]
    last = model.model(prompts, cache=caches)[:, -1:]
    hidden = model.model(replies[:, :-1], cache=caches) if replies.shape[1] > 1 else None
    first = mx.concatenate([last, last], axis=0)
    states = first if hidden is None else mx.concatenate([first, hidden], axis=1)
    return _reply_logps(head(states), replies, reply_lengths)


def plain_logps(model: Any, prompts: Any, prompt_valid: Any, replies: Any, reply_lengths: Any) -> Any:
    """The same numbers from full rows (prompt + reply, one row per reply); any mlx-lm model.

    Left padding is dropped by rolling each prompt to the row start, so positions
    are the unpadded ones; a reference implementation for the shared pass.
    """
    import mlx.core as mx
    import numpy as np

    valid = np.array(prompt_valid)
    lengths = valid.sum(axis=1)
    p_np, r_np = np.array(prompts), np.array(replies)
    b, c = p_np.shape[0], r_np.shape[1]
    width = int(lengths.max()) + c
    rows = np.zeros((2 * b, width), np.int32)
    for row in range(2 * b):
        n = int(lengths[row % b])
        rows[row, :n] = p_np[row % b, -n:]
        rows[row, n:n + c] = r_np[row]
    logits = model(mx.array(rows))
    starts = mx.array(np.concatenate([lengths, lengths]) - 1)
    gather = starts[:, None] + mx.arange(c)[None, :]  # position t predicts token t + 1
    picked = mx.take_along_axis(logits, gather[:, :, None], axis=1)
    return _reply_logps(picked, replies, reply_lengths)


def logps_fn(model: Any) -> Any:
    """The exact log-prob function for this model: the shared-prompt pass where it applies."""
    return shared_prompt_logps if output_head(model) is not None and prefix_sharing_exact(model) else plain_logps
