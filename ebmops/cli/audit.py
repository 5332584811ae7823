"""``ebmops audit verify`` and ``ebmops audit log``: the tamper-evident audit log (ebmops/core/state/audit.py)."""

from __future__ import annotations

from typing import Optional

import typer

from ebmops.cli import context
from ebmops.core.console import console, print_json, print_table
from ebmops.core.errors import AuditChainBroken

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


@audit_app.command("verify")
def verify(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Recompute the audit log's hash chain; exits 8 when broken, naming the first bad record."""
    from ebmops.core.state.audit import verify as verify_chain

    store = context.store()
    try:
        out = verify_chain(store)
    finally:
        store.close()
    if json_out:
        print_json(out.to_dict())
    elif out.ok:
        console.print(f"audit log ok: {out.n_records} records, chain intact"
                      + (f"; last hash {out.last_hash}" if out.last_hash else ""))
    if not out.ok:
        raise AuditChainBroken(f"audit log broken at record {out.first_bad_seq}: {out.problem}",
                               first_bad_seq=out.first_bad_seq)


@audit_app.command("log")
def log(model: Optional[str] = typer.Option(None, "--model", "-m", help="Only records of this model."),
        kind: Optional[str] = typer.Option(None, "--kind", "-k", help="Only records of this kind."),
        limit: int = typer.Option(50, "--limit", "-n", min=1, help="Newest records to show."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The newest audit records, newest first."""
    from ebmops.core.state.audit import list_entries

    store = context.store()
    try:
        records = list_entries(store, model=model, kind=kind, limit=limit)
    finally:
        store.close()
    if json_out:
        print_json([r.to_dict() for r in records])
        return
    rows = [{"seq": r.seq, "when": r.created_at, "kind": r.kind, "model": r.model, "version": r.version,
             "region": r.region, "actor": r.actor, "hash": r.hash[:12],
             "payload": ", ".join(f"{k}={v}" for k, v in sorted(r.payload.items()))[:80]} for r in records]
    print_table(rows, ["seq", "when", "kind", "model", "version", "region", "actor", "hash", "payload"],
                title="audit log" + (f" of {model}" if model else ""))
