"""Training losses: pure functions ``(model, batch, lengths, start) -> (loss, ntoks)``.

``lengths[i] = (loss start, length)`` as in mlx-lm: only target positions count.

``target_loss`` gives the same value and gradients as mlx-lm's ``default_loss``
with two savings that matter for agent data, where a long masked prompt (system
prompt and tool schemas) precedes a short target:

- the output projection and cross-entropy run only from ``start`` on, the first
  position any example in the batch trains on (most of the vocabulary-sized
  matmul, the largest single cost for a small model, is skipped);
- the ``prefix`` tokens every example of the batch shares are run through the
  model once, not once per example: their keys and values are computed for one
  row and broadcast to the batch. The gradient flows through the broadcast, so
  it is the sum over the rows, exactly as if each row had computed its copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Decoder layouts whose ``model.model`` returns final hidden states and whose head
# is ``lm_head`` or the tied embedding; other architectures use mlx-lm's loss.
_TARGET_LOSS_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
START_ALIGN = 32  # starts are rounded down to this, so the compiled step sees few shapes


def output_head(model: Any) -> Callable[[Any], Any] | None:
    """The final projection of a known decoder layout, or None."""
    args = getattr(model, "args", None)
    inner = getattr(model, "model", None)
    if inner is None or getattr(args, "model_type", None) not in _TARGET_LOSS_TYPES:
        return None
    if getattr(args, "tie_word_embeddings", False):
        return inner.embed_tokens.as_linear
    return getattr(model, "lm_head", None)


def default_loss(model: Any, batch: Any, lengths: Any, start: int = 0, prefix: int = 0) -> tuple[Any, Any]:
    from mlx_lm.tuner import trainer

    return trainer.default_loss(model, batch, lengths)


class SharedPrefixCache:
    """A layer's keys and values for a prefix computed with batch 1, then shared by every row.

    Implements the two members mlx-lm's attention layers use (``offset``,
    ``update_and_fetch``) and ``make_mask``; concatenation rather than in-place
    writes keeps it differentiable.
    """

    def __init__(self) -> None:
        self.keys: Any = None
        self.values: Any = None
        self.offset = 0

    def update_and_fetch(self, keys: Any, values: Any) -> tuple[Any, Any]:
        import mlx.core as mx

        if self.keys is None:
            self.keys, self.values, self.offset = keys, values, keys.shape[2]
            return keys, values
        rows = keys.shape[0]
        shared_k = mx.broadcast_to(self.keys, (rows, *self.keys.shape[1:]))
        shared_v = mx.broadcast_to(self.values, (rows, *self.values.shape[1:]))
        return mx.concatenate([shared_k, keys], axis=2), mx.concatenate([shared_v, values], axis=2)

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> Any:
        from mlx_lm.models.base import create_causal_mask

        if self.keys is None:
            return create_causal_mask(n, window_size=window_size) if return_array or window_size else "causal"
        return create_causal_mask(n, offset=self.offset, window_size=window_size)


def target_loss(model: Any, batch: Any, lengths: Any, start: int = 0, prefix: int = 0) -> tuple[Any, Any]:
    import mlx.core as mx
    import mlx.nn as nn

    head = output_head(model)
    assert head is not None, "target_loss needs a known decoder layout; use default_loss"
    assert 0 <= prefix <= start, f"the shared prefix ({prefix}) must end before the first target ({start})"
    inputs, targets = batch[:, :-1], batch[:, 1:]
    if prefix:
        caches = [SharedPrefixCache() for _ in model.layers]
        model.model(inputs[:1, :prefix], cache=caches)
        hidden = model.model(inputs[:, prefix:], cache=caches)[:, start - prefix:]
    else:
        hidden = model.model(inputs)[:, start:]
    targets = targets[:, start:]
    logits = head(hidden)
    steps = mx.arange(start + 1, start + targets.shape[1] + 1)
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
    ce = nn.losses.cross_entropy(logits, targets) * mask
    ntoks = mask.sum()
    return ce.astype(mx.float32).sum() / ntoks, ntoks


def loss_for(model: Any) -> Callable[..., tuple[Any, Any]]:
    return target_loss if output_head(model) is not None else default_loss


def loss_start(offsets: list[int]) -> int:
    """First target index any example uses (target j is token j + 1), aligned down."""
    first = max(min(offsets) - 1, 0)
    return first - first % START_ALIGN


def prefix_sharing_exact(model: Any) -> bool:
    """False for position encodings that depend on the total length (dynamic NTK RoPE)."""
    return not any(type(m).__name__ == "DynamicNTKScalingRoPE" for _, m in model.named_modules())


def shared_prefix(rows: list[list[int]], start: int) -> int:
    """Leading tokens all ``rows`` share, capped at ``start`` and aligned down; 0 when sharing gains nothing."""
    if len(rows) < 2:
        return 0
    first, n = rows[0], min(min(len(r) for r in rows), start)
    common = next((j for j in range(n) if any(r[j] != first[j] for r in rows[1:])), n)
    return common - common % START_ALIGN
