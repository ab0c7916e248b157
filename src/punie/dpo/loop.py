"""The preference-training loop: training's compiled-step pattern with a preference loss.

The step is ``nn.value_and_grad`` over (shared-prompt log-probs -> registry loss),
compiled with the model, optimizer and RNG state as compile state, one
``mx.eval`` per step; beta enters as an array so a beta schedule does not
recompile. Data order, the optimizer and its schedule, checkpoints and metrics
files are training's (:mod:`punie.training`), so ``--resume`` continues the same
curve. Ctrl-C is training's too (:class:`StopAtStepBoundary`): the loop stops at a
step boundary with the checkpoint an uninterrupted run has at that step. Reports
go through a callback; display lives in the CLI.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np

from punie.dpo.config import DPOConfig
from punie.dpo.data import PairSplit, make_pair_batch
from punie.dpo.logps import logps_fn, shared_prompt_logps
from punie.dpo.losses import LossOptions, PairLogps, preference_loss
from punie.training import checkpoints
from punie.training.data import batch_for_step, batch_plan, validation_batches
from punie.training.loop import (
    StopAtStepBoundary,
    TrainingCallback,
    TrainingError,
    TrainingInterrupted,
    build_optimizer,
)
from punie.training.rundir import RunDir

# Per-pair statistics averaged into every report (train) and evaluation (val_ prefixed).
STATS = ("rewards/chosen", "rewards/rejected", "margins", "accuracy", "logps/chosen", "logps/rejected")


@dataclass
class DPOState:
    """Everything besides weights and optimizer that a resumed run must restore."""

    step: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    window: dict[str, float] = field(default_factory=dict)  # sums since the last report
    window_steps: int = 0
    window_pairs: int = 0
    trained_pairs: int = 0
    train_seconds: float = 0.0
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "metrics"}


def pair_stats(policy: np.ndarray, ref_c: np.ndarray, ref_r: np.ndarray, beta: float) -> dict[str, np.ndarray]:
    """Per-pair implicit rewards beta (log pi - log pi_ref), their margin, accuracy and the raw log-probs."""
    b = len(ref_c)
    pc, pr = policy[:b], policy[b:]
    rc, rr = beta * (pc - ref_c), beta * (pr - ref_r)
    return {"rewards/chosen": rc, "rewards/rejected": rr, "margins": rc - rr,
            "accuracy": (rc > rr).astype(np.float32), "logps/chosen": pc, "logps/rejected": pr}


class DPOTrainer:
    def __init__(self, model: Any, config: DPOConfig, train: PairSplit, valid: PairSplit,
                 reference: dict[str, np.ndarray], output: Path, callback: TrainingCallback | None = None):
        self.model, self.config, self.train_set, self.valid_set = model, config, train, valid
        self.reference, self.output, self.callback = reference, output, callback
        self.plan = batch_plan(train.as_tokenized(), config.batch_size, config.seed)
        self.optimizer = build_optimizer(cast(Any, config), config.iters)
        self.state = DPOState()
        self.logps = logps_fn(model)
        self.options = LossOptions(label_smoothing=config.label_smoothing, dr_beta=config.dr_beta,
                                   dpop_lambda=config.dpop_lambda)
        self._ctrl_c = StopAtStepBoundary()
        self._saved_step = 0  # the step of the newest checkpoint (0: none)

    def loss(self, model: Any, prompts: Any, valid: Any, replies: Any, lengths: Any, ref_c: Any, ref_r: Any,
             beta: Any) -> tuple[Any, Any]:
        """(loss, policy log-probs [2B]): a pure function of the model and the batch."""
        b = prompts.shape[0]
        policy = self.logps(model, prompts, valid, replies, lengths)
        pairs = PairLogps(policy[:b], policy[b:], ref_c, ref_r, lengths[:b], lengths[b:])
        return preference_loss(self.config.loss, pairs, beta, self.options, self.config.sft_weight), policy

    def _compile_step(self) -> Any:
        import mlx.core as mx
        import mlx.nn as nn

        model, optimizer = self.model, self.optimizer
        loss_and_grad = nn.value_and_grad(model, self.loss)
        state = [model.state, optimizer.state, mx.random.state]

        def step(*batch: Any) -> tuple[Any, Any]:
            (loss, policy), grad = loss_and_grad(model, *batch)
            optimizer.update(model, grad)
            return loss, policy

        self._compile_state = state
        # The full-row fallback reads its inputs on the host, so only the shared-prompt pass is compiled.
        return partial(mx.compile, inputs=state, outputs=state)(step) if self.logps is shared_prompt_logps else step

    def _inputs(self, split: PairSplit, name: str, indices: list[int], beta: float) -> tuple[Any, ...]:
        import mlx.core as mx

        b = make_pair_batch(split, indices)
        ref_c = mx.array(self.reference[f"{name}.chosen"][indices])
        ref_r = mx.array(self.reference[f"{name}.rejected"][indices])
        return b.prompts, b.prompt_valid, b.replies, b.reply_lengths, ref_c, ref_r, mx.array(beta, mx.float32)

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> DPOState:
        with self._ctrl_c.installed():
            return self._run()

    def _run(self) -> DPOState:
        import mlx.core as mx

        cfg, st = self.config, self.state
        step_fn = self._compile_step()
        self.model.train()
        try:
            if st.step == 0:
                self._evaluate()
            while st.step < cfg.iters:
                if self._ctrl_c.requested:
                    self._stop()
                indices = batch_for_step(self.plan, cfg.seed, st.step)
                beta = cfg.beta_at(st.step)
                inputs = self._inputs(self.train_set, "train", indices, beta)
                mx.random.seed(cfg.seed * 1_000_003 + st.step)  # dropout noise: a pure function of (seed, step)
                tic = time.perf_counter()
                loss, policy = step_fn(*inputs)
                mx.eval(self._compile_state, loss, policy)
                st.train_seconds += time.perf_counter() - tic
                self._account(float(loss.item()), np.array(policy), indices, beta)
                self._after_step()
        except KeyboardInterrupt:
            # Raised mid-step (a second Ctrl-C, or by a callback): the weights may already hold the next
            # step's update, so nothing is saved; the newest checkpoint is consistent.
            raise TrainingInterrupted(self._saved_step, self.output) from None
        return st

    def _stop(self) -> None:
        """Stop on Ctrl-C at a step boundary: checkpoint this step (unless just done) and raise."""
        if self.state.step and self._saved_step != self.state.step:
            self.save_checkpoint()
        raise TrainingInterrupted(self._saved_step, self.output)

    def _account(self, loss: float, policy: np.ndarray, indices: list[int], beta: float) -> None:
        st = self.state
        if not math.isfinite(loss):
            raise TrainingError(f"the preference loss became {loss} at step {st.step + 1}; stopped. The last good "
                                f"checkpoint is in {self.output}. Lower --learning-rate or --beta, or check the data.")
        stats = pair_stats(policy, self.reference["train.chosen"][indices], self.reference["train.rejected"][indices],
                           beta)
        st.step += 1
        st.window["loss"] = st.window.get("loss", 0.0) + loss
        for name, values in stats.items():
            st.window[name] = st.window.get(name, 0.0) + float(values.sum())
        st.window_steps += 1
        st.window_pairs += len(indices)
        st.trained_pairs += len(indices)

    def _after_step(self) -> None:
        """Report, evaluate and checkpoint as scheduled."""
        cfg, st = self.config, self.state
        last = st.step == cfg.iters
        if st.step % cfg.steps_per_report == 0 or last:
            self._report_train()
        if st.step % cfg.steps_per_eval == 0 or last:
            self._evaluate()
        if st.step % cfg.save_every == 0 or last:
            self.save_checkpoint()

    def _report_train(self) -> None:
        import mlx.core as mx

        st = self.state
        report: dict[str, Any] = {"iteration": st.step, "loss": st.window["loss"] / st.window_steps}
        report |= {name: st.window[name] / st.window_pairs for name in STATS}
        report |= {
            "beta": self.config.beta_at(st.step - 1),
            "learning_rate": float(self.optimizer.learning_rate.item()),
            "pairs_per_second": st.trained_pairs / max(st.train_seconds, 1e-9),
            "peak_memory_gb": mx.get_peak_memory() / 1e9,
            "eta_seconds": (self.config.iters - st.step) * st.train_seconds / max(st.step, 1),
        }
        st.window, st.window_steps, st.window_pairs = {}, 0, 0
        self._emit(report)

    def validation(self) -> dict[str, float]:
        """Mean loss and per-pair statistics over the fixed validation batches, at the current beta."""
        import mlx.core as mx

        self.model.eval()
        beta = self.config.beta_at(self.state.step)
        sums: dict[str, float] = {}
        pairs = 0
        for indices in validation_batches(self.valid_set.as_tokenized(), self.config.batch_size,
                                          self.config.val_batches):
            inputs = self._inputs(self.valid_set, "valid", indices, beta)
            loss, policy = self.loss(self.model, *inputs)
            mx.eval(loss, policy)
            sums["loss"] = sums.get("loss", 0.0) + float(loss.item()) * len(indices)
            stats = pair_stats(np.array(policy), self.reference["valid.chosen"][indices],
                               self.reference["valid.rejected"][indices], beta)
            for name, values in stats.items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
            pairs += len(indices)
        self.model.train()
        return {f"val_{name}": value / pairs for name, value in sums.items()}

    def _evaluate(self) -> None:
        """Validation; keeps the best weights by validation loss."""
        cfg, st = self.config, self.state
        tic = time.perf_counter()
        report = self.validation()
        val = report["val_loss"]
        if not math.isfinite(val):
            raise TrainingError(f"the validation loss became {val} at step {st.step}; stopped.")
        if st.best_val_loss is None or val < st.best_val_loss:
            st.best_val_loss, st.best_step = val, st.step
            if cfg.keep == "best":
                checkpoints.save_weights(self.output / checkpoints.ADAPTERS, checkpoints.trainable_weights(self.model))
        self._emit({"iteration": st.step, **report, "val_seconds": time.perf_counter() - tic,
                    "best_val_loss": st.best_val_loss})

    def _emit(self, report: dict[str, Any]) -> None:
        self.state.metrics.append(report)
        RunDir(self.output).write_metrics(self.state.metrics)
        if self.callback is not None:
            self.callback.on_report(report)

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.config.keep == "last":
            checkpoints.save_weights(self.output / checkpoints.ADAPTERS, checkpoints.trainable_weights(self.model))
        checkpoints.save_checkpoint(self.output, self.state.step, self.model, self.optimizer, self.state.to_json())
        self._saved_step = self.state.step

    def resume(self, checkpoint: checkpoints.Checkpoint) -> None:
        checkpoints.restore_checkpoint(checkpoint, self.model, self.optimizer)
        saved = checkpoint.state
        self.state = DPOState(**{k: v for k, v in saved.items() if k in DPOState.__dataclass_fields__})
        self.state.metrics = [m for m in RunDir(self.output).read_metrics() if m["iteration"] <= checkpoint.step]
        self._saved_step = checkpoint.step
