"""``ebmops operator whoami|keygen|authorize``: the identity production changes are made as."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from ebmops.cli import context
from ebmops.core.console import console, print_json

operator_app = typer.Typer(no_args_is_help=True, help="Who you act as when you change production.")


def acting(as_: str | None, action: str, *, model: str | None = None, version: str | None = None,
           region: str | None = None):
    """Resolve this process's operator (``--as`` must match it) and refuse, audited, anyone off the roster;
    called before a command writes anything."""
    from ebmops.services.authority import require_roster, resolve_operator

    s = context.settings()
    operator = resolve_operator(s, as_)
    store = context.store()
    try:
        require_roster(s, store, operator, action, model=model or s.registry.model_name, version=version,
                       region=region)
    finally:
        store.close()
    return operator


@operator_app.command("whoami")
def whoami(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The operator this shell acts as, how that is proven, and whether it is on the roster."""
    from ebmops.services.authority import resolve_operator

    s = context.settings()
    op = resolve_operator(s)
    out = {"operator": op.name, "how": op.how, "on_roster": op.name in s.rollout.oncall_roster,
           "roster": list(s.rollout.oncall_roster)}
    if json_out:
        print_json(out)
    else:
        console.print(f"you act as [bold]{op.name}[/bold] ({op.how}); "
                      + ("on the on-call roster" if out["on_roster"] else "[red]not on the on-call roster[/red]"))


@operator_app.command("keygen")
def keygen(out: Path = typer.Option(..., "--out", help="Where to write the private key (mode 0600; must not exist)."),
           name: str = typer.Option(..., "--name", help="Your roster name, for the line to add to the settings."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Create an Ed25519 operator key pair: the private key goes to --out only, the public half is printed."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ebmops.core.errors import ConfigError

    out = out.expanduser()
    priv = Ed25519PrivateKey.generate()
    raw = priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption()).hex()
    public = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"--out: {out} exists; choose another path (a key is never overwritten)") from None
    with os.fdopen(fd, "w") as f:
        f.write(raw + "\n")
    line = f"rollout:\n  operator_keys:\n    {name}: {public}"
    if json_out:
        print_json({"name": name, "public_key": public, "key_file": str(out)})
        return
    console.print(f"private key written to {out} (0600); point operator.key_file (EBMOPS_OPERATOR__KEY_FILE) at it")
    console.print(f"add to the control plane's settings (and {name} to rollout.oncall_roster):\n{line}",
                  highlight=False)


@operator_app.command("authorize")
def authorize(action: str = typer.Argument(..., help="What to authorise: sync."),
              version: str = typer.Argument(..., help="The version."),
              region: Optional[List[str]] = typer.Option(None, "--region", "-r", help="Regions (default all)."),
              comment: str = typer.Option(..., "--comment", help="Why (kept in the audit log)."),
              ttl: float = typer.Option(3600.0, "--ttl", min=60, help="Seconds the token is valid."),
              as_: str = typer.Option(None, "--as", help="Must be you; only asserts who you are."),
              model: str = typer.Option(None, "--model", help=context.MODEL_HELP)) -> None:
    """Print a signed override token for a flow run by a worker (the `sync` deployment's `override`)."""
    from ebmops.core.errors import ConfigError
    from ebmops.services.authority import override_token
    from ebmops.services.sync import check_regions

    if action != "sync":
        raise ConfigError(f"ACTION: {action!r} cannot be authorised; the one action is 'sync'")
    s = context.scope(model=model, version=version)
    regions = check_regions(s, region)
    op = acting(as_, f"authorize a sync override of v{version}", version=version, model=s.registry.model_name)
    typer.echo(override_token(s, op, action="sync", model=s.registry.model_name, version=version, regions=regions,
                              comment=comment, ttl_s=ttl))
