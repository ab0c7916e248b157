"""Reliability of ``punie serve`` with real mlx_lm.server processes on loopback (tiny model).

Every test ends with no server left running: the autouse ``no_leftovers`` fixture
stops whatever the state directory still lists and fails the test if a server
pid the test saw is still alive.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from punie.errors import ModelError, ServeError
from punie.serve import ServerProcess, launch, manager, procinfo, state
from punie.serve.manager import ServeOptions


@pytest.fixture(autouse=True)
def no_leftovers(punie_home):
    """Yields a set the test adds (pid, start) pairs to; on teardown, all of them must be gone."""
    seen: set[tuple[int, str | None]] = set()
    yield seen
    seen.update((r.pid, r.pid_start) for r in state.all_records() if r.pid)
    manager.stop_all(grace=2.0)
    alive = [pid for pid, start in seen if procinfo.is_running(pid, start)]
    for pid, start in seen:
        procinfo.terminate(pid, start, grace=1.0)
    assert not alive, f"server processes left running: {alive}"


def _env(punie_home) -> dict[str, str]:
    env = dict(os.environ, PUNIE_HOME=str(punie_home), COLUMNS="200")
    env.pop("PUNIE_BLAS_REEXEC", None)
    return env


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _running_record():
    records = [r for r in state.all_records() if r.status == state.RUNNING]
    return records[0] if records else None


@pytest.fixture
def held_port():
    """A loopback port held by a listening socket that is not an mlx_lm.server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_start_status_stop_round_trip_two_servers(run_cli, tiny_model, no_leftovers):
    first = run_cli("serve", "start", "--model", str(tiny_model), "--name", "one")
    assert first.returncode == 0, first.stderr
    second = run_cli("serve", "start", "--model", str(tiny_model), "--name", "two")
    assert second.returncode == 0, second.stderr
    one, two = state.find("one"), state.find("two")
    no_leftovers.update({(one.pid, one.pid_start), (two.pid, two.pid_start)})
    assert f"Started 'one' at {one.url} (pid {one.pid})" in first.stdout
    assert one.port != two.port and one.host == two.host == "127.0.0.1"
    assert one.pid != os.getpid() and procinfo.is_running(one.pid, one.pid_start)

    status = run_cli("serve", "status")
    assert status.returncode == 0, status.stderr
    for record in (one, two):
        row = next(line for line in status.stdout.splitlines() if f" {record.name} " in line)
        assert str(record.pid) in row and record.url in row and "ok" in row
    reply = httpx.post(f"{two.url}/v1/chat/completions", timeout=60, trust_env=False,
                       json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}).json()
    assert reply["choices"][0]["message"]["role"] == "assistant"

    stopped = run_cli("serve", "stop", "one")
    assert stopped.returncode == 0 and f"Stopped 'one' (pid {one.pid})" in stopped.stdout
    assert not procinfo.is_running(one.pid, one.pid_start) and state.find("one") is None
    assert procinfo.is_running(two.pid, two.pid_start)

    everything = run_cli("serve", "stop", "--all")
    assert everything.returncode == 0 and "Stopped 'two'" in everything.stdout
    assert not procinfo.is_running(two.pid, two.pid_start)
    assert "No servers" in run_cli("serve", "status").stdout


def test_simultaneous_starts_get_distinct_names_and_ports(punie_home, tiny_model, no_leftovers):
    cmd = [sys.executable, "-m", "punie", "serve", "start", "--model", str(tiny_model)]
    procs = [subprocess.Popen(cmd, env=_env(punie_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    records = state.all_records()
    no_leftovers.update((r.pid, r.pid_start) for r in records)
    assert [p.returncode for p in procs] == [0, 0], results
    assert sorted(r.name for r in records) == [tiny_model.name, f"{tiny_model.name}-2"]
    assert len({r.port for r in records}) == 2
    assert all(manager.statuses()[i].health == "ok" for i in range(2))


def test_same_name_twice_is_refused(run_cli, tiny_model, no_leftovers):
    assert run_cli("serve", "start", "--model", str(tiny_model), "--name", "dup").returncode == 0
    record = state.find("dup")
    no_leftovers.add((record.pid, record.pid_start))
    again = run_cli("serve", "start", "--model", str(tiny_model), "--name", "dup")
    assert again.returncode == 1
    assert f"a server named 'dup' is already running (pid {record.pid}" in again.stderr
    assert state.find("dup") == record  # the running server's entry is untouched


def test_requested_port_taken_is_a_clear_error_and_starts_nothing(run_cli, tiny_model, held_port):
    result = run_cli("serve", "start", "--model", str(tiny_model), "--port", str(held_port), "--name", "p")
    assert result.returncode == 1
    assert f"Error: port {held_port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert state.all_records() == [] and not state.log_path("p").exists()  # nothing was spawned


def test_port_taken_between_check_and_bind(monkeypatch, tiny_model, held_port, no_leftovers):
    """The race the pre-check cannot close: the server itself fails to bind; nothing is left running."""
    spawned = []
    real_spawn = launch.spawn
    monkeypatch.setattr(launch, "port_is_free", lambda host, port: True)
    monkeypatch.setattr(launch, "spawn", lambda *a: spawned.append(real_spawn(*a)) or spawned[-1])
    with pytest.raises(ServeError, match=f"port {held_port} on 127.0.0.1 is already in use by another program"):
        manager.start_server(ServeOptions(model=str(tiny_model), port=held_port, name="race"))
    [proc] = spawned
    assert proc.poll() is not None and not procinfo.is_running(proc.pid, None)
    assert state.all_records() == []


def test_auto_port_taken_first_is_retried_on_another(monkeypatch, tiny_model, held_port, no_leftovers):
    offers = iter([held_port])
    real_free_port = launch.free_port
    monkeypatch.setattr(launch, "port_is_free", lambda host, port: True)
    monkeypatch.setattr(launch, "free_port", lambda host: next(offers, None) or real_free_port(host))
    started = manager.start_server(ServeOptions(model=str(tiny_model), name="retry"))
    no_leftovers.add((started.record.pid, started.record.pid_start))
    assert started.record.port != held_port
    assert launch.client.health(started.record.url) == "ok"
    manager.stop_server("retry", grace=2.0)
    started.process.wait(timeout=10)


def test_child_guard_exits_when_its_port_is_taken(punie_home, tiny_model, held_port):
    """Bare mlx_lm.server hangs forever after a failed bind; the guard makes it exit with status 1."""
    from punie import blas

    cmd = [sys.executable, "-m", "punie.serve.child", "--model", str(tiny_model), "--port", str(held_port)]
    result = subprocess.run(cmd, env=blas.child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Address already in use" in result.stderr


def test_sigint_inside_context_manager_stops_the_server(punie_home, tiny_model, no_leftovers):
    script = textwrap.dedent(f"""
        import sys, time
        from punie.serve import ServerProcess
        with ServerProcess(model={str(tiny_model)!r}, name="ctx") as server:
            print(server.pid, flush=True)
            time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env(punie_home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        record = state.find("ctx")
        no_leftovers.add((pid, record.pid_start))
        assert record.pid == pid and procinfo.is_running(pid, record.pid_start)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in stderr
    assert not procinfo.is_running(pid, record.pid_start)
    assert state.all_records() == []


def test_owner_killed_outright_takes_its_server_along(punie_home, tiny_model, no_leftovers):
    """A script that dies without cleanup (SIGKILL) leaves no server behind: the child watches its owner."""
    script = f"from punie.serve import ServerProcess\nimport time\n" \
             f"s = ServerProcess(model={str(tiny_model)!r}, name='orphan').start()\nprint(s.pid, flush=True)\n" \
             f"time.sleep(300)\n"
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env(punie_home), stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    record = state.find("orphan")
    no_leftovers.add((pid, record.pid_start))
    proc.kill()
    proc.wait()
    assert procinfo.wait_gone(pid, record.pid_start, timeout=10)
    [status] = manager.statuses()
    assert (status.record.name, status.health, status.removed) == ("orphan", "dead", True)


def test_server_killed_from_outside(run_cli, tiny_model, no_leftovers):
    with ServerProcess(model=str(tiny_model), name="victim") as server:
        no_leftovers.add((server.pid, server.record.pid_start))
        assert server.chat([{"role": "user", "content": "hi"}], max_tokens=2)["choices"]
        os.kill(server.pid, signal.SIGKILL)
        assert procinfo.wait_gone(server.pid, server.record.pid_start, timeout=10)
        [status] = manager.statuses()  # in this (parent) process: must not steal the exit status
        assert (status.record.name, status.health, status.removed) == ("victim", "dead", True)
        assert state.find("victim") is None
        with pytest.raises(ServeError, match=r"server 'victim' \(pid \d+\) was killed by signal 9"):
            server.chat([{"role": "user", "content": "hi"}])
    assert "No servers" in run_cli("serve", "status").stdout


def test_detached_server_killed_from_outside_is_reported_and_cleaned(run_cli, tiny_model, no_leftovers):
    assert run_cli("serve", "start", "--model", str(tiny_model), "--name", "gone").returncode == 0
    record = state.find("gone")
    no_leftovers.add((record.pid, record.pid_start))
    os.kill(record.pid, signal.SIGKILL)
    assert procinfo.wait_gone(record.pid, record.pid_start, timeout=10)
    status = run_cli("serve", "status")
    assert "gone" in status.stdout and "dead (entry removed)" in status.stdout
    with pytest.raises(ServeError, match="cannot reach the server"):
        manager.client.chat_completion(record.url, [{"role": "user", "content": "hi"}])
    assert state.find("gone") is None


def test_stop_unknown_name_exits_1(run_cli):
    result = run_cli("serve", "stop", "nosuch")
    assert result.returncode == 1
    assert "Error: no server named 'nosuch'" in result.stderr and "Traceback" not in result.stderr


def test_missing_adapter_fails_before_starting(run_cli, tiny_model, tmp_path):
    result = run_cli("serve", "start", "--model", str(tiny_model), "--adapter", str(tmp_path / "nope"), "--name", "a")
    assert result.returncode == 1 and "no such directory" in result.stderr
    assert state.all_records() == [] and not state.log_path("a").exists()
    with pytest.raises(ModelError):
        ServerProcess(model=str(tiny_model), adapter=tmp_path / "nope").start()


def test_broken_adapter_reports_cause_and_log_tail(tiny_model, tmp_path, no_leftovers):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"num_layers": 2, "lora_parameters": '
                                                 '{"rank": 4, "scale": 1.0, "dropout": 0.0}}')
    (adapter / "adapters.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ServeError) as info:
        manager.start_server(ServeOptions(model=str(tiny_model), adapter=adapter, name="bad"))
    message = str(info.value)
    assert f"the adapter {adapter} could not be loaded" in message
    assert "Last lines of its log" in message and "adapters.safetensors" in message
    assert state.all_records() == []
    assert "start failed; server stopped" in state.log_path("bad").read_text()


def test_non_loopback_host_warns(run_cli, tiny_model, tmp_path):
    # The adapter error stops it before anything binds: this checks the warning, not a public server.
    result = run_cli("serve", "start", "--model", str(tiny_model), "--host", "0.0.0.0",
                     "--adapter", str(tmp_path / "nope"))
    assert "has no authentication" in result.stderr
    quiet = run_cli("serve", "start", "--model", str(tiny_model), "--adapter", str(tmp_path / "nope"))
    assert "authentication" not in quiet.stderr


def test_logs_and_follow_end_with_the_server(run_cli, punie_home, tiny_model, no_leftovers):
    assert run_cli("serve", "start", "--model", str(tiny_model), "--name", "talk").returncode == 0
    record = state.find("talk")
    no_leftovers.add((record.pid, record.pid_start))
    logs = run_cli("serve", "logs", "talk")
    assert logs.returncode == 0 and f"Starting httpd at 127.0.0.1 on port {record.port}" in logs.stdout
    follower = subprocess.Popen([sys.executable, "-m", "punie", "serve", "logs", "talk", "--follow", "--lines", "1"],
                                env=_env(punie_home), stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert run_cli("serve", "stop", "talk").returncode == 0
        out, _ = follower.communicate(timeout=30)  # returns by itself once the server is gone
    finally:
        follower.kill()
    assert follower.returncode == 0 and "punie: stopping pid" in out
    assert "stopping pid" in run_cli("serve", "logs", "talk").stdout  # the log outlives the server
    assert run_cli("serve", "logs", "never").returncode == 1


def test_run_in_foreground_stops_on_ctrl_c(punie_home, tiny_model, no_leftovers):
    proc = subprocess.Popen([sys.executable, "-m", "punie", "serve", "run", "--model", str(tiny_model),
                             "--name", "fg"], env=_env(punie_home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        record = _wait_for(_running_record, what="the foreground server")
        no_leftovers.add((record.pid, record.pid_start))
        assert record.owner_pid == proc.pid
        # The record is written while the server starts, and Ctrl-C then is a clean stop too: wait for the
        # "Serving" line so this tests a stop of a running server (under load the two raced).
        seen, shown = [], []
        for line in proc.stderr:  # ends at EOF if the server never comes up
            seen.append(line)
            if "Serving 'fg'" in line:
                break
        for line in proc.stdout:  # and for the log's first line, printed after "Serving" (this raced too)
            shown.append(line)
            if "punie-serve: listening" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest_out, rest = proc.communicate(timeout=60)
        out, err = "".join(shown) + rest_out, "".join(seen) + rest
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Serving 'fg'" in err and "Stopping 'fg'" in err
    assert "punie-serve: listening" in out  # the server's log is shown
    assert not procinfo.is_running(record.pid, record.pid_start)
    assert state.all_records() == []


def test_chat_with_tools_reaches_a_tool_capable_template(tiny_model, no_leftovers):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    with ServerProcess(model=str(tiny_model)) as server:
        no_leftovers.add((server.pid, server.record.pid_start))
        plain = server.chat([{"role": "user", "content": "weather?"}], max_tokens=2)
        with_tools = server.chat([{"role": "user", "content": "weather?"}], tools=tools, max_tokens=2)
    # The tool schema is rendered into the prompt, and the server did not warn that tools are unsupported.
    assert with_tools["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 20
    assert "does not support tool calling" not in server.log.read_text()
    assert not procinfo.is_running(server.pid, server.record.pid_start)


def test_ctrl_c_while_starting_leaves_nothing(punie_home, tiny_model, no_leftovers):
    """SIGINT while the server is still loading (a slow model, simulated): the half-started server is killed."""
    script = textwrap.dedent(f"""
        import time
        from punie.serve import ServerProcess, launch
        launch.wait_ready = lambda proc, record, timeout: (print(proc.pid, flush=True), time.sleep(300))
        ServerProcess(model={str(tiny_model)!r}, name="slow").start()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env(punie_home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        record = state.find("slow")
        no_leftovers.add((pid, record.pid_start))
        assert record.status == state.STARTING and procinfo.is_running(pid, record.pid_start)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in stderr
    assert not procinfo.is_running(pid, record.pid_start)
    assert state.all_records() == []


def test_run_exits_1_when_the_server_dies(punie_home, tiny_model, no_leftovers):
    proc = subprocess.Popen([sys.executable, "-m", "punie", "serve", "run", "--model", str(tiny_model)],
                            env=_env(punie_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        record = _wait_for(_running_record, what="the foreground server")
        no_leftovers.add((record.pid, record.pid_start))
        os.kill(record.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "exited on its own (status -9)" in err
    assert state.all_records() == []


def test_stop_of_a_dead_entry_says_so(run_cli, tiny_model, no_leftovers):
    assert run_cli("serve", "start", "--model", str(tiny_model), "--name", "stale").returncode == 0
    record = state.find("stale")
    no_leftovers.add((record.pid, record.pid_start))
    os.kill(record.pid, signal.SIGKILL)
    assert procinfo.wait_gone(record.pid, record.pid_start, timeout=10)
    result = run_cli("serve", "stop", "stale")
    assert result.returncode == 0 and "was already gone" in result.stdout
    assert state.find("stale") is None


def test_server_gets_the_blas_fix_and_ignores_http_proxies(monkeypatch, tiny_model, no_leftovers):
    from punie import blas

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy that does not exist
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with ServerProcess(model=str(tiny_model)) as server:
        no_leftovers.add((server.pid, server.record.pid_start))
        assert server.health() == "ok"
        assert server.chat([{"role": "user", "content": "hi"}], max_tokens=1)["choices"]
        if blas.applies() and blas.child_env().get("LD_PRELOAD"):
            maps = Path(f"/proc/{server.pid}/maps").read_text()
            assert "openblas" in maps, "the server process did not load the preloaded OpenBLAS"
