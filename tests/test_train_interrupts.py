"""Stopping a training run (Ctrl-C, kill -9, bad data) and starting it again.

Ctrl-C is a real SIGINT (``signal.raise_signal`` at a chosen moment, or sent to
a ``punie train`` subprocess); a resumed run must then give the per-step losses,
validation losses and final weights of a run that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from punie.errors import ConfigError, DataError
from punie.training import TrainingInterrupted, train
from punie.training.loop import Trainer
from punie.training.rundir import RunDir
from test_train import config, data_dir, tool_record, write_split  # noqa: F401  (data_dir is a fixture)

CLI_RUN = dict(iters=40, lr_schedule="cosine", warmup=2, dropout=0.1, save_every=10, steps_per_eval=5)
RESUMABLE = dict(iters=8, lr_schedule="cosine", warmup=2, dropout=0.1, save_every=4, steps_per_eval=3)


def curves(run: Path) -> list[tuple]:
    """Every reported number that must not depend on interruptions (timings and speeds do)."""
    keys = ("train_loss", "learning_rate", "val_loss", "best_val_loss", "trained_tokens")
    return [(m["iteration"], k, m[k]) for m in RunDir(run).read_metrics() for k in keys if k in m]


def assert_same_run(a: Path, b: Path, iters: int) -> None:
    ca, cb = curves(a), curves(b)
    assert [c[:2] for c in ca] == [c[:2] for c in cb]
    np.testing.assert_allclose([c[2] for c in ca], [c[2] for c in cb], rtol=1e-5)
    for weights in (Path("adapters.safetensors"), Path("checkpoints") / f"step-{iters:06d}" / "adapters.safetensors"):
        wa, wb = mx.load(str(a / weights)), mx.load(str(b / weights))
        assert wa.keys() == wb.keys()
        for k in wa:
            np.testing.assert_allclose(np.array(wa[k]), np.array(wb[k]), atol=1e-6, err_msg=f"{weights}: {k}")


def ctrl_c() -> None:
    signal.raise_signal(signal.SIGINT)  # as the terminal delivers it: the process's SIGINT handler runs


class CtrlCAtReport:
    """Ctrl-C while the progress display handles step ``step``'s train report (before that step's validation)."""

    def __init__(self, step: int):
        self.step = step

    def on_report(self, report):
        if report["iteration"] == self.step and "train_loss" in report:
            ctrl_c()


def test_ctrl_c_at_any_point_resumes_exactly(data_dir, tiny_model, tmp_path, monkeypatch):  # noqa: F811
    straight = tmp_path / "straight"
    train(config(data_dir, tiny_model, straight, **RESUMABLE))
    account, validation_loss = Trainer._account, Trainer.validation_loss

    def after_update_of(step):  # the step's weights are computed, its counter not yet advanced
        def hook(self, loss, ntoks):
            if self.state.step + 1 == step:
                ctrl_c()
            return account(self, loss, ntoks)
        return hook

    def during_validation_at(step):
        def hook(self):
            if self.state.step == step:
                ctrl_c()
            return validation_loss(self)
        return hook

    points = {"after the update of step 7": (after_update_of(7), None, None),
              "after the update of step 2": (after_update_of(2), None, None),
              "in the report of step 6, before its validation": (None, None, CtrlCAtReport(6)),
              "during the validation of step 3": (None, during_validation_at(3), None)}
    for name, (account_hook, validation_hook, callback) in points.items():
        out = tmp_path / name.replace(" ", "-").replace(",", "")
        with monkeypatch.context() as patch:
            if account_hook:
                patch.setattr(Trainer, "_account", account_hook)
            if validation_hook:
                patch.setattr(Trainer, "validation_loss", validation_hook)
            with pytest.raises(TrainingInterrupted) as info:
                train(config(data_dir, tiny_model, out, **RESUMABLE), callback)
        checkpoint = RunDir(out).latest_checkpoint()
        assert checkpoint is not None and info.value.step == checkpoint.step, name
        assert RunDir(out).status() == "interrupted", name
        train(config(data_dir, tiny_model, out, **RESUMABLE), resume=True)
        assert_same_run(straight, out, RESUMABLE["iters"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # training put the handler back


def test_ctrl_c_mid_accumulation_finishes_the_update_then_saves(data_dir, tiny_model, tmp_path):  # noqa: F811
    kw = RESUMABLE | {"grad_accumulation": 2}
    straight = tmp_path / "straight"
    train(config(data_dir, tiny_model, straight, **kw))
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        train(config(data_dir, tiny_model, out, **kw), CtrlCAtReport(5))
    assert info.value.step == 6 == RunDir(out).latest_checkpoint().step  # step 5 is half an update
    train(config(data_dir, tiny_model, out, **kw), resume=True)
    assert_same_run(straight, out, kw["iters"])


def cli_options(kw: dict) -> list[str]:
    base = dict(num_layers=2, batch_size=4, steps_per_report=1, learning_rate=1e-3) | kw
    return [x for k, v in base.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def start_cli(args: list[str], home: Path) -> subprocess.Popen:
    env = dict(os.environ, PUNIE_HOME=str(home), COLUMNS="200")
    env.pop("PUNIE_BLAS_REEXEC", None)
    return subprocess.Popen([sys.executable, "-m", "punie", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for_step(proc: subprocess.Popen, out: Path, step: int) -> None:
    deadline = time.monotonic() + 180
    while not any(m["iteration"] >= step for m in _metrics_so_far(out)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"training did not reach step {step} in time"
        time.sleep(0.01)


def _metrics_so_far(out: Path) -> list[dict]:
    try:
        return RunDir(out).read_metrics()
    except (DataError, FileNotFoundError):
        return []


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr


def test_sigint_to_punie_train_three_times_resumes_exactly(data_dir, tiny_model, tmp_path, punie_home):  # noqa: F811
    straight = tmp_path / "straight"
    train(config(data_dir, tiny_model, straight, **CLI_RUN))
    out = tmp_path / "run"
    first = [str(data_dir), "--model", str(tiny_model), "--output", str(out), *cli_options(CLI_RUN)]
    for n, step in enumerate((3, 14, 27)):  # each between two scheduled checkpoints
        proc = start_cli(first if n == 0 else ["--output", str(out), "--resume"], punie_home)
        wait_for_step(proc, out, step)
        proc.send_signal(signal.SIGINT)
        code, stderr = finish(proc)
        assert code == 130 and "Traceback" not in stderr, stderr
        saved = RunDir(out).latest_checkpoint().step
        assert f"checkpoint saved at step {saved}" in stderr and f"--output {out} --resume" in stderr
        assert saved >= step and saved % CLI_RUN["save_every"], "expected a checkpoint saved on Ctrl-C"
        assert RunDir(out).status() == "interrupted"
    code, stderr = finish(start_cli(["--output", str(out), "--resume"], punie_home))
    assert code == 0, stderr
    assert_same_run(straight, out, CLI_RUN["iters"])


def test_kill_9_before_the_first_checkpoint_restarts_on_resume(data_dir, tiny_model, tmp_path, punie_home, run_cli):  # noqa: F811
    kw = CLI_RUN | {"save_every": 1000}  # no checkpoint before the last step
    out = tmp_path / "run"
    proc = start_cli([str(data_dir), "--model", str(tiny_model), "--output", str(out), *cli_options(kw)], punie_home)
    wait_for_step(proc, out, 3)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert RunDir(out).read_manifest()["status"] == "running"  # nothing could record the kill...
    assert RunDir(out).status() == "interrupted"  # ...but the process it names is gone
    again = run_cli("train", str(data_dir), "--model", str(tiny_model), "--output", str(out), *cli_options(kw))
    assert again.returncode == 1
    assert "(interrupted, no checkpoint yet); pass --resume to continue it, --force to replace it" in again.stderr
    resumed = run_cli("train", "--output", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "trained again from step 0" in resumed.stderr
    assert RunDir(out).read_manifest()["status"] == "completed"
    straight = tmp_path / "straight"
    train(config(data_dir, tiny_model, straight, **kw))
    assert_same_run(straight, out, kw["iters"])


def test_a_run_refused_for_its_data_leaves_the_disk_as_it_was(data_dir, tiny_model, tmp_path):  # noqa: F811
    good = tmp_path / "good"
    train(config(data_dir, tiny_model, good, iters=3))
    before = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}
    (data_dir / "train.jsonl").write_text('{"messages": []}\n{not json\n')
    new = tmp_path / "new" / "run"
    with pytest.raises(DataError, match="train.jsonl:2"):
        train(config(data_dir, tiny_model, new))
    assert not (tmp_path / "new").exists()
    with pytest.raises(DataError, match="train.jsonl:2"):
        train(config(data_dir, tiny_model, good), force=True)  # --force replaces only a run that can start
    assert {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()} == before
    empty = tmp_path / "made-by-the-user"
    empty.mkdir()
    with pytest.raises(DataError):
        train(config(data_dir, tiny_model, empty))
    assert empty.is_dir() and not any(empty.iterdir())


def test_resume_without_a_run_and_a_foreign_directory(data_dir, tiny_model, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="holds no punie training run; start without --resume"):
        train(config(data_dir, tiny_model, tmp_path / "none"), resume=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not a punie training run"):
        train(config(data_dir, tiny_model, foreign))
    with pytest.raises(ConfigError, match="is not a punie training run"):
        train(config(data_dir, tiny_model, foreign), resume=True)
    assert (foreign / "mine.txt").read_text() == "keep me"


def test_a_run_another_live_process_is_training_is_refused(data_dir, tiny_model, tmp_path):  # noqa: F811
    from punie.serve import procinfo

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "run"
        out.mkdir()
        start = procinfo.read(other.pid).start
        RunDir(out).write_manifest({"status": "running", "config": {}, "process": {"pid": other.pid, "start": start}})
        for resume, force in ((True, False), (False, True)):
            with pytest.raises(ConfigError, match=f"being trained right now by process {other.pid}"):
                train(config(data_dir, tiny_model, out), resume=resume, force=force)
        assert RunDir(out).read_manifest()["process"]["pid"] == other.pid  # left alone
    finally:
        other.kill()
        other.wait()
