"""run_command under the OS sandbox: every escape from punie issue 11, tried for real.

The workspace and an "outside" directory sit side by side in tmp_path; each test
asserts that the outside file was not created and its secret not returned.
Tests that need bubblewrap skip without it, except under CI=true where they fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from punie.chat.toolcalls import ToolCall
from punie.errors import ConfigError
from punie.traces import sandbox
from punie.traces.tools import Workspace, call_tool, make_tools

SECRET = "top secret"


def _need_bwrap() -> None:
    if sandbox.available_level() == "bwrap":
        return
    message = "bubblewrap is needed to test the sandbox; install it with 'apt-get install -y bubblewrap'"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def outside(tmp_path):
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text(SECRET + "\n")
    return out


@pytest.fixture
def root(tmp_path, outside):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("# demo\n")
    os.symlink(outside, ws / "link")
    return ws


@pytest.fixture
def bwrap_ws(root):
    _need_bwrap()
    return Workspace(root, timeout_s=20, sandbox="bwrap")


def run(ws, command):
    return call_tool(make_tools(ws), ToolCall("run_command", {"command": command})).content


# --- symlinks: refused by the argument check, whatever the sandbox -------------------------------------------------

@pytest.mark.parametrize("level", ["none", "auto"])
@pytest.mark.parametrize("command", ["cat link/secret.txt", "grep -r secret link", "head link/secret.txt"])
def test_reading_through_a_symlink_out_is_refused(root, level, command):
    if level == "auto":
        _need_bwrap()
    result = run(Workspace(root, sandbox=level), command)
    assert SECRET not in result and "outside the workspace" in result


@pytest.mark.parametrize("command", ["sort -o link/f README.md", "git diff --no-index --output=link/f README.md x",
                                     "git -C link init"])
def test_writing_through_a_symlink_out_is_refused(root, outside, command):
    (root / "x").write_text("other\n")
    result = run(Workspace(root, sandbox="none"), command)
    assert "outside the workspace" in result
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


# --- what text checks cannot see: contained by bubblewrap ----------------------------------------------------------

@pytest.fixture
def git_ws(bwrap_ws):
    subprocess.run(["git", "init", "-q", str(bwrap_ws.root)], check=True)
    return bwrap_ws


@pytest.mark.parametrize("command", [
    "git -c alias.x=\"!touch ../outside/f\" x",
    "git -c core.fsmonitor=\"touch ../outside/f\" status",
    "git -c diff.external=\"touch ../outside/f\" diff --no-index README.md other.txt",
    "python -c \"open('../outside/f', 'w').write('x')\"",
])
def test_programs_cannot_write_outside(git_ws, outside, command):
    (git_ws.root / "other.txt").write_text("other\n")
    run(git_ws, command)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_written_code_run_by_pytest_cannot_write_outside(bwrap_ws, outside):
    tools = make_tools(bwrap_ws)
    code = "open('../outside/f', 'w').write('x')\n"
    assert not call_tool(tools, ToolCall("write_file", {"path": "conftest.py", "content": code})).is_error
    call_tool(tools, ToolCall("run_command", {"command": "pytest -q -p no:cacheprovider"}))
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_programs_cannot_read_outside(bwrap_ws, outside):
    result = run(bwrap_ws, "python -c \"print(open('../outside/secret.txt').read())\"")
    assert SECRET not in result and "No such file" in result
    home = Path.home() / ".punie-sandbox-test-secret"
    if os.access(Path.home(), os.W_OK) and not home.exists():
        home.write_text(SECRET)
        try:
            assert SECRET not in run(bwrap_ws, f"python -c \"print(open({str(home)!r}).read())\"")
        finally:
            home.unlink()


def test_programs_cannot_use_the_network(bwrap_ws):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('CONNECTED')"
        result = run(bwrap_ws, f"python -c \"{code}\"")
    assert "CONNECTED" not in result and "exit code: 1" in result


def test_workspace_writes_and_toolchain_still_work(bwrap_ws):
    assert run(bwrap_ws, "python -c \"open('made.txt', 'w').write('ok')\"") == "exit code: 0"
    assert (bwrap_ws.root / "made.txt").read_text() == "ok"
    assert run(bwrap_ws, "git init -q") == "exit code: 0" and (bwrap_ws.root / ".git").is_dir()
    assert run(bwrap_ws, "python -c \"import tempfile; print(tempfile.mkstemp()[1][:5])\"") == "exit code: 0\n/tmp/"


# --- processes outliving the command ----------------------------------------------------------------------------

LATE = ("import os, time\n"
        "if os.fork() == 0:\n"
        "    {setsid}\n"
        "    time.sleep(1.5)\n"
        "    open('late.txt', 'w').write('still running')\n"
        "    os._exit(0)\n"
        "time.sleep({parent_sleep})\n")


def _late_command(ws, *, setsid: bool, parent_sleep: float) -> str:
    code = LATE.format(setsid="os.setsid()" if setsid else "pass", parent_sleep=parent_sleep)
    (ws.root / "late.py").write_text(code)
    return "python late.py"


@pytest.mark.parametrize("setsid", [False, True])
def test_timeout_stops_forked_grandchildren(bwrap_ws, setsid):
    bwrap_ws.timeout_s = 0.5
    result = run(bwrap_ws, _late_command(bwrap_ws, setsid=setsid, parent_sleep=30))
    assert "timed out" in result
    time.sleep(3)  # the grandchild would have written late.txt after 1.5 s
    assert not (bwrap_ws.root / "late.txt").exists()


@pytest.mark.parametrize("level", ["none", "bwrap"])
def test_background_children_do_not_outlive_a_finished_command(root, level):
    if level == "bwrap":
        _need_bwrap()
    ws = Workspace(root, timeout_s=20, sandbox=level)
    assert run(ws, _late_command(ws, setsid=False, parent_sleep=0)) == "exit code: 0"
    time.sleep(3)
    assert not (ws.root / "late.txt").exists()


def test_a_new_session_does_not_outlive_a_finished_command_in_the_sandbox(bwrap_ws):
    assert run(bwrap_ws, _late_command(bwrap_ws, setsid=True, parent_sleep=0)) == "exit code: 0"
    time.sleep(3)
    assert not (bwrap_ws.root / "late.txt").exists()


# --- output is capped as it arrives ---------------------------------------------------------------------------

@pytest.mark.parametrize("level", ["none", "auto"])
def test_huge_output_is_capped_as_it_arrives(root, level, monkeypatch):
    if level == "auto":
        _need_bwrap()

    def no_temp_files(*args, **kwargs):
        raise AssertionError("run_command must not spool output to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_temp_files)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_temp_files)
    ws = Workspace(root, timeout_s=60, max_output_chars=4000, sandbox=level)
    result = run(ws, "python -c \"import sys; sys.stdout.write('x' * 50_000_000)\"")
    assert result.startswith("exit code: 0\nxxxx") and len(result) < 4200
    assert result.endswith("[output truncated: 50000000 bytes in total]")


# --- choosing the sandbox ------------------------------------------------------------------------------------

def test_without_an_os_sandbox_run_command_refuses(root, monkeypatch):
    monkeypatch.setattr(sandbox, "available_level", lambda: "none")
    ws = Workspace(root)
    result = run(ws, "echo hi")
    assert result.startswith("Error: ") and "bubblewrap" in result and "--no-sandbox" in result
    assert run(Workspace(root, sandbox="none"), "echo hi") == "exit code: 0\nhi"


def test_a_sandbox_that_is_not_available_is_a_config_error(root, monkeypatch):
    monkeypatch.setattr(sandbox, "available_level", lambda: "none")
    with pytest.raises(ConfigError, match="bwrap"):
        Workspace(root, sandbox="bwrap")
    with pytest.raises(ConfigError, match="got 'chroot'"):
        Workspace(root, sandbox="chroot")


def test_bwrap_argv_binds_the_workspace_last_and_unshares_everything(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    argv = sandbox.bwrap_argv(["/usr/bin/echo", "hi"], ws, bwrap="/usr/bin/bwrap")
    assert argv[0] == "/usr/bin/bwrap" and argv[-3:] == ["--", "/usr/bin/echo", "hi"]
    for flag in ("--unshare-all", "--die-with-parent", "--new-session"):
        assert flag in argv
    tmpfs = argv.index("--tmpfs")
    assert argv[tmpfs + 1] == "/tmp"
    bind = argv.index("--bind")
    assert argv[bind + 1: bind + 3] == [str(ws), str(ws)] and bind > tmpfs  # the workspace may live under /tmp
    assert argv[argv.index("--chdir") + 1] == str(ws)
    assert "--share-net" not in argv and argv[1:4] != ["--ro-bind", "/", "/"]


def test_seatbelt_profile_confines_writes_reads_and_network(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    private_tmp = tmp_path / "tmp"
    profile = sandbox.seatbelt_profile(ws, private_tmp, read_paths=[Path("/usr"), Path("/opt/py")])
    assert profile.startswith("(version 1)\n(deny default)")
    writes = next(line for line in profile.splitlines() if line.startswith("(allow file-write*"))
    assert f'(subpath "{ws}")' in writes and f'(subpath "{private_tmp}")' in writes and "/usr" not in writes
    reads = next(line for line in profile.splitlines() if line.startswith("(allow file-read*"))
    assert '(subpath "/usr")' in reads and '(subpath "/opt/py")' in reads and f'(subpath "{ws}")' in reads
    assert "(deny network*)" in profile and "(allow network" not in profile
    argv, env = sandbox.WRAPPERS["sandbox-exec"](["/usr/bin/true"], ws, private_tmp, {"TMPDIR": "/x"})
    assert argv[:2] == ["/usr/bin/sandbox-exec", "-p"] and argv[-2:] == ["--", "/usr/bin/true"]
    assert env["TMPDIR"] == str(private_tmp)


def test_seatbelt_profile_quotes_paths(tmp_path):
    odd = tmp_path / 'a "quoted" \\ dir'
    profile = sandbox.seatbelt_profile(odd, tmp_path, read_paths=[])
    assert '(subpath "' + str(odd).replace("\\", "\\\\").replace('"', '\\"') + '")' in profile


@pytest.mark.skipif(sys.platform != "darwin", reason="sandbox-exec exists only on macOS")
def test_sandbox_exec_contains_writes_and_reads_on_macos(root, outside):
    ws = Workspace(root, timeout_s=20, sandbox="sandbox-exec")
    run(ws, "python -c \"open('../outside/f', 'w').write('x')\"")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert SECRET not in run(ws, "python -c \"print(open('../outside/secret.txt').read())\"")
    assert run(ws, "python -c \"open('made.txt', 'w').write('ok')\"") == "exit code: 0"
