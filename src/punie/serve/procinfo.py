"""Is a recorded process still the one punie started, and how to end it.

A pid alone is not an identity: once a process exits, the system may give its
pid to an unrelated program. punie records the process start time with the pid
and compares it before it reports a server alive or sends it a signal. Linux
reads ``/proc``; other systems (macOS) ask ``ps``. A zombie (exited, not yet
reaped) counts as gone; reaping is left to the ``Popen`` that started it, which
then still sees the true exit status (``-9`` for a kill, say).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    start: str  # opaque start-time token; equal tokens mean the same process
    cmdline: str
    zombie: bool


def read(pid: int) -> ProcInfo | None:
    """What the system knows about ``pid`` now, or None when no such process exists."""
    if pid <= 0:
        return None
    if sys.platform.startswith("linux"):
        return _read_proc(pid)
    return _read_ps(pid)


def _read_proc(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw_cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    state, starttime = fields[0], fields[19]  # fields 3 and 22 of proc(5)
    cmdline = raw_cmd.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    return ProcInfo(pid=pid, start=f"linux:{starttime}", cmdline=cmdline, zombie=state in ("Z", "X"))


def _read_ps(pid: int) -> ProcInfo | None:
    proc = subprocess.run(["ps", "-ww", "-o", "stat=", "-o", "lstart=", "-o", "command=", "-p", str(pid)],
                          capture_output=True, text=True)
    line = proc.stdout.strip()
    if proc.returncode != 0 or not line:
        return None
    # stat, then lstart as five words ("Sat Nov 21 19:58:03 2026"), then the command line.
    parts = line.split(None, 6)
    if len(parts) < 6:
        return None
    return ProcInfo(pid=pid, start="ps:" + " ".join(parts[1:6]), cmdline=parts[6] if len(parts) > 6 else "",
                    zombie=parts[0].startswith("Z"))


def is_running(pid: int, start: str | None) -> bool:
    """True when ``pid`` is alive and, if ``start`` is given, is the same process that was recorded."""
    info = read(pid)
    if info is None or info.zombie:
        return False
    return start is None or info.start == start


def send(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (servers run in their own session), else to ``pid``."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pid: int, start: str | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to exit; True when it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        if not is_running(pid, start):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(pid: int, start: str | None, grace: float) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds; True when the process is gone.

    Does nothing to a pid that now belongs to another process (``start`` differs).
    """
    if not is_running(pid, start):
        return True
    send(pid, signal.SIGTERM)
    if wait_gone(pid, start, grace):
        return True
    send(pid, signal.SIGKILL)
    return wait_gone(pid, start, 5.0)
