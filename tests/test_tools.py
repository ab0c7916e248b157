"""The agent's tools: what they do, and that they stay inside the workspace."""

from __future__ import annotations

import os
import sys
import time

import pytest

from punie.chat.toolcalls import ToolCall
from punie.errors import ConfigError
from punie.traces import sandbox
from punie.traces.tools import Workspace, call_tool, make_tools, tool_schemas


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def main():\n    return 42\n")
    (root / "README.md").write_text("# demo\nhello world\n")
    (tmp_path / "secret.txt").write_text("top secret\n")
    # The tools' behaviour at whatever level this machine has; tests/test_sandbox.py tests the confinement.
    return Workspace(root, timeout_s=5, sandbox="auto" if sandbox.available_level() != "none" else "none")


def run(ws, name, **arguments):
    return call_tool(make_tools(ws), ToolCall(name, arguments))


def test_schemas_are_compact_openai_functions(ws):
    schemas = tool_schemas(make_tools(ws))
    assert [s["function"]["name"] for s in schemas] == ["read_file", "write_file", "list_dir", "search", "run_command"]
    for schema in schemas:
        assert schema["type"] == "function"
        assert len(schema["function"]["description"]) <= 40
        assert schema["function"]["parameters"]["type"] == "object"


def test_read_list_search_write(ws):
    assert run(ws, "read_file", path="README.md").content == "# demo\nhello world\n"
    assert run(ws, "list_dir", path=".").content == "README.md\nsrc/"
    assert run(ws, "search", pattern="return").content == "src/app.py:2: return 42"
    assert run(ws, "search", pattern="zzz").content == "No matches for 'zzz'."
    result = run(ws, "write_file", path="notes/new.txt", content="abc")
    assert result.content == "Created notes/new.txt (3 characters)." and not result.is_error
    assert (ws.root / "notes" / "new.txt").read_text() == "abc"
    assert run(ws, "write_file", path="notes/new.txt", content="xyz").content.startswith("Replaced")


@pytest.mark.parametrize("name,args", [
    ("read_file", {"path": "../secret.txt"}),
    ("read_file", {"path": "src/../../secret.txt"}),
    ("list_dir", {"path": ".."}),
    ("search", {"pattern": "secret", "path": ".."}),
    ("write_file", {"path": "../evil.txt", "content": "x"}),
])
def test_dotdot_escapes_are_refused(ws, name, args):
    result = run(ws, name, **args)
    assert result.is_error and "outside the workspace" in result.content
    assert not (ws.root.parent / "evil.txt").exists()


@pytest.mark.parametrize("path", ["/etc/passwd", "~/secret.txt"])
def test_absolute_paths_are_refused(ws, path):
    result = run(ws, "read_file", path=path)
    assert result.is_error and "absolute" in result.content


def test_absolute_path_inside_the_workspace_is_refused_too(ws):
    result = run(ws, "read_file", path=str(ws.root / "README.md"))
    assert result.is_error and "relative" in result.content


def test_symlinks_out_of_the_workspace_are_refused(ws):
    os.symlink(ws.root.parent / "secret.txt", ws.root / "link.txt")
    os.symlink(ws.root.parent, ws.root / "up")
    attempts = [("read_file", {"path": "link.txt"}), ("list_dir", {"path": "up"}),
                ("read_file", {"path": "up/secret.txt"}), ("write_file", {"path": "up/new.txt", "content": "x"})]
    for name, args in attempts:
        result = run(ws, name, **args)
        assert result.is_error and "outside the workspace" in result.content, (name, args)
    assert not (ws.root.parent / "new.txt").exists()
    # search walks the tree but does not follow the links out
    assert run(ws, "search", pattern="top secret").content == "No matches for 'top secret'."


def test_symlink_inside_the_workspace_is_allowed(ws):
    os.symlink(ws.root / "README.md", ws.root / "readme-link")
    assert run(ws, "read_file", path="readme-link").content.startswith("# demo")


def test_run_command_output_and_exit_code(ws):
    result = run(ws, "run_command", command="python -c \"print('hi'); import sys; sys.exit(3)\"")
    assert result.content == "exit code: 3\nhi" and not result.is_error


@pytest.mark.parametrize("command", ["rm -rf src", "bash -c 'echo hi'", "/bin/echo hi", "./x.sh", "sudo ls"])
def test_run_command_refuses_programs_not_allowlisted(ws, command):
    result = run(ws, "run_command", command=command)
    assert result.is_error and "not allowed" in result.content
    assert (ws.root / "src").is_dir()


def test_shell_metacharacters_are_not_interpreted(ws):
    result = run(ws, "run_command", command="echo hi; touch pwned > out.txt $(touch pwned2) | cat")
    assert result.content == "exit code: 0\nhi; touch pwned > out.txt $(touch pwned2) | cat"
    assert sorted(p.name for p in ws.root.iterdir()) == ["README.md", "src"]


@pytest.mark.parametrize("command", ["cat /etc/passwd", "cat ../secret.txt", "head -n 1 src/../../secret.txt",
                                     "grep --file=/etc/passwd x", "cat ~/x"])
def test_run_command_refuses_path_arguments_outside(ws, command):
    result = run(ws, "run_command", command=command)
    assert result.is_error and ("absolute" in result.content or "outside" in result.content)


def test_run_command_timeout_stops_the_process(ws):
    ws.timeout_s = 0.5
    start = time.perf_counter()
    result = run(ws, "run_command", command="python -c \"import time; time.sleep(30)\"")
    assert result.is_error and "timed out after 0.5 s" in result.content
    assert time.perf_counter() - start < 10


def test_run_command_output_is_capped(ws):
    ws.max_output_chars = 100
    result = run(ws, "run_command", command="python -c \"print('x' * 100000)\"")
    assert not result.is_error
    assert len(result.content) < 200
    assert result.content.endswith("[output truncated: 100001 bytes in total]")


def test_run_command_shows_workspace_paths_relative(ws):
    result = run(ws, "run_command", command="python -c \"import os; print(os.getcwd())\"")
    assert result.content == "exit code: 0\n."


def test_read_limits_and_binary(ws):
    ws.max_read_chars = 10
    (ws.root / "big.txt").write_text("a" * 50)
    assert run(ws, "read_file", path="big.txt").content.startswith("a" * 10 + "\n[truncated")
    (ws.root / "blob.bin").write_bytes(b"\0\1\2")
    assert run(ws, "read_file", path="blob.bin").content == "Error: blob.bin is not a text file"


@pytest.mark.parametrize("name,args,message", [
    ("nope", {}, "unknown tool 'nope'"),
    ("read_file", {}, "needs the argument 'path'"),
    ("read_file", {"path": "README.md", "mode": "r"}, "has no argument 'mode'"),
    ("read_file", {"path": 7}, "must be a string"),
    ("read_file", {"path": "missing.txt"}, "no such file: missing.txt"),
    ("read_file", {"path": "src"}, "is a directory"),
    ("list_dir", {"path": "README.md"}, "is a file"),
    ("write_file", {"path": "src", "content": "x"}, "is a directory"),
])
def test_tool_errors_become_results(ws, name, args, message):
    result = run(ws, name, **args)
    assert result.is_error and result.content.startswith("Error: ") and message in result.content


def test_unexpected_exceptions_become_results(ws):
    def broken(**kwargs):
        raise RuntimeError("boom")

    tools = make_tools(ws)
    tools["read_file"] = tools["read_file"].__class__("read_file", "x", {"path": {"type": "string"}}, ("path",),
                                                     broken)
    result = call_tool(tools, ToolCall("read_file", {"path": "a"}))
    assert result.is_error and result.content == "Error: read_file failed: RuntimeError: boom"


def test_workspace_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        Workspace(tmp_path / "missing")


def test_python_maps_to_the_running_interpreter(ws):
    result = run(ws, "run_command", command="python -c \"import sys; print(sys.executable)\"")
    assert result.content == f"exit code: 0\n{sys.executable}"
