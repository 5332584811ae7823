"""Run a regional node under uvicorn: one process, one worker, one event loop.

One worker on purpose: the node's state (loaded models, the reconcile loop, metrics) lives in
the process, and a second worker would load every model twice and split the metrics. Scale by
running more nodes. uvloop and httptools are the fastest loop and HTTP parser uvicorn offers;
the access log is off because a line per request costs more than scoring the request.
"""

from __future__ import annotations

import ipaddress
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def check_bind(settings: Settings, host: str) -> None:
    """Refuse a non-loopback address without tokens (anyone reaching it could reload the node and read
    its recent events) unless serving.auth.insecure_bind says so."""
    auth = settings.serving.auth
    if is_loopback(host) or auth.enabled:
        return
    if auth.insecure_bind:
        log.warning("node binds %s with no tokens (serving.auth.insecure_bind): anyone who reaches it may score, "
                    "read recent events and reload it", host)
        return
    raise ConfigError(f"serving.host / --host {host!r} is not a loopback address and no tokens are configured: "
                      "anyone who reaches it could reload the node and read its recent events. Create tokens "
                      "(`ebmops node token create --scope score`) and set serving.auth.tokens_file or "
                      "serving.auth.tokens, or bind 127.0.0.1, or (never in production) set "
                      "serving.auth.insecure_bind: true")


def uvicorn_config(app, *, host: str, port: int, log_level: str = "info", settings: Settings | None = None):
    import uvicorn

    tls = {}
    if settings is not None and settings.serving.tls_cert_file is not None:
        for name in ("tls_cert_file", "tls_key_file"):
            path = getattr(settings.serving, name)
            if not path.is_file():
                raise ConfigError(f"serving.{name} {path} does not exist; mount the TLS Secret there or unset it")
        tls = {"ssl_certfile": str(settings.serving.tls_cert_file), "ssl_keyfile": str(settings.serving.tls_key_file)}
    return uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools", access_log=False, workers=1,
                          log_level=log_level, lifespan="on", timeout_graceful_shutdown=5,
                          log_config=None if settings is not None and settings.serving.log_format == "json" else
                          uvicorn.config.LOGGING_CONFIG, **tls)


def run_node(settings: Settings, region: str, port: int | None = None, host: str | None = None, *,
             sock: socket.socket | None = None) -> None:
    """Serve ``region`` until interrupted. ``sock`` (already bound) overrides host and port."""
    import uvicorn

    from serving.app import create_app

    check_region(settings, region)
    host = host or settings.serving.host
    check_bind(settings, host)
    if settings.serving.log_format == "json":
        from serving.logs import configure

        configure("json")
    configure_process(settings)
    port = settings.node_port(region) if port is None else port
    app = create_app(settings, region)
    server = uvicorn.Server(uvicorn_config(app, host=host, port=port, settings=settings))
    scheme = "https" if settings.serving.tls_cert_file else "http"
    log.info("node %s on %s://%s:%d (%s)", region, scheme, host, port,
             f"{len(app.node.guard.clients)} token clients" if app.node.guard.enabled else "no tokens: open to all")
    server.run(sockets=[sock] if sock is not None else None)
