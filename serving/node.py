"""Run a regional node under uvicorn: one process, one worker, one event loop.

One worker on purpose: the node's state (loaded models, the reconcile loop, metrics) lives in
the process, and a second worker would load every model twice and split the metrics. Scale by
running more nodes. uvloop and httptools are the fastest loop and HTTP parser uvicorn offers;
the access log is off because a line per request costs more than scoring the request.
"""

from __future__ import annotations

import logging
import socket
import sys

from ebmops.core.errors import ConfigError
from ebmops.core.settings import Settings

log = logging.getLogger(__name__)


def check_region(settings: Settings, region: str) -> None:
    """Raise ConfigError (exit code 2) unless ``region`` is one of ``data.regions``."""
    if region not in settings.data.regions:
        raise ConfigError(f"--region {region!r} is not a configured region; data.regions is "
                          f"{', '.join(settings.data.regions)} (set EBMOPS_DATA__REGIONS or data.regions to add one)")


def configure_process(settings: Settings) -> None:
    """Process-wide knobs of a node: serving.torch_threads, and a 1 ms GIL switch interval.

    The scoring thread hands each finished batch back to the event loop; under load the loop
    holds the GIL and the default 5 ms switch interval made every hand-back wait up to 5 ms.
    """
    sys.setswitchinterval(0.001)
    if settings.serving.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.serving.torch_threads)


def uvicorn_config(app, *, host: str, port: int, log_level: str = "info"):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools", access_log=False, workers=1,
                          log_level=log_level, lifespan="on", timeout_graceful_shutdown=5)


def run_node(settings: Settings, region: str, port: int | None = None, host: str | None = None, *,
             sock: socket.socket | None = None) -> None:
    """Serve ``region`` until interrupted. ``sock`` (already bound) overrides host and port."""
    import uvicorn

    from serving.app import create_app

    check_region(settings, region)
    configure_process(settings)
    host = host or settings.serving.host
    port = settings.node_port(region) if port is None else port
    app = create_app(settings, region)
    server = uvicorn.Server(uvicorn_config(app, host=host, port=port))
    log.info("node %s on http://%s:%d", region, host, port)
    server.run(sockets=[sock] if sock is not None else None)
