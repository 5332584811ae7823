"""``ebmops audit verify | checkpoint | log``: the tamper-evident audit log (ebmops/core/state/audit.py)."""

from __future__ import annotations

from typing import Optional

import typer

from ebmops.cli import context
from ebmops.core.console import console, print_json, print_table
from ebmops.core.errors import AuditChainBroken, StoreError

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


@audit_app.command("verify")
def verify(region: Optional[list[str]] = typer.Option(None, "--region", "-r",
                                                      help="Read checkpoints of these regions only (default: all)."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Check every record's MAC, the hash chain and the newest checkpoint in the region stores; exits 8 when
    a record was changed, removed, reordered, rewritten or cut off the end, naming it."""
    from ebmops.services.audit import verify_all
    from ebmops.services.sync import check_regions

    settings = context.settings()
    regions = check_regions(settings, region)
    store = context.store()
    try:
        out, found = verify_all(settings, store, regions)
    finally:
        store.close()
    problem = out.problem if not out.ok else (found.problems[0] if found.problems else None)
    if json_out:
        print_json({**out.to_dict(), "ok": problem is None, "problem": problem,
                    "checkpoint_problems": found.problems, "notes": found.notes,
                    "regions_read": found.regions_read})
    else:
        cp = found.newest
        head = f", last seq {out.last_seq}, head {out.last_hash}" if out.last_seq else ""
        if cp:
            anchor = f"checkpoint: seq {cp.seq} of {cp.time} ({cp.where})"
        elif not found.regions_read:
            anchor = "checkpoint: no region store could be read (notes below): a cut-off end of the log cannot be seen"
        else:
            anchor = ("checkpoint: none in the region stores yet: a cut-off end of the log cannot be seen "
                      "(`ebmops audit checkpoint` writes one)")
        lines = [f"{out.n_records} records{head}",
                 f"MACs: checked with audit key {out.key_id}"
                 + (" (the PUBLIC development key: they prove nothing)" if out.dev_key else ""), anchor]
        if out.n_legacy:
            lines.append(f"{out.n_legacy} legacy records without a MAC (seq 1-{out.n_legacy}, written before MACs "
                         "or without a key): protected by the chain and the checkpoint only")
        lines += [f"note: {n}" for n in found.notes]
        for line in lines:
            console.print(line)
        if problem is None:
            console.print("audit log ok: records and chain verify" + (", and agree with the checkpoint" if cp else ""))
    if not out.ok:
        raise AuditChainBroken(f"audit log broken at record {out.first_bad_seq}: {out.problem}",
                               first_bad_seq=out.first_bad_seq)
    if found.problems:
        raise AuditChainBroken(f"audit checkpoint forged or altered: {found.problems[0]}")


@audit_app.command("checkpoint")
def checkpoint(region: Optional[list[str]] = typer.Option(None, "--region", "-r",
                                                          help="Write to these regions only (default: all)."),
               json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Verify the log, then write a MACed checkpoint of its head (seq, hash, time) to every region's store
    (the hourly `audit-checkpoint` deployment and every promotion do the same)."""
    from ebmops.services.audit import write_checkpoint
    from ebmops.services.sync import check_regions

    settings = context.settings()
    regions = check_regions(settings, region)
    store = context.store()
    try:
        out = write_checkpoint(settings, store, regions)
    finally:
        store.close()
    if json_out:
        print_json(out)
    elif out["skipped"]:
        console.print(f"no checkpoint written: {out['skipped']}")
    else:
        print_table([{"region": r, "result": m} for r, m in out["regions"].items()], ["region", "result"],
                    title=f"audit checkpoint: seq {out['seq']}, head {out['head_hash'][:16]}, {out['time']}")
    failed = {r: m for r, m in out["regions"].items() if m != "ok"}
    if failed:
        raise StoreError(f"the audit checkpoint was not written to {sorted(failed)}: "
                         + "; ".join(f"{r}: {m}" for r, m in failed.items()))


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
