"""The process punie starts: ``mlx_lm.server`` run inside a small guard.

``python -m punie.serve.child [--owner-pid PID] MLX_LM_SERVER_ARGS...``

The guard adds three things mlx_lm.server does not do itself:

1. When the HTTP server cannot bind its port, mlx_lm.server raises in the main
   thread, but its (non-daemon) generation thread keeps the process alive forever,
   serving nothing. The guard exits with status 1 instead.
2. It prints ``LISTENING_MARK`` once the listening socket is bound, so the parent
   knows the server answering on the port is this process and not another program
   that already held the port.
3. With ``--owner-pid``, it exits as soon as that process (its parent) is gone, so
   a script that crashed, or was killed, inside ``ServerProcess`` leaves no server.

Nothing imports this module: ``python -m`` runs it (importing it first would make runpy warn).
"""

from __future__ import annotations

import os
import socketserver
import sys
import threading
import time
import traceback

from punie.serve.launch import LISTENING_MARK

OWNER_POLL_SECONDS = 0.5


def _announce_listening() -> None:
    original = socketserver.TCPServer.server_activate

    def server_activate(self):  # type: ignore[no-untyped-def]
        original(self)
        host, port = self.server_address[:2]
        print(f"{LISTENING_MARK} on {host}:{port} (pid {os.getpid()})", file=sys.stderr, flush=True)

    socketserver.TCPServer.server_activate = server_activate  # type: ignore[method-assign]


def _watch_owner(owner_pid: int) -> None:
    # The owner is our parent; when it dies we are re-parented, and getppid() changes.
    def watch() -> None:
        while os.getppid() == owner_pid:
            time.sleep(OWNER_POLL_SECONDS)
        print(f"punie-serve: owner process {owner_pid} is gone; stopping.", file=sys.stderr, flush=True)
        os._exit(0)

    threading.Thread(target=watch, name="punie-owner-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--owner-pid"]:
        owner_pid, argv = int(argv[1]), argv[2:]
        if os.getppid() != owner_pid:
            print(f"punie-serve: owner process {owner_pid} is already gone.", file=sys.stderr, flush=True)
            return 0
        _watch_owner(owner_pid)
    _announce_listening()
    sys.argv = ["mlx_lm.server", *argv]
    try:
        from mlx_lm.server import main as server_main

        server_main()
    except KeyboardInterrupt:
        return 0
    except SystemExit as exc:  # argparse errors
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: mlx_lm's non-daemon generation thread would keep the process alive
