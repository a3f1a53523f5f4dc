"""Start the dashboard's Solara server (``gelav dashboard``): check the port, then run ``solara run`` in this process.

Solara is imported inside :func:`serve` only.  The server runs in production mode (no
auto-restart, no developer tracebacks), without Solara's telemetry and version check (nothing
leaves the machine), and answers one page, :mod:`experiments.dashboard.app`.
"""

from __future__ import annotations

import errno
import os
import socket
import warnings

__all__ = ["APP", "PortInUse", "check_port", "serve", "url"]

#: The module Solara serves.
APP = "experiments.dashboard.app"


class PortInUse(OSError):
    """The port cannot be bound; ``str(exc)`` is one line naming it."""


def check_port(host: str, port: int) -> int:
    """The port to serve on: ``port`` if it can be bound on ``host`` (0: a free one); else :class:`PortInUse`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PortInUse(f"cannot serve on host {host!r}: {exc.strerror or exc}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # uvicorn binds with SO_REUSEADDR: a port in TIME_WAIT is free for it too
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} on {host} is in use (another dashboard?): pick another with --port, "
                                "or --port 0 for a free one") from None
            raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return int(s.getsockname()[1])


def url(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def serve(host: str, port: int, open_browser: bool = True) -> None:
    """Run the Solara server on ``host:port`` until interrupted (Ctrl-C); opens a browser tab unless told not to."""
    os.environ.setdefault("SOLARA_TELEMETRY_MIXPANEL_ENABLE", "False")
    # plain http on a loopback address: solara's advice about samesite cookies behind https does not apply
    warnings.filterwarnings("ignore", message="Cookies with samesite=none require https")
    from solara.__main__ import run
    from solara.server import settings

    settings.telemetry.mixpanel_enable = False
    args = [APP, "--host", host, "--port", str(port), "--production", "--no-check-version",
            "--open" if open_browser else "--no-open"]
    run.main(args=args, prog_name="gelav dashboard", standalone_mode=False)
