"""Operating-system confinement for ``run_command``.

Text checks on a command's arguments cannot contain an allowlisted interpreter
(``python -c``, ``git -c alias.x=!sh``, a written ``conftest.py`` run by pytest),
so every command runs inside an OS sandbox that sees only the workspace
(read-write) and the toolchain (read-only):

- ``bwrap`` (Linux, bubblewrap): a new mount namespace holding read-only binds
  of the system directories and the Python installation, an empty ``/tmp``,
  the workspace bound read-write last (it may live under ``/tmp``), and new
  network, pid, ipc and uts namespaces. When the command exits or is killed,
  its pid namespace goes with it, so no forked child outlives it.
- ``sandbox-exec`` (macOS, Seatbelt): a generated profile that denies by
  default, allows reads of the toolchain and the workspace, writes only under
  the workspace and a private temporary directory, and no network.
- ``none``: no confinement; only chosen explicitly (``--no-sandbox``).

A level is a wrapper in :data:`WRAPPERS`: ``(argv, workspace, private_tmp) -> argv``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

from punie.errors import ConfigError

LEVELS = ("bwrap", "sandbox-exec", "none")
CHOICES = ("auto", *LEVELS)
SANDBOX_EXEC = "/usr/bin/sandbox-exec"
INSTALL_HINT = ("install bubblewrap ('apt-get install bubblewrap', 'dnf install bubblewrap') so commands run "
                "confined, or opt out of confinement with --no-sandbox (Workspace(sandbox='none') from Python)")
UNAVAILABLE = f"no OS sandbox is available to confine run_command: {INSTALL_HINT}"

# Read-only system directories: the dynamic loader, libraries, coreutils, git and its helpers, /etc
# (ld.so.cache, passwd, certificates). Home directories, /tmp, /var, /srv, /mnt stay absent.
_LINUX_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_MACOS_SYSTEM = ("/usr", "/bin", "/sbin", "/System", "/Library", "/private/etc", "/private/var/db/timezone",
                 "/private/var/select", "/opt/homebrew", "/Applications/Xcode.app/Contents/Developer", "/dev")


@lru_cache(maxsize=1)
def _bwrap_problem() -> str | None:
    """Why bubblewrap cannot be used here (not installed, or no namespaces), or None when it works."""
    found = shutil.which("bwrap")
    if found is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        probe = subprocess.run([found, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                               capture_output=True, text=True, timeout=10, env=_without_preload(dict(os.environ)))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{found} does not run: {exc}"
    if probe.returncode != 0:
        return f"{found} cannot create namespaces here: {probe.stderr.strip() or probe.returncode}"
    return None


def _without_preload(env: dict[str, str]) -> dict[str, str]:
    # bwrap itself must not load the BLAS fix's LD_PRELOAD: OpenBLAS initialising in bwrap's cloned
    # child deadlocks it (seen: a futex wait forever). The command inside still gets it, via --setenv.
    env.pop("LD_PRELOAD", None)
    return env


def available_level() -> str:
    """The strongest sandbox this machine offers: ``bwrap``, ``sandbox-exec`` or ``none``."""
    if sys.platform == "darwin":
        return "sandbox-exec" if os.access(SANDBOX_EXEC, os.X_OK) else "none"
    if sys.platform.startswith("linux") and _bwrap_problem() is None:
        return "bwrap"
    return "none"


def describe() -> dict[str, str]:
    """What ``punie doctor`` shows: the active level and, without one, why and what to do."""
    level = available_level()
    if level != "none":
        return {"sandbox": level}
    why = _bwrap_problem() if sys.platform.startswith("linux") else f"{SANDBOX_EXEC} is missing"
    return {"sandbox": "none", "sandbox_hint": f"{why}; run_command refuses to run unconfined: {INSTALL_HINT}."}


def choose(requested: str) -> str | None:
    """The level to use for ``requested`` (one of :data:`CHOICES`); None for 'auto' when nothing is available."""
    if requested not in CHOICES:
        raise ConfigError(f"sandbox must be one of {', '.join(CHOICES)}; got {requested!r}")
    if requested == "auto":
        level = available_level()
        return None if level == "none" else level
    if requested != "none" and available_level() != requested:
        raise ConfigError(f"the {requested} sandbox is not available on this machine "
                          f"({describe().get('sandbox_hint', 'found ' + available_level())})")
    return requested


def toolchain_paths(programs: Iterable[str] = ()) -> list[Path]:
    """Directories a command may read besides the workspace: the Python installation and the programs' homes."""
    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    found += [p for p in sys.path if os.path.isabs(p)]
    found += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    for program in programs:
        for path in (program, os.path.realpath(program)):
            found.append(os.path.dirname(path))
    unique: list[Path] = []
    for path in found:
        if path and os.path.isabs(path) and os.path.isdir(path) and Path(path) not in unique:
            unique.append(Path(path))
    return unique


def bwrap_argv(argv: list[str], workspace: Path, *, bwrap: str | None = None,
               preload: str | None = None) -> list[str]:
    """``argv`` inside bubblewrap: system and toolchain read-only, the workspace read-write, nothing shared.

    ``preload`` is the command's LD_PRELOAD, set inside the sandbox rather than on bwrap itself.
    """
    wrapped = [bwrap or shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
               "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--setenv", "TMPDIR", "/tmp"]
    if preload:
        wrapped += ["--setenv", "LD_PRELOAD", preload]
    for top in _LINUX_SYSTEM:
        if os.path.islink(top):  # merged /usr: /bin -> usr/bin stays a symlink
            wrapped += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            wrapped += ["--ro-bind", top, top]
    for path in toolchain_paths(argv[:1]):
        if not any(path.is_relative_to(top) for top in _LINUX_SYSTEM if os.path.isdir(top)):
            wrapped += ["--ro-bind", str(path), str(path)]
    # Last, so it wins over the empty /tmp and over any read-only bind above it.
    wrapped += ["--bind", str(workspace), str(workspace), "--chdir", str(workspace), "--"]
    return wrapped + argv


def _sb_string(path: Path | str) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def seatbelt_profile(workspace: Path, private_tmp: Path, *, read_paths: Iterable[Path]) -> str:
    """A sandbox-exec (SBPL) profile: deny by default; read toolchain + workspace; write workspace + temp."""
    reads = " ".join(f"(subpath {_sb_string(p)})" for p in [*read_paths, workspace, private_tmp])
    writes = f"(subpath {_sb_string(workspace)}) (subpath {_sb_string(private_tmp)})"
    return "\n".join([
        "(version 1)",
        "(deny default)",
        # Children inherit the profile; they may run and signal each other, nothing else.
        "(allow process-exec)", "(allow process-fork)", "(allow signal (target same-sandbox))",
        "(allow process-info* (target same-sandbox))",
        "(allow sysctl-read)", "(allow mach-lookup)", "(allow ipc-posix-sem)", "(allow ipc-posix-shm)",
        "(allow pseudo-tty)", "(allow file-ioctl)",
        # Metadata (stat, realpath of parent directories) everywhere; contents only below.
        "(allow file-read-metadata)", '(allow file-read-data (literal "/"))',
        f"(allow file-read* {reads})",
        f"(allow file-map-executable {reads})",
        f'(allow file-write* {writes} (literal "/dev/null") (literal "/dev/tty") (regex #"^/dev/fd/"))',
        "(deny network*)",
    ]) + "\n"


def sandbox_exec_argv(argv: list[str], workspace: Path, *, private_tmp: Path) -> list[str]:
    reads = [Path(p) for p in _MACOS_SYSTEM if os.path.isdir(p)] + toolchain_paths(argv[:1])
    return [SANDBOX_EXEC, "-p", seatbelt_profile(workspace, private_tmp, read_paths=reads), "--", *argv]


# A wrapper takes the command's argv, the workspace, a private temporary directory and the command's
# environment, and returns the argv and environment to start instead.
Wrapper = Callable[[list[str], Path, Path, dict[str, str]], tuple[list[str], dict[str, str]]]


def _bwrap(argv: list[str], workspace: Path, private_tmp: Path,
           env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    preload = env.get("LD_PRELOAD")
    return bwrap_argv(argv, workspace, preload=preload), _without_preload(dict(env))


def _sandbox_exec(argv: list[str], workspace: Path, private_tmp: Path,
                  env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    return sandbox_exec_argv(argv, workspace, private_tmp=private_tmp), {**env, "TMPDIR": str(private_tmp)}


def _unconfined(argv: list[str], workspace: Path, private_tmp: Path,
                env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    return list(argv), dict(env)


WRAPPERS: dict[str, Wrapper] = {"bwrap": _bwrap, "sandbox-exec": _sandbox_exec, "none": _unconfined}
