"""Run the application with uvicorn on a socket bound before it starts (so the address, port 0 included,
is known and printed first); stopping (Ctrl-C) closes the layers, which keeps only the work folders."""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable

from geoseg.errors import ConfigurationError
from geoseg.serve.layers import Layers

SHUTDOWN_GRACE_S = 1  # tile requests still waiting for a region are answered 503 after this


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), or a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({error.strerror}); try another port=N"
        ) from error
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def make_server(layers: Layers):
    """A uvicorn server for ``layers`` (its ``should_exit`` stops it from another thread)."""
    import uvicorn

    from geoseg.serve.app import create_app

    config = uvicorn.Config(
        create_app(layers), log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S, lifespan="off"
    )
    return uvicorn.Server(config)


def serve(layers: Layers, sock: socket.socket, ready: Callable[[], None] | None = None) -> None:
    """Answer requests on ``sock`` until stopped (Ctrl-C, SIGTERM); then close ``layers``."""
    from rio_tiler.errors import NoOverviewWarning

    # open_layers says it once per scene; rio-tiler would say it at every image tile (a "once" filter did
    # not hold it back: it printed 15 lines for one page view)
    warnings.filterwarnings("ignore", category=NoOverviewWarning)
    server = make_server(layers)
    try:
        if ready is not None:
            ready()
        server.run(sockets=[sock])
    finally:
        layers.close()
        sock.close()


def require_serve_extra() -> None:
    """A one-line error when the optional web stack is not installed."""
    missing = []
    for module in ("starlette", "uvicorn", "rio_tiler"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module.replace("_", "-"))
    if missing:
        raise ConfigurationError(f"geoseg serve needs {', '.join(missing)}: pip install 'geoseg[serve]'")
