"""The state of managed servers: one small JSON file per server in ``paths.servers_dir()``.

Concurrency: several punie processes may start, stop and list servers at once.
* A name is claimed by creating ``NAME.json`` exclusively: the record is written to
  a temporary file and hard-linked to its final name, which fails if the name
  exists (an O_EXCL create that never shows a half-written file).
* Later updates replace the file atomically (write a temporary file, rename).
* Deciding that an entry is stale and removing it, and choosing a port no other
  record holds, happen under an advisory lock on ``servers/.lock`` so two
  processes cannot both clean one entry and then delete each other's fresh claim.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from punie import fileio, paths
from punie.errors import ServeError
from punie.serve import procinfo

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

STARTING = "starting"
RUNNING = "running"


@dataclass(frozen=True)
class ServerRecord:
    """One managed mlx_lm.server, as saved in its state file."""

    name: str
    host: str
    port: int
    model: str
    adapter: str | None
    log: str
    status: str = STARTING  # STARTING until the server answered, then RUNNING
    pid: int | None = None
    pid_start: str | None = None  # procinfo start token of ``pid``, to detect pid reuse
    launcher_pid: int = field(default_factory=os.getpid)  # the punie process that started it
    launcher_start: str | None = None
    owner_pid: int | None = None  # set when the server ends with that process (ServerProcess, serve run)
    created_at: float = field(default_factory=time.time)

    @property
    def url(self) -> str:
        return f"http://{connect_host(self.host)}:{self.port}"

    @property
    def path(self) -> Path:
        return state_path(self.name)


def connect_host(host: str) -> str:
    """The address a client on this machine uses to reach a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ServeError(f"server name {name!r} is not valid: use up to 64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit.")
    return name


def state_path(name: str) -> Path:
    return paths.servers_dir() / f"{name}.json"


def log_path(name: str) -> Path:
    return paths.logs_dir() / f"serve-{name}.log"


def load(path: Path) -> ServerRecord | None:
    """The record in ``path``; None if it vanished. A damaged file raises ServeError naming it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ServeError(f"{path}: unreadable server state ({exc}); delete the file if no server uses it.") from exc
    try:
        return ServerRecord(**data)
    except TypeError as exc:
        raise ServeError(f"{path}: unexpected server state ({exc}); delete the file if no server uses it.") from exc


def find(name: str) -> ServerRecord | None:
    return load(state_path(check_name(name)))


def all_records() -> list[ServerRecord]:
    found = []
    for path in sorted(paths.servers_dir().glob("*.json")):
        record = load(path)
        if record is not None:
            found.append(record)
    return found


def save(record: ServerRecord) -> None:
    """Replace the record's state file atomically."""
    fileio.write_json(record.path, asdict(record))


def remove(record: ServerRecord) -> None:
    """Delete the state file if it still describes this server (not a newer claim of the same name)."""
    with lock():
        current = load(record.path)
        if current is not None and (current.created_at, current.launcher_pid) == (record.created_at,
                                                                                   record.launcher_pid):
            record.path.unlink(missing_ok=True)


def create_exclusive(record: ServerRecord) -> bool:
    """Write the record under its name unless that name exists; True when this call created it."""
    target = record.path
    fd, tmp_name = tempfile.mkstemp(prefix=f".{record.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(record), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp_name, target)  # atomic, and fails if the name is taken
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp_name)


@contextmanager
def lock() -> Iterator[None]:
    """An exclusive advisory lock over the servers directory (released if the holder dies)."""
    with open(paths.servers_dir() / ".lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def liveness(record: ServerRecord) -> str:
    """``alive``, ``dead``, ``pid-reused`` or ``launcher-gone`` (a start that crashed before spawning)."""
    if record.pid is None:
        if procinfo.is_running(record.launcher_pid, record.launcher_start):
            return "alive"  # still starting: the launcher has not spawned the server yet
        return "launcher-gone"
    info = procinfo.read(record.pid)
    if info is None or info.zombie:
        return "dead"
    if record.pid_start is not None and info.start != record.pid_start:
        return "pid-reused"
    return "alive"


def remove_if_stale(record: ServerRecord) -> str:
    """Re-check under the lock and delete the entry if its server is gone; return its liveness."""
    with lock():
        current = load(record.path)
        if current is None:
            return "dead"
        state = liveness(current)
        if state != "alive":
            current.path.unlink(missing_ok=True)
        return state


def with_launcher(record: ServerRecord) -> ServerRecord:
    info = procinfo.read(record.launcher_pid)
    return replace(record, launcher_start=info.start if info else None)
