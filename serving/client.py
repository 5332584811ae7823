"""How the control plane reaches a region's nodes: the replicas' URLs, and one HTTP client that
carries the control plane's token (serving.client_token) and trusts serving.tls_ca_file.

A region's nodes are ``serving.node_urls[region]``: one URL, a list of URLs (one per replica),
or ``dns+http(s)://NAME:PORT``, which stands for every address NAME resolves to, each on PORT
(a Kubernetes headless Service resolves to the ready pods' addresses). Unlisted regions have one
local node at ``settings.node_url(region)``. A node serves several models: ``model_path`` is where one
model's routes are (``/v1/models/<model>/stats``, ``.../recent``, ``.../score``), by default the model
``settings.registry.model_name`` names. Importing this module imports neither httpx nor torch.
"""

from __future__ import annotations

import socket
from urllib.parse import quote, urlsplit

from ebmops.core.errors import ConfigError
from ebmops.core.settings import Settings

DNS_PREFIX = "dns+"


def model_path(settings: Settings, what: str = "", model: str | None = None) -> str:
    """The path of ``model``'s route ``what`` on a node (``what`` "": the model's description);
    ``model`` defaults to settings.registry.model_name."""
    name = quote(model or settings.registry.model_name, safe="")
    return f"/v1/models/{name}/{what}" if what else f"/v1/models/{name}"


def replica_urls(settings: Settings, region: str) -> list[str]:
    """The base URLs of ``region``'s node replicas, in configuration (or address) order."""
    configured = settings.serving.node_urls.get(region)
    if configured is None:
        return [settings.node_url(region)]
    urls: list[str] = []
    for url in [configured] if isinstance(configured, str) else configured:
        urls.extend(resolve(url) if url.startswith(DNS_PREFIX) else [url.rstrip("/")])
    return list(dict.fromkeys(urls))


def resolve(url: str) -> list[str]:
    """``dns+http://NAME:PORT`` as one ``http://ADDRESS:PORT`` per address of NAME (sorted); a name
    that does not resolve gives no replica, which callers report as a region without nodes."""
    parts = urlsplit(url[len(DNS_PREFIX):])
    if not parts.hostname or not parts.port:
        raise ConfigError(f"serving.node_urls: {url!r} needs a host name and a port (dns+http://NAME:PORT)")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    hosts = sorted({info[4][0] for info in infos})
    return [f"{parts.scheme}://{f'[{h}]' if ':' in h else h}:{parts.port}{parts.path.rstrip('/')}" for h in hosts]


def client_token(settings: Settings) -> str | None:
    s = settings.serving
    if s.client_token is not None:
        return s.client_token.get_secret_value()
    if s.client_token_file is not None:
        try:
            return s.client_token_file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"serving.client_token_file {s.client_token_file}: cannot be read ({e.strerror}); "
                              "mount the control plane's token there or unset it") from None
    return None


def client_options(settings: Settings) -> dict:
    """Keyword arguments of an ``httpx.Client`` (or ``httpx.get``) that talks to nodes."""
    token = client_token(settings)
    ca = settings.serving.tls_ca_file
    if ca is not None and not ca.is_file():
        raise ConfigError(f"serving.tls_ca_file {ca} does not exist; point it at the CA bundle of the nodes' "
                          "certificates or unset it")
    verify: object = True
    if ca is not None:
        import ssl

        verify = ssl.create_default_context(cafile=str(ca))
    return {"headers": {"Authorization": f"Bearer {token}"} if token else {}, "verify": verify}


def node_client(settings: Settings, timeout_s: float = 10.0):
    """An ``httpx.Client`` for the nodes (a context manager)."""
    import httpx

    return httpx.Client(timeout=timeout_s, **client_options(settings))
