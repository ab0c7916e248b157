"""punie's training loop, built on mlx-lm's LoRA/DoRA layers and loss.

The loss is mlx-lm's pure ``(model, batch, lengths) -> (loss, ntoks)``; the step
is ``nn.value_and_grad`` compiled with the model, optimizer and RNG state as
compile state, one ``mx.eval`` per step. Around it punie adds what users ask
for: resumable checkpoints (weights, optimizer, step, schedule, RNG, data
position), best-checkpoint selection, early stopping, a NaN guard, Ctrl-C
saving, and reports through a callback (display lives in the CLI).

Ctrl-C does not raise in the middle of a step: the SIGINT handler only asks the
loop to stop, and the loop stops after the step's reports, evaluation and
scheduled checkpoint, once no gradient is half-accumulated. The checkpoint it
then saves is the state an uninterrupted run has at that step, so a resumed run
continues exactly (as after ``kill -9``, which resumes from the last checkpoint).
A second Ctrl-C stops at once; the run then resumes from its last checkpoint.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from punie.errors import PunieError
from punie.training import checkpoints, losses
from punie.training.config import TrainConfig
from punie.training.data import TokenizedSplit, batch_for_step, batch_plan, make_batch, validation_batches
from punie.training.distributed import World
from punie.training.rundir import RunDir


class TrainingError(PunieError):
    """Training stopped on a problem (a NaN loss, for one)."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training; ``--resume`` continues from the checkpoint at ``step`` (0: from the start)."""

    def __init__(self, step: int, output: Path, *, at_boundary: bool = False):
        where = f"the checkpoint at step {step}" if step else "the start (no checkpoint was saved yet)"
        super().__init__(f"interrupted; {output} resumes from {where}")
        self.step, self.output = step, output
        self.at_boundary = at_boundary  # stopped between steps, where every rank stops together


class TrainingCallback(Protocol):
    def on_report(self, report: dict[str, Any]) -> None: ...


@dataclass
class LoopState:
    """Everything besides weights and optimizer that a resumed run must restore."""

    step: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    window_loss: float = 0.0
    window_tokens: int = 0
    window_steps: int = 0
    trained_tokens: int = 0  # tokens that carry loss (the target tokens)
    processed_tokens: int = 0  # non-padding tokens run through the model (a shared prefix once per batch)
    train_seconds: float = 0.0
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "metrics"}


class StopAtStepBoundary:
    """Ctrl-C as a request to stop at the next step boundary (shared by every punie training loop).

    While ``installed``, the first SIGINT only sets ``requested``; the loop checks it
    between steps and saves a checkpoint that matches an uninterrupted run. A second
    SIGINT raises KeyboardInterrupt at once (the loop then saves nothing).
    """

    def __init__(self) -> None:
        self.requested = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, resume from the last checkpoint
        self.requested = True

    @contextmanager
    def installed(self) -> Iterator[None]:
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C never reaches us anyway.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.SIG_IGN:  # e.g. started with nohup: Ctrl-C is meant not to stop it
            yield
            return
        signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def build_optimizer(config: TrainConfig, updates: int) -> Any:
    """Adam; the schedule is a function of the optimizer's step, which checkpoints restore."""
    import mlx.core as mx
    import mlx.optimizers as optim

    lr: Any = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = optim.cosine_decay(config.learning_rate, max(updates - config.warmup, 1))
    elif config.warmup:
        peak = mx.array(config.learning_rate)
        lr = lambda _step: peak  # noqa: E731  (constant after warm-up)
    if config.warmup:
        warm = optim.linear_schedule(0.0, config.learning_rate, config.warmup)
        lr = optim.join_schedules([warm, lr], [config.warmup])
    return optim.Adam(learning_rate=lr)


class Trainer:
    def __init__(self, model: Any, config: TrainConfig, train: TokenizedSplit, valid: TokenizedSplit,
                 output: Path, callback: TrainingCallback | None = None, world: World | None = None,
                 until: int | None = None):
        self.model, self.config, self.train_set, self.valid_set = model, config, train, valid
        # Pause after this step (a checkpoint, as at the end): the schedule stays the whole run's, so a run
        # continued to ``config.iters`` is the run an uninterrupted one would have been (punie sweep's halving).
        self.until = min(until, config.iters) if until is not None else config.iters
        self.output, self.callback = output, callback
        self.world = world or World()  # data-parallel ranks (see distributed.py); rank 0 alone writes
        self.plan = batch_plan(train, config.batch_size, config.seed)
        self.optimizer = build_optimizer(config, config.iters // config.grad_accumulation)
        self.state = LoopState()
        self._grad: Any = None
        self._ctrl_c = StopAtStepBoundary()  # its ``requested`` is set by the SIGINT handler
        self._stop_agreed = False  # some rank asked to stop (all-summed with the step, so all ranks agree)
        self._saved_step = 0  # the step of the newest checkpoint (0: none)
        self._beat: Callable[[], None] = lambda: None  # tells the peer watchdog the run makes progress
        self.loss_fn = losses.loss_for(model)
        # Sharing a batch's prompt prefix is exact without dropout (rows would share one dropout mask),
        # without gradient checkpointing (its recomputation would replay the prefix pass against a filled
        # cache) and with position encodings that do not depend on the total length.
        self._share_prefix = (self.loss_fn is losses.target_loss and not config.dropout
                              and not config.grad_checkpoint and losses.prefix_sharing_exact(model))

    def _spans(self, split: TokenizedSplit, indices: list[int]) -> tuple[int, int]:
        """(start, prefix) for a batch: its first trained position and the prompt tokens its rows share."""
        start = losses.loss_start([split.offsets[i] for i in indices])
        if not self._share_prefix:
            return start, 0
        return start, losses.shared_prefix([split.tokens[i] for i in indices], start)

    # ---- the compiled step ---------------------------------------------------------------------
    def _compile_step(self) -> Any:
        import mlx.core as mx
        import mlx.nn as nn
        from mlx.utils import tree_map

        model, optimizer, accum, world = self.model, self.optimizer, self.config.grad_accumulation, self.world
        loss_and_grad = nn.value_and_grad(model, self.loss_fn)
        compile_state = [model.state, optimizer.state, mx.random.state]

        # ``start`` and ``prefix`` are Python ints: the compiled graph is specialised (and cached) per value.
        @partial(mx.compile, inputs=compile_state, outputs=compile_state)
        def step(batch: Any, lengths: Any, start: int, prefix: int, prev_grad: Any, do_update: bool,
                 extra: Any) -> Any:
            (loss, ntoks), grad = loss_and_grad(model, batch, lengths, start, prefix)
            if world.size > 1:  # global loss and token count; gradient weighted by this rank's token share
                loss, ntoks, grad, extra = world.reduce_step(loss, ntoks, grad, extra)
            if prev_grad is not None:
                grad = tree_map(lambda a, b: a + b, grad, prev_grad)
            if do_update:
                grad = world.sum_gradients(grad)
                if accum > 1:
                    grad = tree_map(lambda g: g / accum, grad)
                optimizer.update(model, grad)
                grad = None
            return loss, ntoks, grad, extra

        self._compile_state = compile_state
        return step

    # ---- evaluation ----------------------------------------------------------------------------
    def validation_loss(self) -> float:
        import mlx.core as mx

        self.model.eval()
        total, ntoks = mx.array(0.0), mx.array(0)
        for indices in validation_batches(self.valid_set, self.config.batch_size, self.config.val_batches):
            indices = self.world.shard(indices)
            if not indices:  # a batch smaller than the world leaves some ranks without rows
                continue
            batch, lengths = make_batch(self.valid_set, indices, self.config.max_seq_length)
            loss, n = self.loss_fn(self.model, batch, lengths, *self._spans(self.valid_set, indices))
            total, ntoks = total + loss * n, ntoks + n
            mx.eval(total, ntoks)
        if self.world.size > 1:
            total, ntoks = self.world.all_sum(mx.stack([total, ntoks.astype(mx.float32)]))
        self.model.train()
        return float((total / ntoks).item())  # type: ignore[arg-type]

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> LoopState:
        explain = lambda: (f"Stopping; the last checkpoint (step {self._saved_step}) in {self.output} is intact "  # noqa: E731
                           "and --resume continues from it.")
        with self._ctrl_c.installed(), self.world.watchdog(explain) as self._beat:
            return self._run_patched()

    def _run_patched(self) -> LoopState:
        if not self.config.grad_checkpoint:
            return self._run()
        from mlx_lm.tuner.trainer import grad_checkpoint

        # mlx-lm patches the block *class*; undo it afterwards so later models in this process are unaffected.
        block = type(self.model.layers[0])
        own = block.__dict__.get("__call__")  # None when the class inherits it
        grad_checkpoint(self.model.layers[0])  # recompute each block's activations in the backward pass
        try:
            return self._run()
        finally:
            if own is None:
                del block.__call__
            else:
                block.__call__ = own  # type: ignore[method-assign]

    def _run(self) -> LoopState:
        import mlx.core as mx

        cfg, st = self.config, self.state
        step_fn = self._compile_step()
        self.model.train()
        try:
            if st.step == 0:
                self._evaluate()
            while st.step < self.until:
                stop = self._stop_agreed if self.world.size > 1 else self._ctrl_c.requested
                if stop and self._grad is None:
                    self._stop()
                indices = self.world.shard(batch_for_step(self.plan, cfg.seed, st.step))
                batch, lengths = make_batch(self.train_set, indices, cfg.max_seq_length)
                # Dropout noise is a pure function of (seed, step, rank), so a resumed run draws the same.
                mx.random.seed(cfg.seed * 1_000_003 + st.step + self.world.rank * 2**40)
                tic = time.perf_counter()
                do_update = (st.step + 1) % cfg.grad_accumulation == 0 or st.step + 1 == cfg.iters
                start, prefix = self._spans(self.train_set, indices)
                # The shared prefix runs once per batch, so it counts once.
                processed = sum(min(len(self.train_set.tokens[i]), cfg.max_seq_length) for i in indices)
                extra = mx.array([processed - (len(indices) - 1) * prefix, float(self._ctrl_c.requested)])
                loss, ntoks, self._grad, extra = step_fn(batch, lengths, start, prefix, self._grad, do_update,
                                                         extra)
                mx.eval(self._compile_state, loss, ntoks, self._grad, extra)
                st.train_seconds += time.perf_counter() - tic
                self._beat()
                self._account(float(loss.item()), int(ntoks.item()))
                processed_all, stops = extra.tolist()
                st.processed_tokens += int(processed_all)
                self._stop_agreed = stops > 0
                if self._after_step():
                    break
        except KeyboardInterrupt:
            # Raised mid-step (a second Ctrl-C, or by a callback): the weights may already hold the next
            # step's update, so nothing is saved; the newest checkpoint is consistent.
            raise TrainingInterrupted(self._saved_step, self.output) from None
        return st

    @property
    def saved_step(self) -> int:
        """The step of the newest checkpoint (0: none yet)."""
        return self._saved_step

    def _stop(self) -> None:
        """Stop on Ctrl-C at a step boundary: checkpoint this step (unless just done) and raise."""
        if self.state.step and self._saved_step != self.state.step:
            self.save_checkpoint()
        raise TrainingInterrupted(self._saved_step, self.output, at_boundary=True)

    def _account(self, loss: float, ntoks: int) -> None:
        st = self.state
        if not math.isfinite(loss):
            raise TrainingError(f"the training loss became {loss} at step {st.step + 1}; stopped. The last good "
                                f"checkpoint is in {self.output}. Lower --learning-rate or check the data.")
        st.step += 1
        st.window_loss += loss * ntoks
        st.window_tokens += ntoks
        st.window_steps += 1
        st.trained_tokens += ntoks

    def _after_step(self) -> bool:
        """Report, evaluate and checkpoint as scheduled; True to stop early."""
        cfg, st = self.config, self.state
        last = st.step in (cfg.iters, self.until)
        if st.step % cfg.steps_per_report == 0 or last:
            self._report_train()
        stop = False
        if st.step % cfg.steps_per_eval == 0 or last:
            stop = self._evaluate()
        if (st.step % cfg.save_every == 0 or last or stop) and self._grad is None:
            self.save_checkpoint()
        return stop

    def _report_train(self) -> None:
        import mlx.core as mx

        st = self.state
        report = {
            "iteration": st.step,
            "train_loss": st.window_loss / max(st.window_tokens, 1),
            "learning_rate": float(self.optimizer.learning_rate.item()),
            "tokens_per_second": st.trained_tokens / max(st.train_seconds, 1e-9),
            "iterations_per_second": st.step / max(st.train_seconds, 1e-9),
            "trained_tokens": st.trained_tokens,
            "processed_tokens_per_second": st.processed_tokens / max(st.train_seconds, 1e-9),
            "peak_memory_gb": mx.get_peak_memory() / 1e9,
            "eta_seconds": (self.config.iters - st.step) * st.train_seconds / max(st.step, 1),
        }
        st.window_loss, st.window_tokens, st.window_steps = 0.0, 0, 0
        self._emit(report)

    def _evaluate(self) -> bool:
        """Validation loss; saves the best weights; True when early stopping triggers."""
        cfg, st = self.config, self.state
        tic = time.perf_counter()
        val = self.validation_loss()
        self._beat()
        improved = st.best_val_loss is None or val < st.best_val_loss
        if improved:
            st.best_val_loss, st.best_step, st.bad_evals = val, st.step, 0
            if cfg.keep == "best" and self.world.is_main:
                checkpoints.save_weights(self.output / checkpoints.ADAPTERS, checkpoints.trainable_weights(self.model))
        else:
            st.bad_evals += 1
        self._emit({"iteration": st.step, "val_loss": val, "val_seconds": time.perf_counter() - tic,
                    "best_val_loss": st.best_val_loss})
        if not math.isfinite(val):
            raise TrainingError(f"the validation loss became {val} at step {st.step}; stopped.")
        return cfg.early_stopping is not None and st.bad_evals >= cfg.early_stopping

    def _emit(self, report: dict[str, Any]) -> None:
        self.state.metrics.append(report)
        if self.world.is_main:
            RunDir(self.output).write_metrics(self.state.metrics)
        if self.callback is not None:
            self.callback.on_report(report)

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.world.is_main:
            if self.config.keep == "last":
                checkpoints.save_weights(self.output / checkpoints.ADAPTERS,
                                         checkpoints.trainable_weights(self.model))
            checkpoints.save_checkpoint(self.output, self.state.step, self.model, self.optimizer,
                                        self.state.to_json())
        self._saved_step = self.state.step

    def resume(self, checkpoint: checkpoints.Checkpoint) -> None:
        checkpoints.restore_checkpoint(checkpoint, self.model, self.optimizer)
        self.restore_loop_state(checkpoint.state)
        # Keep only the reports up to the checkpoint, so the curve continues exactly where it left off.
        self.state.metrics = [m for m in RunDir(self.output).read_metrics() if m["iteration"] <= checkpoint.step]

    def restore_loop_state(self, saved: dict[str, Any]) -> None:
        self.state = LoopState(**{k: v for k, v in saved.items() if k in LoopState.__dataclass_fields__})
        self._saved_step = self.state.step
