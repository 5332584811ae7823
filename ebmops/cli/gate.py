"""``ebmops gate``: run the promotion gate on a registered version."""

from __future__ import annotations

import typer

from ebmops.cli import context
from ebmops.cli.output import console, print_json, print_table
from ebmops.errors import EbmopsError


class GateRejected(EbmopsError):
    """The gate failed: the version does not get the ``candidate`` alias."""

    exit_code = 4


class GateHeld(EbmopsError):
    """The gate was inconclusive: the version waits for a human review."""

    exit_code = 5


def print_gate(report: dict) -> None:
    rows = [{"check": c["name"], "verdict": c["verdict"], "value": c.get("value"), "threshold": c.get("threshold"),
             "reason": c.get("reason")} for c in report["checks"]]
    champ = report.get("champion_version")
    title = (f"gate of {report['model_name']} v{report['model_version']} against "
             f"{'champion v' + champ if champ else 'no champion (comparisons skipped)'}")
    print_table(rows, ["check", "verdict", "value", "threshold", "reason"], title=title)
    colour = {"pass": "green", "skipped": "green", "inconclusive": "yellow", "fail": "red"}[report["verdict"]]
    note = " (every measured check passed; comparisons with a champion were skipped)" \
        if report["verdict"] == "skipped" else ""
    console.print(f"verdict: [{colour}]{report['verdict']}[/{colour}]{note} -> {report['action']}")


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
         json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Gate a version against the champion; exits 4 on fail, 5 when held for review."""
    context.settings()
    from flows.gate import gate as gate_flow

    out = gate_flow(version=version)
    if json_out:
        print_json(out)
    else:
        print_gate(out["report"])
    raise_for_verdict(out)
