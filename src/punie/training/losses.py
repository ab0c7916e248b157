"""Training losses: pure functions ``(model, batch, lengths, start) -> (loss, ntoks)``.

``lengths[i] = (loss start, length)`` as in mlx-lm: only target positions count.

``target_loss`` gives the same value as mlx-lm's ``default_loss`` but computes
the output projection and cross-entropy only from ``start`` on, the first
position any example in the batch trains on. With a masked prompt (an agent's
system prompt and tool schemas are most of each example) that skips most of
the vocabulary-sized matmul, the largest single cost for a small model.
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


def default_loss(model: Any, batch: Any, lengths: Any, start: int = 0) -> tuple[Any, Any]:
    from mlx_lm.tuner import trainer

    return trainer.default_loss(model, batch, lengths)


def target_loss(model: Any, batch: Any, lengths: Any, start: int = 0) -> tuple[Any, Any]:
    import mlx.core as mx
    import mlx.nn as nn

    head = output_head(model)
    assert head is not None, "target_loss needs a known decoder layout; use default_loss"
    inputs, targets = batch[:, :-1], batch[:, 1:]
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
