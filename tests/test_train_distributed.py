"""Data-parallel training: 2 local ranks through mlx.launch (ring backend over localhost).

A 2-rank run must give the one-process run's numbers: over 6 steps every
reported loss within rtol 1e-5 and every adapter weight within atol 1e-5. The
ranks add float32 partial sums in another order than one process does, and
nothing else differs; over many steps those rounding differences compound (Adam
divides by the root of tiny second moments), so the longer runs below, killed
and resumed, are compared with an uninterrupted 2-rank run, as exactly as the
one-process resume tests compare theirs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from punie import blas
from punie.errors import ConfigError
from punie.training import train
from punie.training.config import TrainConfig
from punie.training.launcher import Launch, _verdict
from punie.training.rundir import RunDir
from test_train import config, data_dir, tool_record, write_split  # noqa: F401  (data_dir is a fixture)
from test_train_interrupts import assert_same_run as assert_exact_resume
from test_train_interrupts import cli_options, curves

pytestmark = pytest.mark.skipif(not mx.distributed.is_available("ring"),
                                reason="this MLX build has no ring backend")

RUN = dict(iters=6, grad_accumulation=2, lr_schedule="cosine", warmup=2, steps_per_eval=3, save_every=3)
LONG = dict(iters=30, save_every=10, steps_per_eval=10, steps_per_report=5)
MLX_LAUNCH = str(Path(sys.executable).with_name("mlx.launch"))
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


def assert_same_run(a: Path, b: Path, iters: int) -> None:
    """Same reports (losses, learning rates, token counts) and adapter weights, to the stated tolerance."""
    ca, cb = curves(a), curves(b)
    assert [c[:2] for c in ca] == [c[:2] for c in cb]
    np.testing.assert_allclose([c[2] for c in ca], [c[2] for c in cb], rtol=LOSS_RTOL)
    for weights in (Path("adapters.safetensors"), Path("checkpoints") / f"step-{iters:06d}" / "adapters.safetensors"):
        wa, wb = mx.load(str(a / weights)), mx.load(str(b / weights))
        assert wa.keys() == wb.keys()
        for k in wa:
            np.testing.assert_allclose(np.array(wa[k]), np.array(wb[k]), atol=WEIGHT_ATOL, err_msg=f"{weights}: {k}")


def punie(*args: str, home: Path, wait: bool = True, env: dict | None = None) -> Any:
    full = blas.child_env(dict(os.environ, PUNIE_HOME=str(home), COLUMNS="200", **(env or {})))
    cmd = [sys.executable, "-m", "punie", *args]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=300)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)


def train_args(data: Path, model: Path, out: Path, kw: dict) -> list[str]:
    return ["train", str(data), "--model", str(model), "--output", str(out), *cli_options(kw)]


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of ``rank`` among the descendants of ``launcher`` (found through /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, found = [launcher], []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    for pid in found:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"MLX_RANK={rank}".encode() in environ and b"punie" in cmdline:
            return pid
    return None


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_for_exit(pid: int, timeout: float) -> None:
    """Wait until ``pid`` has exited (a zombie counts: its parent may be paused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} was still running after {timeout:.0f} s")


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        latest = RunDir(out).latest_checkpoint() if (out / "checkpoints").is_dir() else None
        if latest is not None and latest.step >= step:
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint at step {step} appeared; the run ended with {proc.poll()}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    """(data dir, an uninterrupted 2-rank LONG run on it)."""
    root = tmp_path_factory.mktemp("reference")
    data = root / "data"
    data.mkdir()
    write_split(data / "train.jsonl", [tool_record(i) for i in range(24)])
    write_split(data / "valid.jsonl", [tool_record(i) for i in range(100, 108)])
    write_split(data / "test.jsonl", [tool_record(i) for i in range(200, 204)])
    done = punie(*train_args(data, tiny_model, root / "run", LONG), "--nproc", "2", home=root / "home")
    assert done.returncode == 0, done.stderr
    return data, root / "run"


def test_two_ranks_give_the_one_process_losses_and_adapter(data_dir, tiny_model, tmp_path, punie_home):  # noqa: F811
    single = tmp_path / "single"
    train(config(data_dir, tiny_model, single, **RUN))
    out = tmp_path / "two"
    done = punie(*train_args(data_dir, tiny_model, out, RUN | {"steps_per_report": 1}), "--nproc", "2",
                 home=punie_home)
    assert done.returncode == 0, done.stderr
    assert_same_run(single, out, RUN["iters"])
    manifest = RunDir(out).read_manifest()
    assert manifest["status"] == "completed" and manifest["world_size"] == 2
    assert done.stdout.count("Adapter:") == 1  # rank 0 alone reports


def test_a_killed_rank_stops_the_other_and_the_run_resumes(reference, tiny_model, tmp_path, punie_home):
    data, uninterrupted = reference
    out = tmp_path / "run"
    proc = punie(*train_args(data, tiny_model, out, LONG), "--nproc", "2", home=punie_home, wait=False)
    launcher = None
    try:
        wait_for_checkpoint(out, proc, 10)
        victim, survivor = rank_pid(proc.pid, 1), rank_pid(proc.pid, 0)
        assert victim is not None and survivor is not None
        # Pause mlx.launch so that rank 0 must notice the lost peer itself (else the launcher's terminate may
        # come first, a different, also clean, stop); it can still write its output into the pipe.
        launcher = parent_pid(survivor)
        os.kill(launcher, signal.SIGSTOP)
        os.kill(victim, signal.SIGKILL)
        wait_for_exit(survivor, 120)
        os.kill(launcher, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if launcher is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(launcher, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    assert "rank 1 was killed by signal 9 first; the other ranks were stopped" in stderr
    saved = RunDir(out).latest_checkpoint().step
    assert 10 <= saved < LONG["iters"] and f"continue with: punie train --output {out} --resume --nproc 2" in stderr
    assert "rank 0 lost its connection to another rank" in stderr and "Traceback" not in stderr
    assert RunDir(out).read_manifest()["status"] == "interrupted"  # written by rank 0, not inferred
    resumed = punie("train", "--output", str(out), "--resume", "--nproc", "2", home=punie_home)
    assert resumed.returncode == 0, resumed.stderr
    assert_exact_resume(uninterrupted, out, LONG["iters"])


def test_a_silent_rank_makes_the_other_give_up_after_the_timeout(data_dir, tiny_model, tmp_path, punie_home):  # noqa: F811
    out = tmp_path / "run"
    proc = punie(*train_args(data_dir, tiny_model, out, LONG | {"iters": 100_000}), "--nproc", "2",
                 "--peer-timeout", "8", home=punie_home, wait=False)
    victim = None
    try:
        wait_for_checkpoint(out, proc, 10)
        victim = rank_pid(proc.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGSTOP)  # alive but silent, like a machine that dropped off the network
        _, stderr = proc.communicate(timeout=120)
    finally:
        if victim is not None:
            os.kill(victim, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    assert "rank 0: no training step finished for 8 s; another rank stopped answering" in stderr
    assert "rank 0 stopped: no answer from its peers" in stderr
    assert RunDir(out).latest_checkpoint().step >= 10


def test_ctrl_c_on_rank_0_alone_stops_both_at_one_step(reference, tiny_model, tmp_path, punie_home):
    data, uninterrupted = reference
    out = tmp_path / "run"
    proc = punie(*train_args(data, tiny_model, out, LONG), "--nproc", "2", home=punie_home, wait=False)
    try:
        wait_for_checkpoint(out, proc, 10)
        os.kill(rank_pid(proc.pid, 0), signal.SIGINT)  # a remote rank never sees the terminal's Ctrl-C
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    saved = RunDir(out).latest_checkpoint().step
    assert saved % LONG["save_every"], "expected the checkpoint saved on Ctrl-C, between the scheduled ones"
    assert f"Continue with: punie train --output {out} --resume --nproc 2" in stderr
    assert RunDir(out).read_manifest()["status"] == "interrupted"
    resumed = punie("train", "--output", str(out), "--resume", "--nproc", "2", home=punie_home)
    assert resumed.returncode == 0, resumed.stderr
    assert_exact_resume(uninterrupted, out, LONG["iters"])


RANK_WRAPPER = """
import os, sys
from punie.cli.entry import main
lr = os.environ.get("RANK1_LR", "1e-3") if os.environ["MLX_RANK"] == "1" else "1e-3"
sys.argv = ["punie", *sys.argv[1:], "--learning-rate", lr]
main()
"""


def test_mlx_launch_directly_and_a_mismatched_rank_is_refused(data_dir, tiny_model, tmp_path, punie_home):  # noqa: F811
    wrapper = tmp_path / "rank.py"
    wrapper.write_text(RANK_WRAPPER)
    out = tmp_path / "run"
    args = ["train", str(data_dir), "--model", str(tiny_model), "--output", str(out), "--iters", "4",
            "--batch-size", "4", "--num-layers", "2"]
    env = blas.child_env(dict(os.environ, PUNIE_HOME=str(punie_home), RANK1_LR="2e-3"))
    cmd = [MLX_LAUNCH, "-n", "2", "--backend", "ring", "--", sys.executable, str(wrapper), *args]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert "the 2 ranks were not started with the same run: config learning_rate differ" in refused.stderr
    assert not out.exists()  # refused before rank 0 claimed the output
    env["RANK1_LR"] = "1e-3"
    same = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert "WARN" not in same.stderr, same.stderr
    manifest = RunDir(out).read_manifest()
    assert manifest["status"] == "completed" and manifest["world_size"] == 2


def test_launch_settings_are_checked_before_any_rank_starts(tmp_path):
    cfg = TrainConfig(data=tmp_path, batch_size=3, output=tmp_path / "out")
    with pytest.raises(ConfigError, match="--batch-size 3 must be a multiple of the number of ranks \\(2\\)"):
        Launch(nproc=2).validate(cfg)
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text('{"backend": "ring", "hosts": [{"ssh": "mac1", "ips": ["10.0.0.1"]}, '
                        '{"ssh": "mac2", "ips": ["10.0.0.2"]}, {"ssh": "mac3", "ips": ["10.0.0.3"]}]}')
    assert Launch(hostfile=hostfile).world_size == 3
    with pytest.raises(ConfigError, match="do not combine it with --hosts or --nproc"):
        Launch(hostfile=hostfile, nproc=2).validate(cfg)
    hostfile.write_text("mac1 slots=2")
    with pytest.raises(ConfigError, match="not an mlx.launch hostfile"):
        Launch(hostfile=hostfile).host_names()
    assert Launch(hosts="10.0.0.1,10.0.0.2", nproc=2).world_size == 4


def test_verdict_names_the_rank_that_failed_first(tmp_path):
    cfg = TrainConfig(data=tmp_path, output=tmp_path / "out")
    launch = Launch(hosts="10.0.0.1,10.0.0.2")
    assert _verdict(launch, cfg, 0, []).code == 0
    interrupted = _verdict(launch, cfg, 0, [(1, 130), (0, -15)])
    assert interrupted.code == 130 and "--resume --hosts 10.0.0.1,10.0.0.2" in interrupted.message
    died = _verdict(launch, cfg, 0, [(1, -9), (0, -15)])
    assert died.code == 1 and "rank 1 was killed by signal 9 first" in died.message
    assert "no answer from its peers" in _verdict(launch, cfg, 0, [(0, 75)]).message
    # mlx.launch may log the rank that lost its connection before the rank that died: the cause is named
    assert "rank 1 was killed by signal 9 first" in _verdict(launch, cfg, 0, [(0, 76), (1, -9)]).message
    assert "rank 0 lost its connection" in _verdict(launch, cfg, 0, [(0, 76)]).message


def test_doctor_lists_the_distributed_backends(run_cli):
    import json

    info = json.loads(run_cli("doctor", "--json").stdout)
    assert "ring" in info["distributed_backends"].split(", ")
