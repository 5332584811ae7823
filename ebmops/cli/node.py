"""``ebmops node``: run a region's inference node; ``ebmops node token create``: a new bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from ebmops.cli import context
from ebmops.core.console import console
from ebmops.core.errors import ConfigError

node_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                       help="Run a region's inference node (--region), or manage its tokens (token create).")
token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens of the nodes (serving.auth).")
node_app.add_typer(token_app, name="token")


@node_app.callback()
def node(ctx: typer.Context,
         region: str = typer.Option(None, "--region", help="Region to serve; one of data.regions."),
         port: int = typer.Option(None, "--port", min=1, max=65535,
                                  help="Port (default serving.base_port + the region's index in data.regions)."),
         host: str = typer.Option(None, "--host", help="Bind address (default serving.host).")) -> None:
    """Serve the desired versions of every model of the region over HTTP until interrupted (exits 2 on an
    unknown region)."""
    if ctx.invoked_subcommand is not None:
        return
    if region is None:
        raise ConfigError("--region is required to run a node (e.g. `ebmops node --region eu-west`)")
    s = context.settings()
    from serving.node import check_bind, check_region, run_node

    check_region(s, region)
    check_bind(s, host or s.serving.host)
    scheme = "https" if s.serving.tls_cert_file else "http"
    served = (f"models {', '.join(dict.fromkeys([s.registry.model_name, *s.serving.models]))}"
              if s.serving.models is not None else f"every model synced to the region, default {s.registry.model_name}")
    console.print(f"node {region}: {scheme}://{host or s.serving.host}:{port or s.node_port(region)} "
                  f"({served}, polling every {s.serving.poll_interval_s:g} s, "
                  f"{'tokens required' if s.serving.auth.enabled else 'no tokens'})")
    run_node(s, region, port=port, host=host)


@token_app.command("create")
def token_create(scope: List[str] = typer.Option(..., "--scope", help="score, read or admin; repeat for several."),
                 name: str = typer.Option(..., "--name", help="Who holds it (labels its metrics and rate limits); "
                                                              "reuse a name to rotate that client's token."),
                 append: Path = typer.Option(None, "--append",
                                             help="Also add the entry to this tokens file (serving.auth.tokens_file).")
                 ) -> None:
    """Print a new token once, and the hashed entry to configure on the nodes (the token is never stored)."""
    import re

    from ebmops.core.settings import TOKEN_NAME_PATTERN, TOKEN_SCOPES
    from serving.auth import config_line, new_token

    bad = [s for s in scope if s not in TOKEN_SCOPES]
    if bad:
        raise ConfigError(f"--scope {bad[0]!r} is not a scope; use {', '.join(TOKEN_SCOPES)}")
    if not re.match(TOKEN_NAME_PATTERN, name):
        raise ConfigError(f"--name {name!r}: letters, digits, '_', '.', '-' (at most 64), starting with a letter "
                          "or digit")
    token = new_token()
    line = config_line(name, token, list(dict.fromkeys(scope)))
    if append is not None:
        import yaml

        doc = yaml.safe_load(append.read_text()) if append.is_file() else None
        doc = doc or {"tokens": []}
        doc.setdefault("tokens", []).append(yaml.safe_load(line)[0])
        append.write_text(yaml.safe_dump(doc, sort_keys=False))
    # plain print, not rich: the token must come out exactly, on a line of its own
    print(f"token (shown once, give it to {name}; the node stores only its sha256):")
    print(token)
    print("tokens file entry (serving.auth.tokens_file, under 'tokens:')" + (f", added to {append}" if append else "")
          + ":")
    print(line)
