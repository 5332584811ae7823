"""``ebmops sync`` and ``ebmops regions status``."""

from __future__ import annotations

from typing import List, Optional

import typer

from ebmops.cli import context
from ebmops.core.console import console, print_json, print_table
from ebmops.core.errors import RegionsInconsistent

regions_app = typer.Typer(no_args_is_help=True, help="Regional stores and nodes.")


def sync(version: str = typer.Argument(None, help="Version number or @alias (default: @candidate, else @champion)."),
         region: Optional[List[str]] = typer.Option(None, "--region", "-r", help="Region to sync (repeat); default all."),
         wait: float = typer.Option(10.0, "--wait", help="Seconds to wait until every reachable node serves the "
                                                          "version (0: do not wait)."),
         reason: str = typer.Option("manual", "--reason", help="Why: manual, scheduled or hotfix (kept with the run)."),
         reconcile: bool = typer.Option(False, "--reconcile",
                                        help="Repair every region whose desired state differs from the registry's "
                                             "aliases (prod-<region>, else champion); VERSION is not used."),
         override: bool = typer.Option(False, "--override",
                                       help="Publish a version that is not each region's approved one (or did not "
                                            "pass the gate); needs --comment, audited under your name."),
         comment: str = typer.Option(None, "--comment", help="Why (with --override)."),
         as_: str = typer.Option(None, "--as", help="Asserts who you are; refused when it names someone else."),
         model: str = typer.Option(None, "--model", help=context.MODEL_HELP + " A --reconcile without it repairs "
                                                                               "every registered model."),
         json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Publish a version of a model to the regional stores as stable and have the nodes load it. Only a region's
    approved version (prod-<region>, else champion) that passed the gate, unless a roster member overrides."""
    from ebmops.cli.operator import acting
    from ebmops.core.errors import ConfigError
    from ebmops.services.sync import check_regions
    from flows.sync import sync as sync_flow

    regions = check_regions(context.settings(), region)  # a bad --region fails before a flow run starts
    if override and reconcile:
        raise ConfigError("--override: a reconcile publishes the registry's approved versions; it needs none")
    if override and not comment:
        raise ConfigError("--override needs --comment WHY (kept in the audit log)")
    s = context.settings() if reconcile and model is None else context.scope(model=model, version=version)
    what = "reconcile regions" if reconcile else f"sync {version or '@candidate'}"
    op = acting(as_, what, version=None if reconcile else version,
                model=None if reconcile and model is None else s.registry.model_name)
    token = None
    if override:
        from ebmops.services.authority import override_token
        from registry import ModelRegistry

        number = str(ModelRegistry.from_settings(s).resolve(version or "@candidate").version)
        token = override_token(s, op, action="sync", model=s.registry.model_name, version=number, regions=regions,
                               comment=comment, ttl_s=600)
    with context.flow_server():
        out = sync_flow(version=version, regions=region or None, wait_s=wait, reason=reason, reconcile=reconcile,
                        override=token, model=model if reconcile else s.registry.model_name)
    if json_out:
        print_json(out)
        return
    if reconcile:
        for one in (out["models"].values() if "models" in out else [out]):
            rows = [{"region": r, "action": f"repaired -> v{v}", "was": one["problems"].get(r)}
                    for r, v in one["repaired"].items()]
            rows += [{"region": r, "action": f"ok (v{v})", "was": None} for r, v in one["ok"].items()]
            rows += [{"region": r, "action": "skipped", "was": why} for r, why in one["skipped"].items()]
            print_table(rows, ["region", "action", "was"], title=f"reconcile of {one['model']} with the registry")
        return
    rows = [{"region": r, "seconds": p["seconds"], "bytes uploaded": p["bytes_uploaded"],
             "blobs skipped": p["blobs_skipped"], "generation": p["generation"],
             "node": ("serves" if out["nodes"][r]["serves_version"] else
                      "unreachable" if not out["nodes"][r]["reachable"] else "not yet"),
             "served after s": out["nodes"][r]["served_after_s"]} for r, p in out["regions"].items()]
    print_table(rows, list(rows[0]) if rows else ["region"],
                title=f"sync of {out['model_name']} v{out['version']} ({out['reason']}) in {out['seconds']:.3f} s")


def status(region: Optional[List[str]] = typer.Option(None, "--region", "-r", help="Region (repeat); default all."),
           model: str = typer.Option(None, "--model", help="Only this model (default: every registered one)."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Desired versions of each model per region and what each node serves; exits 7 on any inconsistency.

    Without --model and with several models registered, a model synced to none of the regions is listed as
    not synced, not as an inconsistency. --json: one model's report as before; with several models,
    {"consistent", "models": {name: report}, "not_synced": [names]}."""
    s = context.settings()
    from ebmops.services.models import scopes
    from ebmops.services.sync import check_regions, regions_status, synced_regions

    regions = check_regions(s, region)
    watched = scopes(s, model)
    several = len(watched) > 1
    not_synced = [x.registry.model_name for x in watched if several and not synced_regions(x, regions)]
    outs = [regions_status(x, region) for x in watched if x.registry.model_name not in not_synced]
    consistent = all(o["consistent"] for o in outs)
    if json_out:
        print_json({"consistent": consistent, "models": {o["model"]: o for o in outs}, "not_synced": not_synced}
                   if several else outs[0])
    else:
        for out in outs:
            _print_status(out)
        if not_synced:
            console.print(f"not synced to any region: {', '.join(not_synced)}")
    if not consistent:
        n = sum(sum(1 for row in o["regions"].values() if row["issues"]) + len(o["issues"]) for o in outs)
        raise RegionsInconsistent(f"{n} inconsistencies across regions (see above)")


def _print_status(out: dict) -> None:
    rows = [{"region": r, "desired": _pair(row["desired_stable"], row["desired_canary"], row["desired_weight"]),
             "gen": row["desired_generation"],
             "node serves": (_pair(row["served_stable"], row["served_canary"], row["served_weight"])
                             if row["node_reachable"] else "unreachable"),
             "node gen": row["served_generation"],
             "issues": "; ".join(row["issues"]) or "ok"} for r, row in out["regions"].items()]
    replicas = [{"region": f"  {r} replica", "desired": rep["url"], "gen": "",
                 "node serves": (_pair(rep["served_stable"], rep["served_canary"], rep["served_weight"])
                                 if rep["reachable"] else "unreachable"),
                 "node gen": rep["served_generation"], "issues": rep["error"] or ""}
                for r, row in out["regions"].items() if len(row["replicas"]) > 1 for rep in row["replicas"]]
    rows = [x for row in rows for x in [row, *(rep for rep in replicas if rep["region"] == f"  {row['region']} replica")]]
    print_table(rows, ["region", "desired", "gen", "node serves", "node gen", "issues"],
                title=f"regions of {out['model']}")
    for issue in out["issues"]:
        console.print(f"[red]inconsistent:[/red] {issue}")
    for note in out.get("notes", []):
        console.print(f"note: {note}")


def _pair(stable, canary, weight) -> str:
    if stable is None:
        return "-"
    return f"v{stable}" + (f" + canary v{canary} @ {weight:.0%}" if canary else "")


regions_app.command("status")(status)
