"""Preference losses against hand-computed values; beta schedules, noisy-pair dropping, DPO settings."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest

from punie.dpo.config import DPOConfig, parse_beta_schedule, resolve_dpo_config
from punie.dpo.data import PairSplit
from punie.dpo.losses import LOSSES, LossOptions, PairLogps, preference_loss
from punie.errors import ConfigError

# Two pairs, beta = 0.5.
#   pair 1: log-ratios h_w = -1 - (-2) = 1,  h_l = -3 - (-2) = -1,  d = 2,    beta d = 1
#   pair 2: log-ratios h_w = -4 - (-3) = -1, h_l = -2.5 - (-3) = 0.5, d = -1.5, beta d = -0.75
BETA = 0.5
PAIRS = PairLogps(policy_chosen=mx.array([-1.0, -4.0]), policy_rejected=mx.array([-3.0, -2.5]),
                  reference_chosen=mx.array([-2.0, -3.0]), reference_rejected=mx.array([-2.0, -3.0]),
                  chosen_tokens=mx.array([2.0, 4.0]), rejected_tokens=mx.array([1.0, 2.0]))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))  # -log sigma(-x)


# -log sigma(z) = log(1 + e^-z): 0.3132617 at z = 1, 1.1368710 at z = -0.75.
SIG1, SIG2 = softplus(-1.0), softplus(0.75)
EPS = 0.1
HAND = {
    "sigmoid": (SIG1 + SIG2) / 2,
    "hinge": (0.0 + 1.75) / 2,  # max(0, 1 - 1), max(0, 1 + 0.75)
    # d_bar: 1/2 - (-1)/1 = 1.5 and -1/4 - 0.5/2 = -0.5; target 1/(2 beta) = 1
    "ipo": ((1.5 - 1) ** 2 + (-0.5 - 1) ** 2) / 2,
    # -log sigma(-z) = softplus(z): 1.3132617 at z = 1, 0.3868710 at z = -0.75
    "robust": ((0.9 * SIG1 - 0.1 * softplus(1.0)) / 0.8 + (0.9 * SIG2 - 0.1 * softplus(-0.75)) / 0.8) / 2,
    "cdpo": ((0.9 * SIG1 + 0.1 * softplus(1.0)) + (0.9 * SIG2 + 0.1 * softplus(-0.75))) / 2,
    # -log sigma(h_w - h_l) + 1/2 [(h_w - 1)^2 + (h_l + 1)^2]
    "cal-dpo": ((softplus(-2.0) + 0.5 * (0.0 + 0.0)) + (softplus(1.5) + 0.5 * ((-2.0) ** 2 + 1.5 ** 2))) / 2,
    # lambda = 2: penalty max(0, -h_w) is 0 and 1, so beta [d - 2 penalty] = 1 and 0.5 (-1.5 - 2) = -1.75
    "dpop": (SIG1 + softplus(1.75)) / 2,
    # beta' = 1: -log mean(exp(-l_i))
    "dr-dpo": -math.log((math.exp(-SIG1) + math.exp(-SIG2)) / 2),
}


def test_every_registered_loss_has_a_hand_value():
    assert set(HAND) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(HAND))
def test_loss_matches_hand_computed_value(name):
    got = LOSSES[name](PAIRS, BETA, LossOptions(label_smoothing=EPS, dr_beta=1.0, dpop_lambda=2.0))
    assert got.shape == ()
    np.testing.assert_allclose(got.item(), HAND[name], rtol=1e-6)


def test_hand_values_in_digits():
    # The same values written out, so a shared mistake in the helpers above cannot hide.
    np.testing.assert_allclose([HAND["sigmoid"], HAND["hinge"], HAND["ipo"], HAND["cal-dpo"], HAND["dr-dpo"],
                                HAND["dpop"]], [0.7250663, 0.875, 1.25, 2.4766706, 0.6425683, 1.1117429], rtol=1e-6)


def test_dpop_is_sigmoid_while_no_chosen_reply_lost_likelihood():
    kept = PairLogps(policy_chosen=mx.array([-1.0, -2.0]), policy_rejected=mx.array([-3.0, -2.5]),
                     reference_chosen=mx.array([-2.0, -3.0]), reference_rejected=mx.array([-2.0, -3.0]),
                     chosen_tokens=mx.array([2.0, 4.0]), rejected_tokens=mx.array([1.0, 2.0]))
    np.testing.assert_allclose(LOSSES["dpop"](kept, BETA, LossOptions(dpop_lambda=50.0)).item(),
                               LOSSES["sigmoid"](kept, BETA, LossOptions()).item(), rtol=1e-6)


def test_dr_dpo_interpolates_between_mean_and_min():
    per_pair = [SIG1, SIG2]
    wide = LOSSES["dr-dpo"](PAIRS, BETA, LossOptions(dr_beta=1e4)).item()
    narrow = LOSSES["dr-dpo"](PAIRS, BETA, LossOptions(dr_beta=1e-3)).item()
    np.testing.assert_allclose(wide, np.mean(per_pair), rtol=1e-3)  # large beta': the sigmoid loss
    np.testing.assert_allclose(narrow, min(per_pair) + 1e-3 * math.log(2), rtol=1e-3)  # small: the easiest pair


def test_robust_is_sigmoid_without_noise_and_sft_adds_chosen_nll():
    np.testing.assert_allclose(LOSSES["robust"](PAIRS, BETA, LossOptions(label_smoothing=0.0)).item(),
                               HAND["sigmoid"], rtol=1e-6)
    with_sft = preference_loss("hinge", PAIRS, BETA, LossOptions(), sft_weight=0.3).item()
    np.testing.assert_allclose(with_sft, HAND["hinge"] + 0.3 * (1.0 + 4.0) / (2.0 + 4.0), rtol=1e-6)


def test_beta_schedule(tmp_path):
    assert parse_beta_schedule("0.05:0,0.1:40") == [(0.05, 0), (0.1, 40)]
    cfg = DPOConfig(data=tmp_path, beta=0.3, beta_schedule="0.05:0,0.1:40")
    assert [cfg.beta_at(s) for s in (0, 39, 40, 500)] == [0.05, 0.05, 0.1, 0.1]
    assert DPOConfig(data=tmp_path, beta=0.3).beta_at(7) == 0.3
    for bad, message in (("0.1:5", "start at step 0"), ("0.1:0,0.2:0", "increase"), ("0.1", "BETA:STEP"),
                         ("x:0", "BETA:STEP"), ("-1:0", "BETA > 0")):
        with pytest.raises(ConfigError, match=message):
            resolve_dpo_config({"data": tmp_path, "beta_schedule": bad})


def test_settings_are_validated_and_start_fixes_the_lora_shape(tmp_path):
    with pytest.raises(ConfigError, match="unknown loss 'kto'"):
        resolve_dpo_config({"data": tmp_path, "loss": "kto"})
    start = tmp_path / "start"
    start.mkdir()
    (start / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": {"rank": 4, "scale": 10.0, "dropout": 0.0}}))
    cfg = resolve_dpo_config({"data": tmp_path, "adapter": start})
    assert (cfg.rank, cfg.scale, cfg.num_layers) == (4, 10.0, 2)
    with pytest.raises(ConfigError, match="fixes rank"):
        resolve_dpo_config({"data": tmp_path, "adapter": start, "rank": 8})
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        resolve_dpo_config({"data": tmp_path, "adapter": tmp_path})


def test_drop_noisy_removes_the_pairs_the_reference_most_disprefers():
    from punie.dpo import drop_noisy_pairs

    split = PairSplit("train", [[1]] * 5, [[2]] * 5, [[3]] * 5, lines=[10, 11, 12, 13, 14])
    reference = {"train.chosen": np.array([-1.0, -9.0, -2.0, -8.0, -3.0]), "train.rejected": np.full(5, -4.0),
                 "valid.chosen": np.zeros(2), "valid.rejected": np.zeros(2)}
    kept, ref, dropped = drop_noisy_pairs(split, reference, 0.4)
    assert [d["line"] for d in dropped] == [11, 13]  # margins -5 and -4: they favour the rejected reply most
    assert [d["reference_margin"] for d in dropped] == [-5.0, -4.0]
    assert kept.lines == [10, 12, 14] and list(ref["train.chosen"]) == [-1.0, -2.0, -3.0]
    assert len(ref["valid.chosen"]) == 2
    assert drop_noisy_pairs(split, reference, 0.1)[2] == []  # 0.1 x 5 pairs rounds down to none
