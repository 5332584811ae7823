"""Tables people read: a training result, a gate report, where the MLflow UI is. Shared by the CLI and
the demo (which sits below the CLI and must not import it)."""

from __future__ import annotations

from ebmops.core.console import console, print_kv, print_table


def train_result_tables(res: dict, settings) -> None:
    m = res["metrics"]
    print_table([{"region": r["region"], "events": r["rows"], "suite sample": r.get("sample_rows"),
                  "validation": "passed" if r.get("success", True) else "failed"} for r in res.get("regions", [])],
                ["region", "events", "suite sample", "validation"],
                title="validation (exact checks over every event, the suite on a seeded sample)")
    print_table([{"model": "EBM", "AUROC": m.get("ebm_auroc"), "average precision": m.get("ebm_ap"),
                  "seconds": m.get("train_seconds")},
                 {"model": "IsolationForest (same split)", "AUROC": m.get("iforest_auroc"),
                  "average precision": m.get("iforest_ap"), "seconds": m.get("iforest_seconds")}],
                ["model", "AUROC", "average precision", "seconds"], title=f"detection on the {res['dataset']} holdout")
    print_kv({"model": f"{res['model_name']} v{res['version']} (alias challenger)", "device": res["device"],
              "mixed precision": res["amp"], "epochs": res["epochs"], "training time (s)": m.get("train_seconds"),
              "training events/s": m.get("events_per_s"), "alert threshold": res["threshold"],
              "stopped early": res.get("message") if res.get("stopped_reason") else "no"}, title="training")


def mlflow_ui_hint(settings) -> str:
    return (f"mlflow ui --backend-store-uri {settings.resolved_tracking_uri} "
            f"--default-artifact-root {settings.resolved_artifact_root} --port 5000")


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
