"""punie.serve pieces that need no running server: state files, pid identity, options, diagnosis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from punie.errors import ConfigError, ModelError, ServeError
from punie.serve import launch, manager, procinfo, state
from punie.serve.state import ServerRecord


def _record(name: str = "srv", **kw) -> ServerRecord:
    base = ServerRecord(name=name, host="127.0.0.1", port=18001, model="/m/tiny", adapter=None,
                        log=str(state.log_path(name)))
    return state.with_launcher(replace(base, **kw))


@pytest.fixture
def sleeper():
    """An unrelated live process (stands in for a program that got a server's old pid)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_parse_port():
    assert manager.parse_port("auto") is None
    assert manager.parse_port("AUTO") is None
    assert manager.parse_port("8080") == 8080
    assert manager.parse_port(65535) == 65535
    for bad in ("0", "65536", "http", "-1", ""):
        with pytest.raises(ConfigError, match="--port must be 'auto'"):
            manager.parse_port(bad)


def test_is_loopback():
    assert manager.is_loopback("127.0.0.1")
    assert manager.is_loopback("localhost")
    assert manager.is_loopback("::1")
    assert not manager.is_loopback("0.0.0.0")
    assert not manager.is_loopback("192.168.1.5")


def test_check_name_rejects_paths_and_spaces():
    assert state.check_name("eval-run_1.2") == "eval-run_1.2"
    for bad in ("a b", "../x", "", "-x", "x" * 65):
        with pytest.raises(ServeError, match="not valid"):
            state.check_name(bad)


def test_missing_adapter_is_refused_before_anything_starts(tmp_path, punie_home):
    with pytest.raises(ModelError, match="no such directory"):
        manager.check_adapter(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="adapters.safetensors missing"):
        manager.check_adapter(tmp_path / "half")
    (tmp_path / "half" / "adapters.safetensors").write_bytes(b"")
    (tmp_path / "half" / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="invalid JSON"):
        manager.check_adapter(tmp_path / "half")


def test_exclusive_create_refuses_a_taken_name():
    first, second = _record("x"), _record("x", port=18002)
    assert state.create_exclusive(first)
    assert not state.create_exclusive(second)
    assert state.find("x").port == 18001  # the first claim is intact
    assert [p.name for p in state.state_path("x").parent.iterdir() if p.name != ".lock"] == ["x.json"]


def test_concurrent_exclusive_creates_have_one_winner():
    barrier = threading.Barrier(8)
    wins = []

    def claim(i: int) -> None:
        barrier.wait()
        wins.append(state.create_exclusive(_record("race", port=18000 + i)))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert json.loads(state.state_path("race").read_text())["name"] == "race"


def test_procinfo_identity_is_stable_and_distinguishes_processes(sleeper):
    me = procinfo.read(os.getpid())
    assert me is not None and not me.zombie
    assert procinfo.read(os.getpid()).start == me.start
    other = procinfo.read(sleeper.pid)
    assert other is not None and "time.sleep(60)" in other.cmdline
    assert procinfo.is_running(sleeper.pid, other.start)
    assert not procinfo.is_running(sleeper.pid, "linux:1" if other.start.startswith("linux") else "ps:never")


def test_exited_child_counts_as_gone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    info = procinfo.read(proc.pid)
    assert procinfo.wait_gone(proc.pid, info.start if info else None, timeout=20)
    proc.wait()


@pytest.mark.skipif(sys.platform == "darwin", reason="the ps path is what macOS uses anyway")
def test_ps_fallback_agrees_with_proc(sleeper):
    via_ps = procinfo._read_ps(sleeper.pid)
    assert via_ps is not None and "time.sleep(60)" in via_ps.cmdline
    assert procinfo._read_ps(sleeper.pid).start == via_ps.start


def test_pid_reuse_is_detected_reported_and_not_killed(sleeper):
    # The entry's pid now belongs to an unrelated program: a different start time.
    stale = _record("reused", pid=sleeper.pid, pid_start="linux:1" if sys.platform.startswith("linux") else "ps:x",
                    status=state.RUNNING)
    assert state.create_exclusive(stale)
    assert state.liveness(stale) == "pid-reused"
    [status] = manager.statuses()
    assert (status.health, status.removed) == ("pid reused", True)
    assert state.find("reused") is None
    assert sleeper.poll() is None  # status never signals a stranger

    assert state.create_exclusive(stale)
    manager.stop_server("reused", grace=0.5)
    assert sleeper.poll() is None  # nor does stop
    assert state.find("reused") is None


def test_dead_entries_and_crashed_starts_are_cleaned():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert state.create_exclusive(_record("dead", pid=proc.pid, pid_start="linux:1", status=state.RUNNING))
    crashed = replace(_record("crashed"), launcher_pid=proc.pid, launcher_start="linux:1")  # never spawned
    assert state.create_exclusive(crashed)
    found = {s.record.name: s for s in manager.statuses()}
    assert found["dead"].health in ("dead", "pid reused") and found["dead"].removed
    assert (found["crashed"].health, found["crashed"].removed) == ("start crashed", True)
    assert state.all_records() == []


def test_damaged_state_file_names_the_file():
    path = state.state_path("broken")
    path.write_text("{half")
    with pytest.raises(ServeError, match="broken.json: unreadable server state"):
        manager.statuses()


def test_stop_unknown_name_lists_known_ones():
    state.create_exclusive(_record("known", pid=None))
    with pytest.raises(ServeError, match=r"no server named 'ghost' \(running: known\)"):
        manager.stop_server("ghost")


def test_diagnose_names_the_likely_cause():
    rec = _record(adapter="/a/adapter")
    adapter_tb = "Traceback (most recent call last):\n  File utils.py, in load_adapters\nRuntimeError: bad header"
    assert "adapter /a/adapter could not be loaded" in launch.diagnose(adapter_tb, rec)
    model_tb = "Traceback (most recent call last):\nFileNotFoundError: No safetensors found in /m/tiny"
    assert "model /m/tiny could not be loaded" in launch.diagnose(model_tb, replace(rec, adapter=None))
    port = "Traceback (most recent call last):\nOSError: [Errno 98] Address already in use"
    assert "port 18001" in launch.diagnose(port, rec)
    assert launch.diagnose("all fine", rec) == "no known cause found in its log"


def test_server_formats_punie_tool_calls_as_structured_tool_calls(tiny_model):
    """What mlx_lm.server does with a <tool_call> block from a model carrying punie's template."""
    from mlx_lm.server import ToolCallFormatter
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from punie.chat import toolcalls

    tokenizer = load_tokenizer(tiny_model)
    assert tokenizer.has_tool_calling
    assert (tokenizer.tool_call_start, tokenizer.tool_call_end) == ("<tool_call>", "</tool_call>")
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    inner = text[len(tokenizer.tool_call_start):-len(tokenizer.tool_call_end)]  # what the server hands the parser
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    [call] = ToolCallFormatter(tokenizer.tool_parser, tools)([inner])
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert toolcalls.parse_text(text).tool_calls == [toolcalls.ToolCall("get_weather", {"city": "Paris"})]


def test_terminate_escalates_to_sigkill_after_the_grace_period():
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    info = procinfo.read(proc.pid)
    began = time.monotonic()
    assert procinfo.terminate(proc.pid, info.start, grace=0.5)
    assert time.monotonic() - began >= 0.5  # SIGTERM was ignored; SIGKILL after the grace period ended it
    assert not procinfo.is_running(proc.pid, info.start)
    proc.wait(timeout=5)


def test_follow_log_yields_every_line_and_ends_with_the_process(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("old line\n")
    code = ("import sys, time; f = open(sys.argv[1], 'a'); time.sleep(0.5)\n"
            "for i in range(3): f.write(f'line {i}\\n'); f.flush(); time.sleep(0.1)\n"
            "f.write('no newline at the end'); f.flush()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(log)])
    info = procinfo.read(proc.pid)
    record = _record(pid=proc.pid, pid_start=info.start if info else None)
    lines = list(manager.follow_log(log, until_gone=record, offset=log.stat().st_size, poll=0.05))
    proc.wait()
    assert lines == ["line 0", "line 1", "line 2", "no newline at the end"]


def test_exit_code_waits_for_a_process_that_is_ending():
    # `serve run` asks for the status right after the server's pid vanished; poll() alone
    # could answer None before the kernel had the status ready ("status None" in the message).
    from punie.serve import ServerProcess

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(3)"])
    server = ServerProcess()
    server._started = manager.Started(record=_record(), process=proc)
    assert server.exit_code() is None
    assert server.exit_code(wait=30) == 3
