"""``ebmops gate``: run the promotion gate on a registered version."""

from __future__ import annotations

import typer

from ebmops.cli import context
from ebmops.core.console import print_json
from ebmops.core.errors import GateHeld, GateRejected
from ebmops.tools.views import print_gate


def raise_for_verdict(out: dict) -> None:
    if out["verdict"] == "fail":
        failed = [c["name"] for c in out["report"]["checks"] if c["verdict"] == "fail"]
        raise GateRejected(f"v{out['version']} failed the gate ({', '.join(failed)}); it does not get the "
                           f"'candidate' alias. Report: {out['markdown']}")
    if out["verdict"] == "inconclusive":
        held = [c["name"] for c in out["report"]["checks"] if c["verdict"] == "inconclusive"]
        raise GateHeld(f"v{out['version']} is held for review: {', '.join(held)} inconclusive. "
                       f"Report: {out['markdown']}")


def gate(version: str = typer.Argument(None, help="Version number or @alias (default: @challenger)."),
         model: str = typer.Option(None, "--model", help=context.MODEL_HELP),
         json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Gate a version against its model's champion, on the version's own dataset; exits 4 on fail, 5 when
    held for review."""
    s = context.scope(model=model, version=version or "@challenger")  # fails here when the model is ambiguous
    from flows.gate import gate as gate_flow

    with context.flow_server():
        out = gate_flow(version=version, model=s.registry.model_name)
    if json_out:
        print_json(out)
    else:
        print_gate(out["report"])
    raise_for_verdict(out)
