"""Preference losses: a registry of pure functions, one per loss, each ``(pairs, beta, options) -> scalar``.

Every function takes the summed completion log-probs of a batch of pairs under
the policy and the reference (:class:`PairLogps`) and returns the batch mean
(``dr-dpo`` is a batch-level objective by construction). Throughout,

    d = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))

with y_w the chosen and y_l the rejected reply, and sigma the logistic function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class PairLogps:
    """Per-pair arrays of shape [B]: summed log-probs of the chosen and rejected completions, and their lengths."""

    policy_chosen: Any
    policy_rejected: Any
    reference_chosen: Any
    reference_rejected: Any
    chosen_tokens: Any
    rejected_tokens: Any

    @property
    def chosen_ratio(self) -> Any:
        """h_w = log pi(y_w) - log pi_ref(y_w)."""
        return self.policy_chosen - self.reference_chosen

    @property
    def rejected_ratio(self) -> Any:
        """h_l = log pi(y_l) - log pi_ref(y_l)."""
        return self.policy_rejected - self.reference_rejected

    @property
    def margin(self) -> Any:
        """d = h_w - h_l."""
        return self.chosen_ratio - self.rejected_ratio


@dataclass(frozen=True)
class LossOptions:
    label_smoothing: float = 0.1  # epsilon of robust and cdpo
    dr_beta: float = 1.0  # beta' of dr-dpo
    dpop_lambda: float = 50.0  # lambda of dpop


def _log_sigmoid(x: Any) -> Any:
    import mlx.nn as nn

    return -nn.softplus(-x)  # log sigma(x) = -log(1 + e^-x), stable for large |x|


def sigmoid_loss(p: PairLogps, beta: Any, o: LossOptions) -> Any:
    """DPO (Rafailov et al. 2023): -log sigma(beta d)."""
    return (-_log_sigmoid(beta * p.margin)).mean()


def hinge_loss(p: PairLogps, beta: Any, o: LossOptions) -> Any:
    """SLiC hinge: max(0, 1 - beta d)."""
    import mlx.core as mx

    return mx.maximum(0.0, 1.0 - beta * p.margin).mean()


def ipo_loss(p: PairLogps, beta: Any, o: LossOptions) -> Any:
    """IPO (Azar et al. 2023): (d_bar - 1/(2 beta))^2, d_bar from per-token averaged log-probs.

    d_bar = (log pi(y_w) - log pi_ref(y_w)) / |y_w| - (log pi(y_l) - log pi_ref(y_l)) / |y_l|.
    """
    d_bar = p.chosen_ratio / p.chosen_tokens - p.rejected_ratio / p.rejected_tokens
    return ((d_bar - 1.0 / (2.0 * beta)) ** 2).mean()


def robust_loss(p: PairLogps, beta: Any, o: LossOptions) -> Any:
    """Robust DPO (Chowdhury et al. 2024), unbiased under label flips with rate epsilon:
    [-(1 - eps) log sigma(beta d) + eps log sigma(-beta d)] / (1 - 2 eps).
    """
    eps, z = o.label_smoothing, beta * p.margin
    return ((-(1 - eps) * _log_sigmoid(z) + eps * _log_sigmoid(-z)) / (1 - 2 * eps)).mean()


def cdpo_loss(p: PairLogps, beta: Any, o: LossOptions) -> Any:
    """Conservative DPO (label smoothing): -(1 - eps) log sigma(beta d) - eps log sigma(-beta d)."""
    eps, z = o.label_smoothing, beta * p.margin
    return (-(1 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)).mean()


def cal_dpo_loss(p: PairLogps, beta: Any, o: LossOptions) -> Any:
    """Cal-DPO (Xiao et al. 2024): -log sigma(h_w - h_l) + 1/2 [(h_w - 1/(2 beta))^2 + (h_l + 1/(2 beta))^2].

    h = the summed log-ratio log pi(y) - log pi_ref(y); the squares calibrate the
    implicit rewards to +-1/(2 beta) so the chosen likelihood cannot fall with the rejected one.
    """
    h_w, h_l, target = p.chosen_ratio, p.rejected_ratio, 1.0 / (2.0 * beta)
    return (-_log_sigmoid(h_w - h_l) + 0.5 * ((h_w - target) ** 2 + (h_l + target) ** 2)).mean()


def dpop_loss(p: PairLogps, beta: Any, o: LossOptions) -> Any:
    """DPO-Positive (Pal et al. 2024): -log sigma(beta [d - lambda max(0, log pi_ref(y_w) - log pi(y_w))]).

    The penalty is zero while the chosen reply is at least as likely as under the reference: the margin
    cannot grow by lowering both sides' likelihood, which pairs whose sides share most tokens invite.
    """
    import mlx.core as mx

    penalty = mx.maximum(0.0, -p.chosen_ratio)
    return (-_log_sigmoid(beta * (p.margin - o.dpop_lambda * penalty))).mean()


def dr_dpo_loss(p: PairLogps, beta: Any, o: LossOptions) -> Any:
    """Distributionally robust DPO (Wu et al. 2024): -beta' log mean_batch exp(-l_i / beta').

    l_i = -log sigma(beta d_i) is the per-pair sigmoid loss; pairs with a large loss
    (likely mislabelled) get exponentially less weight as beta' shrinks. Computed
    with logsumexp: -beta' (logsumexp(-l / beta') - log B).
    """
    import mlx.core as mx

    per_pair = -_log_sigmoid(beta * p.margin)
    scaled = -per_pair / o.dr_beta
    return -o.dr_beta * (mx.logsumexp(scaled, axis=0) - math.log(scaled.shape[0]))


LOSSES: dict[str, Callable[[PairLogps, Any, LossOptions], Any]] = {
    "sigmoid": sigmoid_loss,
    "hinge": hinge_loss,
    "ipo": ipo_loss,
    "robust": robust_loss,
    "cdpo": cdpo_loss,
    "cal-dpo": cal_dpo_loss,
    "dpop": dpop_loss,
    "dr-dpo": dr_dpo_loss,
}


def preference_loss(name: str, p: PairLogps, beta: Any, options: LossOptions, sft_weight: float = 0.0) -> Any:
    """The named loss, plus ``sft_weight`` x the chosen replies' NLL per token (sum of -log pi(y_w) / tokens)."""
    loss = LOSSES[name](p, beta, options)
    if sft_weight:
        loss = loss + sft_weight * (-p.policy_chosen.sum() / p.chosen_tokens.sum())
    return loss
