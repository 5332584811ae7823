"""``ebmops rollout start|status|resume``, ``ebmops approve``, ``ebmops reject``, ``ebmops rollback``."""

from __future__ import annotations

from typing import List, Optional

import typer

from ebmops.cli import context
from ebmops.core.console import console, print_json, print_table
from ebmops.core.errors import RolloutNotPromoted

rollout_app = typer.Typer(no_args_is_help=True, help="Canary rollouts region by region.")


def _print_status(out: dict) -> None:
    rows = [{**r, "failed": ", ".join(r["failed"]) or None} for r in out["regions"]]
    d = out.get("driver")
    driven = f", driven by {d['host']} pid {d['pid']} (lease until {d['lease_expires_at'][11:19]} UTC)" if d else ""
    print_table(rows, ["region", "wave", "phase", "step", "weight", "verdict", "power", "failed", "waits_for",
                       "message"],
                title=f"rollout {out['id']}: {out['model']} v{out['version']} ({out['kind']}) - {out['phase']}{driven}")
    if out["decisions"]:
        print_table(out["decisions"], ["when", "region", "kind", "actor", "accepted", "comment", "refusal"],
                    title="decisions")


def _finish(out: dict, json_out: bool) -> None:
    if json_out:
        print_json(out)
    else:
        _print_status(out)
    if out["phase"] != "promoted":
        raise RolloutNotPromoted(f"rollout {out['id']} ended {out['phase']}: {out.get('message')}")


@rollout_app.command("start")
def start(version: str = typer.Argument("@candidate", help="Version number or @alias to roll out."),
          region: Optional[List[str]] = typer.Option(None, "--region", "-r",
                                                     help="Regions, one wave each, in order (default: rollout.waves)."),
          bake: float = typer.Option(None, "--bake", help="Bake seconds per step (default: rollout.bake_s)."),
          hotfix: bool = typer.Option(False, "--hotfix", help="Use the expedited hotfix plan (rollout.hotfix)."),
          auto_approve: bool = typer.Option(False, "--auto-approve", help="Approve every wave as yourself."),
          as_: str = typer.Option(None, "--as", help="Asserts who you are (your OS login, or your operator key's "
                                                     "roster name); refused when it names someone else."),
          model: str = typer.Option(None, "--model", help=context.MODEL_HELP),
          json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Start a canary rollout of a model and drive it to the end (exit 12 when it does not promote). One active
    rollout per model; two models may roll out at once."""
    s = context.scope(model=model, version=version)
    from ebmops.cli.operator import acting
    from ebmops.services.rollout import plan_for
    from flows.rollout import rollout as rollout_flow

    plan_for(s, hotfix=hotfix, regions=region, bake_s=bake)  # a bad plan fails before a flow run starts
    op = acting(as_, f"start a rollout of {version}", model=s.registry.model_name)  # refused (audited) first
    with context.flow_server():
        out = rollout_flow(version=version, regions=region or None, bake_s=bake, hotfix=hotfix,
                           auto_approve_as=op.name if auto_approve else None, created_by=op.name,
                           model=s.registry.model_name)
    _finish(out, json_out)


@rollout_app.command("resume")
def resume(rollout_id: str = typer.Argument(..., help="Rollout id (see `ebmops rollout status`)."),
           auto_approve: bool = typer.Option(False, "--auto-approve", help="Approve every remaining wave as yourself."),
           as_: str = typer.Option(None, "--as", help="Asserts who you are; refused when it names someone else."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Continue a rollout from its saved state (after a crash, a kill or a restart)."""
    context.settings()
    from ebmops.cli.operator import acting
    from flows.rollout import rollout as rollout_flow

    ro = context.store().get_rollout(rollout_id)
    op = acting(as_, f"resume rollout {rollout_id}", model=ro.model_name if ro else None)
    with context.flow_server():
        out = rollout_flow(rollout_id=rollout_id, auto_approve_as=op.name if auto_approve else None)
    _finish(out, json_out)


@rollout_app.command("status")
def status(rollout_id: str = typer.Argument(None, help="Rollout id (default: the model's active or latest one)."),
           model: str = typer.Option(None, "--model", help=context.MODEL_HELP),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Region, phase, step, weight, verdict and who it waits for."""
    from ebmops.services.rollout import status as rollout_status

    name = None if rollout_id else context.scope(model=model).registry.model_name
    out = rollout_status(context.store(), rollout_id, model=name)
    if json_out:
        print_json(out)
    else:
        _print_status(out)


def _decide(rollout_id: str, approve: bool, as_: str, comment: str | None, region: str | None,
            json_out: bool) -> None:
    s = context.settings()
    from ebmops.services.authority import resolve_operator
    from ebmops.services.rollout import decide

    op = resolve_operator(s, as_)  # the roster check (refusal recorded) is decide's
    out = decide(s, context.store(), rollout_id, approve=approve, actor=op.name, comment=comment, region=region)
    if json_out:
        print_json(out)
    else:
        console.print(f"{out['decision']} of rollout {rollout_id} in {out['region']} by {op.name} recorded "
                      f"(via {out['via']})")


def approve(rollout_id: str = typer.Argument(..., help="Rollout id."),
            as_: str = typer.Option(None, "--as", help="Asserts who you are; refused when it names someone else."),
            comment: str = typer.Option(None, "--comment", help="Why."),
            region: str = typer.Option(None, "--region", help="The region awaiting approval (default: the first)."),
            json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Approve the region of a rollout that awaits approval, as yourself (exit 11 off the roster)."""
    _decide(rollout_id, True, as_, comment, region, json_out)


def reject(rollout_id: str = typer.Argument(..., help="Rollout id."),
           as_: str = typer.Option(None, "--as", help="Asserts who you are; refused when it names someone else."),
           comment: str = typer.Option(None, "--comment", help="Why."),
           region: str = typer.Option(None, "--region", help="The region awaiting approval (default: the first)."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Reject: the region awaiting approval rolls back (exit 11 off the roster)."""
    _decide(rollout_id, False, as_, comment, region, json_out)


def rollback(model: str = typer.Argument(..., help="Model name (`ebmops models list`)."),
             region: Optional[List[str]] = typer.Option(None, "--region", "-r", help="Region to roll back (repeat)."),
             all_: bool = typer.Option(False, "--all", help="Every region."),
             as_: str = typer.Option(None, "--as", help="Asserts who you are; refused when it names someone else."),
             comment: str = typer.Option(None, "--comment", help="Why."),
             json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Return regions to their previous stable version in one command."""
    from ebmops.core.errors import ConfigError
    from ebmops.services.rollout import rollback as do_rollback
    from ebmops.services.sync import check_regions

    s = context.scope(model=model)  # an unknown model is refused, naming the known ones
    if bool(region) == all_:
        raise ConfigError("give --region R (repeatable) or --all")
    regions = check_regions(s, region) if region else list(s.data.regions)
    from ebmops.cli.operator import acting

    op = acting(as_, f"roll back {', '.join(regions)}", model=model)
    out = do_rollback(s, context.store(), regions=regions, actor=op.name, comment=comment)
    if json_out:
        print_json(out)
    else:
        print_table([{"region": r, "stable now": f"v{v}"} for r, v in out["regions"].items()], ["region", "stable now"],
                    title=f"rolled back {model}")
