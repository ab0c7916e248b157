"""Managed mlx_lm.server processes: ``punie serve`` and the ``ServerProcess`` context manager.

Modules: ``state`` (one JSON file per server, claimed exclusively), ``procinfo``
(pid + start time identity, signals), ``launch`` (spawn and readiness),
``manager`` (start/stop/status), ``process`` (the context manager), ``client``
(punie's one OpenAI-compatible HTTP client, also used by eval and the agent),
``child`` (the guard the server runs in).
"""

from punie.errors import ServeError
from punie.serve.client import (
    EndpointError,
    EndpointHTTPError,
    EndpointReplyError,
    EndpointTimeout,
    EndpointUnreachable,
    OpenAIClient,
    chat_completion,
    health,
)
from punie.serve.manager import (
    ServeOptions,
    ServerStatus,
    Started,
    Stopped,
    start_server,
    statuses,
    stop_all,
    stop_server,
)
from punie.serve.process import ServerProcess
from punie.serve.state import ServerRecord

__all__ = [
    "EndpointError",
    "EndpointHTTPError",
    "EndpointReplyError",
    "EndpointTimeout",
    "EndpointUnreachable",
    "OpenAIClient",
    "ServeError",
    "ServeOptions",
    "ServerProcess",
    "ServerRecord",
    "ServerStatus",
    "Started",
    "Stopped",
    "chat_completion",
    "health",
    "start_server",
    "statuses",
    "stop_all",
    "stop_server",
]
