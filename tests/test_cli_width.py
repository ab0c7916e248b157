"""Tables stay readable in an 80-column terminal (punie issue 11)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from punie.serve import state
from punie.traces.store import Trace, TraceStore

TASK = "What does scripts/count_items.py print when it is run with no arguments?"


def run_narrow(punie_home, *args: str) -> list[str]:
    env = dict(os.environ, PUNIE_HOME=str(punie_home), COLUMNS="80")
    env.pop("PUNIE_BLAS_REEXEC", None)
    proc = subprocess.run([sys.executable, "-m", "punie", *args], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    return lines


def test_traces_list_reads_at_80_columns(punie_home):
    with TraceStore() as store:
        for outcome, category in (("max_steps", "search"), ("finished", "list")):
            store.add(Trace(messages=[{"role": "user", "content": TASK}, {"role": "assistant", "content": "x"}],
                            task=TASK, source="agent", category=category, outcome=outcome,
                            model="/home/me/.punie/models/SmolLM2-135M-Instruct-with-a-long-name"))
    lines = run_narrow(punie_home, "traces", "list")
    assert lines[0].split() == ["id", "created", "source", "category", "outcome", "turns", "calls", "task"]
    # whole values, one line per trace, only the task cut (at the end)
    assert re.fullmatch(r"2 +\d\d-\d\d \d\d:\d\d +agent +list +finished +1 +0 +What does scripts.*…", lines[1])
    assert re.fullmatch(r"1 +\d\d-\d\d \d\d:\d\d +agent +search +max_steps +1 +0 +What does scripts.*…",
                        lines[2])
    assert lines[3] == "2 of 2 traces shown."


def test_serve_status_reads_at_80_columns(punie_home):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)  # a finished process: the entries are reported as dead
    model = "/home/me/.punie/models/SmolLM2-135M-Instruct"
    adapter = "/home/me/projects/shop/adapters/agent-lora-rank-16"
    for name in ("default", "coder-with-adapter"):
        state.save(state.ServerRecord(name=name, host="127.0.0.1", port=8080, model=model,
                                      adapter=adapter if name != "default" else None, log="x.log", pid=pid,
                                      status=state.RUNNING))
    lines = run_narrow(punie_home, "serve", "status")
    text = "\n".join(lines)
    for name in ("default", "coder-with-adapter"):
        row = next(line for line in lines if f" {name} " in line)
        assert f"pid {pid}" in row and "http://127.0.0.1:8080" in row and "dead (entry removed)" in row
    assert "model SmolLM2-135M-Instruct" in text and f"adapter {adapter}" in text  # never cut
