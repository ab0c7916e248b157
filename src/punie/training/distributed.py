"""Data-parallel training on MLX's own engine: ``mx.distributed``, with ranks started by ``mlx.launch``.

Every rank runs the same ``punie train`` with the same settings; :class:`World`
is what the trainer asks about its peers. The design keeps a W-rank run equal to
the one-process run with the same seed and data, up to float rounding:

- the global batch of a step is the one-process batch (``batch_for_step``);
  rank r takes its rows ``r::W``, so the batch size must divide by W;
- each rank's loss is the mean over its own target tokens (its rows share their
  own prompt prefix), so the compiled step all-sums ``loss * tokens`` and the
  token counts, and weights each rank's gradient by its share of the global
  tokens; mlx's ``average_gradients`` then sums them once per optimizer update;
- validation batches are sharded the same way and their sums all-summed once;
- only rank 0 writes the run directory; on ``--resume`` it reads the checkpoint
  and broadcasts weights, optimizer state and loop state, so remote ranks need
  no copy of the run;
- a Ctrl-C stop request is all-summed with the step's numbers, so every rank
  stops at the same step boundary;
- the ring backend can wait forever for a peer that vanished without closing its
  socket (a machine off the network), so a watchdog thread ends a rank whose
  training makes no progress for ``PUNIE_PEER_TIMEOUT`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from punie.errors import ConfigError, PunieError

PEER_TIMEOUT_ENV = "PUNIE_PEER_TIMEOUT"
DEFAULT_PEER_TIMEOUT = 300.0  # seconds without a finished step (generous: the first step compiles)
WATCHDOG_EXIT = 75  # a rank stopped by the watchdog exits with this code (EX_TEMPFAIL)
PEER_LOST_EXIT = 76  # a rank whose collective lost a peer exits with this: the consequence, never the cause
BACKENDS = ("ring", "mpi", "jaccl", "nccl")  # mx.distributed's backends, in mlx.launch's spelling


class PeerLost(PunieError):
    """Another rank went away in the middle of a collective (it died, or its machine did)."""


def is_peer_loss(exc: BaseException) -> bool:
    """Does this exception come from a backend whose peer vanished (the ring's "connection to a peer was lost")?"""
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(word in text for word in ("peer", "connection", "socket"))


def available_backends() -> list[str]:
    """The distributed backends this MLX build can use."""
    import mlx.core as mx

    return [b for b in BACKENDS if mx.distributed.is_available(b)]


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; ``group`` is None when training alone."""

    group: Any = None
    peer_timeout: float = DEFAULT_PEER_TIMEOUT

    @classmethod
    def init(cls) -> World:
        """Join the ranks ``mlx.launch`` (or mpirun) started; a plain ``punie train`` is a world of one."""
        import mlx.core as mx

        group = mx.distributed.init()  # the backend mlx.launch configured; a singleton group when not launched
        if group.size() == 1:
            return cls()
        raw = os.environ.get(PEER_TIMEOUT_ENV)
        try:
            timeout = float(raw) if raw else DEFAULT_PEER_TIMEOUT
        except ValueError:
            raise ConfigError(f"{PEER_TIMEOUT_ENV}={raw!r} is not a number of seconds.") from None
        return cls(group, timeout)

    @property
    def size(self) -> int:
        return 1 if self.group is None else int(self.group.size())

    @property
    def rank(self) -> int:
        return 0 if self.group is None else int(self.group.rank())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: list[int]) -> list[int]:
        """This rank's rows of a global batch (strided, so every rank gets rows of similar length)."""
        return indices[self.rank::self.size]

    def all_sum(self, x: Any) -> Any:
        import mlx.core as mx

        return x if self.group is None else mx.distributed.all_sum(x, group=self.group)

    def barrier(self, explain: Callable[[], str]) -> None:
        """Wait until every rank gets here (or the peer timeout passes: then ``explain()`` and exit)."""
        import mlx.core as mx

        if self.group is not None:
            with self.watchdog(explain):
                mx.eval(self.all_sum(mx.array(1.0)))

    # ---- inside the compiled step --------------------------------------------------------------
    def reduce_step(self, loss: Any, ntoks: Any, grad: Any, extra: Any) -> tuple[Any, Any, Any, Any]:
        """Global loss and token count; this rank's gradient weighted by its token share; summed ``extra``."""
        import mlx.core as mx
        from mlx.utils import tree_map

        n = ntoks.astype(mx.float32)
        packed = self.all_sum(mx.concatenate([mx.stack([loss * n, n]), extra]))
        total = packed[1]
        # average_gradients divides the sum by the world size; pre-multiplying by it leaves the
        # token-weighted sum, which is the gradient of the global mean loss.
        weight = n * self.size / total
        grad = tree_map(lambda g: (g * weight).astype(g.dtype), grad)
        return packed[0] / total, total, grad, packed[2:]

    def sum_gradients(self, grad: Any) -> Any:
        from mlx.nn.utils import average_gradients

        return grad if self.group is None else average_gradients(grad, group=self.group)

    # ---- agreement and broadcast ---------------------------------------------------------------
    def check_same(self, fields: dict[str, Any]) -> None:
        """Refuse to train unless every rank resolved the same settings, data and model (ConfigError)."""
        import mlx.core as mx

        if self.group is None:
            return
        names = sorted(fields)
        digests = [_digest(names)] + [_digest(fields[name]) for name in names]
        sizes: list[int] = mx.distributed.all_gather(mx.array([len(digests)], dtype=mx.int32),
                                                     group=self.group).tolist()  # type: ignore[assignment]
        if len(set(sizes)) > 1:  # not even the same set of fields: different punie versions
            raise ConfigError(f"the {self.size} ranks run different punie versions (they record {sizes} fields); "
                              "install the same punie on every machine.")
        gathered = mx.distributed.all_gather(mx.array(digests, dtype=mx.int32), group=self.group)
        rows: list[list[int]] = gathered.reshape(self.size, len(digests)).tolist()  # type: ignore[assignment]
        differ = [name for i, name in enumerate(names, start=1) if len({row[i] for row in rows}) > 1]
        if rows and len({row[0] for row in rows}) > 1:
            differ = ["the set of settings"]
        if differ:
            raise ConfigError(f"the {self.size} ranks were not started with the same run: {', '.join(differ)} "
                              f"differ (this is rank {self.rank}). Start every rank with the same settings, data "
                              "files and model (same paths and contents), e.g. through 'punie train --hosts'.")

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's ``value`` (any JSON), on every rank; the others pass None."""
        import mlx.core as mx
        import numpy as np

        if self.group is None:
            return value
        data = json.dumps(value).encode() if self.is_main else b""
        length = int(self.all_sum(mx.array([len(data)], dtype=mx.int32)).item())
        buffer = np.zeros(length, np.uint8)
        if self.is_main:
            buffer[:] = np.frombuffer(data, np.uint8)
        summed = self.all_sum(mx.array(buffer))  # the others add zeros
        return json.loads(bytes(np.array(summed, dtype=np.uint8)).decode())

    def broadcast_arrays(self, arrays: dict[str, Any] | None) -> dict[str, Any]:
        """Rank 0's named arrays on every rank (the others pass None and learn the shapes first)."""
        import mlx.core as mx

        header = self.broadcast_json({k: [list(v.shape), str(v.dtype).rsplit(".", 1)[-1]]
                                      for k, v in arrays.items()} if arrays is not None else None)
        out = {}
        for name, (shape, dtype) in header.items():
            local = arrays[name] if arrays is not None else mx.zeros(shape, dtype=getattr(mx, dtype))
            out[name] = self.all_sum(local)
        mx.eval(list(out.values()))
        return out

    # ---- a peer that stops answering -----------------------------------------------------------
    @contextmanager
    def watchdog(self, explain: Callable[[], str]) -> Iterator[Callable[[], None]]:
        """Yield ``beat``; if no beat comes for ``peer_timeout`` seconds, print ``explain()`` and exit."""
        if self.group is None:
            yield lambda: None
            return
        last = [time.monotonic()]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(1.0):
                if time.monotonic() - last[0] > self.peer_timeout:
                    # The main thread is blocked inside an all_sum that will never return: exit from here.
                    print(f"Error: rank {self.rank}: no training step finished for {self.peer_timeout:.0f} s; "
                          f"another rank stopped answering. {explain()}", file=sys.stderr, flush=True)
                    os._exit(WATCHDOG_EXIT)

        thread = threading.Thread(target=watch, name="punie-peer-watchdog", daemon=True)
        thread.start()
        try:
            yield lambda: last.__setitem__(0, time.monotonic())
        finally:
            done.set()


def _digest(value: Any) -> int:
    """31 bits of a JSON value's sha256 (fits an int32 all_gather on every backend)."""
    raw = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(raw[:4], "little") & 0x7FFFFFFF


def share_resume(world: World, trainer: Any, checkpoint: Any) -> None:
    """Every rank continues from rank 0's checkpoint (only rank 0 needs the run directory)."""
    from punie.training import checkpoints

    if world.is_main and checkpoint is not None:
        trainer.resume(checkpoint)
    if world.size == 1:
        return
    state = world.broadcast_json(trainer.state.to_json() if world.is_main and checkpoint is not None else None)
    if state is None:  # rank 0 starts from step 0: every rank already holds the same seeded initial weights
        return
    weights = world.broadcast_arrays(checkpoints.trainable_weights(trainer.model) if world.is_main else None)
    optimizer = world.broadcast_arrays(checkpoints.optimizer_tensors(trainer.optimizer) if world.is_main else None)
    if not world.is_main:
        checkpoints.restore_tensors(trainer.model, trainer.optimizer, weights, optimizer)
        trainer.restore_loop_state(state)


def run_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What must be equal on every rank: each setting, the data files, the base model's contents, versions.

    The base model's directory may differ between machines (another home directory); its hashes may not.
    """
    fields: dict[str, Any] = {f"config {k}": v for k, v in manifest["config"].items()}
    base = {k: v for k, v in manifest["base_model"].items() if k != "path"}
    return fields | {"data": manifest["data"], "base model": base, "versions": manifest["versions"]}
