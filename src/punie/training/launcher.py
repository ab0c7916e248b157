"""``punie train --hosts/--hostfile/--nproc``: start the ranks with ``mlx.launch`` and report how they ended.

MLX's launcher does the work (ssh to each host, the ring hostfile, ``MLX_RANK``);
punie resolves the settings once, here, and hands every rank the same resolved
config, so remote machines need the data and model at the same paths but no
copy of the run directory. ``mlx.launch`` exits 0 whatever its ranks did and,
when one rank fails, terminates the others; it logs each failure as
``Node with rank R exited with code C`` (or ``was killed``), which is how this
module learns which rank went first.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from punie import blas
from punie.errors import ConfigError
from punie.training.config import TrainConfig
from punie.training.distributed import DEFAULT_PEER_TIMEOUT, PEER_LOST_EXIT, PEER_TIMEOUT_ENV, WATCHDOG_EXIT
from punie.training.rundir import RunDir

LAUNCHED_ENV = "PUNIE_LAUNCHED"  # set for ranks punie started, so they leave the "continue with" hint to us
_FAILURE = re.compile(r"Node with rank (\d+) (?:exited with code (-?\d+)|was killed)")
_LOCAL = {"127.0.0.1", "localhost"}


@dataclass(frozen=True)
class Launch:
    """Where the ranks run: ``hosts`` (comma-separated IPs), a ``hostfile`` (mlx.launch's JSON), ``nproc`` each."""

    hosts: str | None = None
    hostfile: Path | None = None
    nproc: int | None = None
    backend: str | None = None  # None: the hostfile's, else mlx.launch's default (ring)
    peer_timeout: float | None = None

    def requested(self) -> bool:
        return self.hosts is not None or self.hostfile is not None or self.nproc is not None

    def host_names(self) -> list[str]:
        if self.hostfile is None:
            return [h.strip() for h in (self.hosts or "127.0.0.1").split(",")]
        try:
            data = json.loads(self.hostfile.read_text())
            entries = data["hosts"] if isinstance(data, dict) else data
            return [str(h["ssh"]) for h in entries]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--hostfile {self.hostfile}: not an mlx.launch hostfile ({exc}); expected JSON like "
                              '{"hosts": [{"ssh": "mac1", "ips": ["10.0.0.1"]}, ...]}.') from exc

    @property
    def world_size(self) -> int:
        return len(self.host_names()) * (self.nproc or 1)

    def options(self) -> list[str]:
        """These settings as ``punie train`` options (for the "continue with" hint)."""
        opts = ["--hosts", self.hosts] if self.hosts else []
        opts += ["--hostfile", str(self.hostfile)] if self.hostfile else []
        opts += ["--nproc", str(self.nproc)] if self.nproc else []
        return opts + (["--backend", self.backend] if self.backend else [])

    def validate(self, config: TrainConfig) -> None:
        if self.hostfile is not None and (self.hosts is not None or self.nproc is not None):
            raise ConfigError("--hostfile lists every rank; do not combine it with --hosts or --nproc.")
        if self.nproc is not None and self.nproc < 1:
            raise ConfigError(f"--nproc must be at least 1, got {self.nproc}.")
        if config.batch_size % self.world_size:
            raise ConfigError(f"--batch-size {config.batch_size} must be a multiple of the number of ranks "
                              f"({self.world_size}): each rank takes an equal share of every batch.")


@dataclass
class Outcome:
    code: int  # what ``punie train`` exits with: 0, 1, or 130 (interrupted)
    message: str = ""
    failures: list[tuple[int, int | None]] = field(default_factory=list)  # (rank, exit code; None: killed)


def mlx_launch() -> str:
    beside = Path(sys.executable).with_name("mlx.launch")
    found = str(beside) if beside.is_file() else shutil.which("mlx.launch")
    if found is None:
        raise ConfigError("mlx.launch was not found next to this Python or on PATH; it ships with mlx "
                          "(pip install mlx) and starts the training ranks.")
    return found


def command(launch: Launch, config: TrainConfig, *, resume: bool, force: bool) -> list[str]:
    """The mlx.launch command line: every rank runs ``punie train`` with the same resolved settings."""
    cmd = [mlx_launch()]
    if launch.hostfile is not None:
        cmd += ["--hostfile", str(launch.hostfile)]
    else:
        cmd += ["--hosts", launch.hosts or "127.0.0.1", "-n", str(launch.nproc or 1)]
    if launch.backend:
        cmd += ["--backend", launch.backend]
    timeout = launch.peer_timeout if launch.peer_timeout is not None else os.environ.get(PEER_TIMEOUT_ENV)
    cmd += ["--env", f"{PEER_TIMEOUT_ENV}={timeout or DEFAULT_PEER_TIMEOUT}", "--env", f"{LAUNCHED_ENV}=1"]
    names = launch.host_names()
    if all(h in _LOCAL for h in names) and "OPENBLAS_NUM_THREADS" not in os.environ:
        # Ranks sharing one machine split its cores; oversubscribed OpenBLAS threads spin and slow every rank.
        cmd += ["--env", f"OPENBLAS_NUM_THREADS={max(1, (os.cpu_count() or 1) // launch.world_size)}"]
    rank = [sys.executable, "-m", "punie", "train", "--resolved-config", config.model_dump_json()]
    rank += ["--resume"] if resume else []
    rank += ["--force"] if force else []
    return [*cmd, "--", *rank]


def run(launch: Launch, config: TrainConfig, *, resume: bool, force: bool, stderr: IO[str] | None = None) -> Outcome:
    """Start the ranks, pass their output through, and say how they ended."""
    launch.validate(config)
    if launch.host_names()[0] in _LOCAL:  # rank 0 runs here: refuse a bad --output before starting any rank
        from punie.training.run import check_output

        check_output(config, resume=resume, force=force)
    sink = stderr or sys.stderr
    failures: list[tuple[int, int | None]] = []
    # stdin is a pipe we keep open: mlx.launch polls it to forward input, and a closed one would make it spin.
    proc = subprocess.Popen(command(launch, config, resume=resume, force=force), stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", env=blas.child_env())
    reader = threading.Thread(target=_relay, args=(proc.stderr, sink, failures), daemon=True)
    reader.start()
    # Ctrl-C reaches the local ranks directly (same process group) and they stop together at a step
    # boundary; this process only waits for them, instead of dying and leaving them unreported.
    previous = signal.signal(signal.SIGINT, lambda *_: None) if _main_thread() else None
    try:
        _wait(proc, failures, launch)
        reader.join(timeout=10)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return _verdict(launch, config, proc.returncode, failures)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _relay(stream: Any, sink: IO[str], failures: list[tuple[int, int | None]]) -> None:
    previous, repeats = None, 0
    for line in stream:
        if match := _FAILURE.search(line):
            failures.append((int(match[1]), int(match[2]) if match[2] is not None else None))
        if line == previous:  # a backend logs each failed socket call: show one line and a count
            repeats += 1
            continue
        if repeats:
            sink.write(f"  (the line above {repeats} more times)\n")
        previous, repeats = line, 0
        sink.write(line)
        sink.flush()
    if repeats:
        sink.write(f"  (the line above {repeats} more times)\n")


def _wait(proc: subprocess.Popen[str], failures: list[tuple[int, int | None]], launch: Launch) -> None:
    """Wait for mlx.launch; once a rank has failed, give the others a bounded time to be stopped."""
    grace = (launch.peer_timeout or DEFAULT_PEER_TIMEOUT) + 30
    while proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        if failures:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()  # e.g. ssh to a machine that vanished: nothing answers mlx.launch's kill
                proc.wait()


def _verdict(launch: Launch, config: TrainConfig, returncode: int, failures: list[tuple[int, int | None]]) -> Outcome:
    if not failures and returncode == 0:
        return Outcome(0)
    # A stop all ranks agreed on (Ctrl-C): the first to exit makes mlx.launch terminate the rest, which have
    # written their files by then (see run._wait_for_rank_0).
    if failures and failures[0][1] == 130:
        return Outcome(130, f"Continue with: {_continue_hint(launch, config)}", failures)
    if not failures:
        return Outcome(1, f"mlx.launch exited with code {returncode}.", failures)
    # A rank that lost its connection exits PEER_LOST_EXIT; mlx.launch may log it before the rank that died.
    rank, code = next((f for f in failures if f[1] != PEER_LOST_EXIT), failures[0])
    how = ("was killed" if code is None else
           "lost its connection to the other ranks" if code == PEER_LOST_EXIT else
           f"stopped: no answer from its peers (exit code {code})" if code == WATCHDOG_EXIT else
           f"was killed by signal {-code}" if code < 0 else f"exited with code {code}")
    message = f"Distributed training stopped: rank {rank} {how} first; the other ranks were stopped."
    checkpoint = RunDir(config.output_dir()).latest_checkpoint() if config.output else None
    if checkpoint is not None:
        message += (f" {config.output} keeps its checkpoint at step {checkpoint.step}; continue with: "
                    f"{_continue_hint(launch, config)}")
    return Outcome(1, message, failures)


def _continue_hint(launch: Launch, config: TrainConfig) -> str:
    import shlex

    return shlex.join(["punie", "train", "--output", str(config.output), "--resume", *launch.options()])
