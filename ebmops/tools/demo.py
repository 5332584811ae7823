"""``make demo``: the whole life of two models on embedded defaults, in one process.

SQLite state, a local MLflow, a temporary Prefect server, local region stores and three regional
nodes on loopback. The acts:

1. validate, train, evaluate, register and gate kdd99's v1; publish it as stable to every region;
2. start the three nodes and replay kdd99's normal connections to each: version served, events/s, p99;
3. a second model on another built-in dataset (covertype: 10 features, none categorical) validated,
   trained, gated against its own champion (none yet: its v1 becomes its baseline), synced to the
   same running nodes and replayed to ``/v1/models/ebm-covertype/score``; both models in one table;
4. train an ordinary retrain of kdd99 (v2), gate it, roll it out region by region with short bakes
   while both replays go on, approved as an on-call roster member; final status and the audit log;
5. a deliberately bad candidate (its threshold flags most events) is rolled back automatically
   in the first region;
6. one region's kdd99 traffic drifts: the monitor detects the breach, the hotfix recalibrates on the
   region's recent events, gates and rolls out there; the timeline of each step. The audit log, then
   what every region serves at the end: both models, each on its own version.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

from ebmops.core.aliases import CHAMPION
from ebmops.core.console import console, print_kv, print_table
from ebmops.services.authority import os_login

# The second model's dataset. Not shuttle (9 features, 1,013 events): its gate window holds 427 events
# and 107 calibration energies, below the gate's 2,000-event minimums for the alert rate and the
# energy shift, so the gate rightly holds it as inconclusive. covertype's 116k-event holdout lets every
# check decide, and its 10 features differ from kdd99's 40.
SECOND_DATASET = "covertype"

DEMO_ENV = {
    # short bakes so the demo finishes in minutes (the default is 180 s per step): too short for the judge's
    # power rule on errors, so each step's analysis reads inconclusive and the roster member approves it
    "EBMOPS_ROLLOUT__STEPS": "[0.25, 0.5, 1.0]",
    "EBMOPS_ROLLOUT__BAKE_S": "3",
    "EBMOPS_ROLLOUT__HOTFIX__BAKE_S": "3",
    "EBMOPS_SERVING__POLL_INTERVAL_S": "5",
    # a demo run again over the same home within the hour hotfixes again (the default cooldown is 3600 s)
    "EBMOPS_DRIFT__COOLDOWN_S": "60",
    # the demo's operator: the on-call handle that approves the waves, and whoever runs `make demo`
    "EBMOPS_ROLLOUT__ONCALL_ROSTER": json.dumps(["oncall", os_login()]),
}


def _settings():
    from ebmops.core.settings import get_settings, load_settings

    get_settings.cache_clear()
    return load_settings()


def _traffic_table(replay, title: str) -> None:
    rows = []
    for r, t in replay.traffic.items():
        s = t.summary()
        served = ", ".join(f"v{v}: {n}" for v, n in sorted(s["versions"].items())) or "-"
        rows.append({"region": r, "served (events)": served, "events/s": s["events_per_s"], "p50 ms": s["p50_ms"],
                     "p99 ms": s["p99_ms"], "errors": s["errors"]})
    print_table(rows, ["region", "served (events)", "events/s", "p50 ms", "p99 ms", "errors"], title=title)


def _rollout_table(out: dict) -> None:
    rows = [{**r, "failed": ", ".join(r["failed"]) or None} for r in out["regions"]]
    print_table(rows, ["region", "phase", "step", "weight", "verdict", "power", "failed", "stable", "canary",
                       "message"],
                title=f"rollout {out['id'][:8]} of v{out['version']}: {out['phase']}")


def _dev_key_unless_configured() -> None:
    if not (os.environ.get("EBMOPS_SYNC__SIGNING_KEY") or os.environ.get("EBMOPS_SYNC__SIGNING_KEY_FILE")):
        os.environ["EBMOPS_SYNC__DEV_MODE"] = "true"
        console.print("[yellow]no signing key set: the demo signs bundles with the public development key "
                      "(sync.dev_mode); set EBMOPS_SYNC__SIGNING_KEY in production[/yellow]")


def _baseline(scope, version: str) -> str | None:
    """Make ``version`` its model's baseline: the champion of a model that has none (the first version has
    nothing to beat), else (a demo run again over the same home, the regions running an earlier demo's
    versions) publish it by the operator's sync override. Returns the override token, if any."""
    from registry import ModelRegistry

    model = scope.registry.model_name
    reg = ModelRegistry.from_settings(scope)
    if reg.get_by_alias(CHAMPION) is None:
        reg.set_alias(CHAMPION, version)
        return None
    from ebmops.services.authority import own_override

    console.print(f"this home already has a champion of {model}: v{version} becomes the baseline by the "
                  "operator's override")
    return own_override(scope, version=version, regions=list(scope.data.regions), comment="demo baseline")


def _act_first_version(s) -> str:
    """Act 1: validate, train, evaluate, register and gate v1; it becomes the baseline everywhere."""
    from ebmops.tools.views import print_gate, train_result_tables
    from flows.sync import sync as sync_flow
    from flows.train import train as train_flow

    console.rule(f"1. validate, train, evaluate, register, gate {s.registry.model_name} v1; publish it everywhere")
    res = train_flow(dataset=s.data.dataset)
    train_result_tables(res, s)
    print_gate(res["gate"]["report"])
    v1 = res["version"]
    sync_flow(version=v1, reason="manual", override=_baseline(s, v1), model=s.registry.model_name)
    return v1


def _act_second_model(s) -> tuple[str, object]:
    """Act 3: a second model on another dataset, gated against its own champion, synced to the running nodes;
    returns its model name and its dataset's normal events (its live traffic)."""
    from ebmops.core.data import load_dataset
    from ebmops.services.models import resolve
    from ebmops.tools.views import print_gate, train_result_tables
    from flows.sync import sync as sync_flow
    from flows.train import train as train_flow

    ds = load_dataset(SECOND_DATASET, s)
    console.rule(f"3. a second model on {SECOND_DATASET} ({ds.schema.n_features} features; no categorical "
                 "columns, none declared) served by the same nodes")
    res = train_flow(dataset=SECOND_DATASET, progress=False)
    train_result_tables(res, s)
    print_gate(res["gate"]["report"])
    model, version = res["model_name"], res["version"]
    scope = resolve(s, model=model)
    # the nodes list desired/ on reload: the new model's desired state makes them load it next to kdd99
    sync_flow(version=version, reason="manual", override=_baseline(scope, version), model=model, wait_s=60.0)
    return model, _normal_events(ds)


def _normal_events(ds):
    """Live traffic of a quiet hour: the dataset's normal events. With the labelled attacks mixed in, two
    sound versions differ several-fold in alert rate on the few attack rows each side of the canary
    split happens to see, and the judge (rates relative to their base) rightly calls that a storm."""
    from ebmops.core.data.schema import LABEL

    return ds.features_array(ds.frame[ds.frame[LABEL] == 0]) if LABEL in ds.frame else ds.features_array()


def _models_table(s, replays: dict, title: str) -> dict[str, dict[str, str | None]]:
    """Per region, every model its node serves (``GET /v1/models``: what is really loaded) with the traffic the
    replayers sent it; returns region -> model -> stable version served."""
    from ebmops.adapters.nodes import replica_get
    from ebmops.services.models import list_models

    datasets = {m["model"]: m["dataset"] for m in list_models(s)}
    rows, served = [], {}
    for region in s.data.regions:
        bodies, failed, _n = replica_get(s, region, "/v1/models")
        if not bodies:
            rows.append({"region": region, "model": "-", "errors": f"node unreachable: {failed}"})
            continue
        served[region] = {}
        for m in bodies[0]["models"]:
            name = m["model"]
            served[region][name] = m["stable_version"]
            t = replays[name].traffic[region].summary() if name in replays else {}
            canary = (f" (+ canary v{m['canary_version']} at {m['canary_weight']:.0%})" if m.get("canary_version")
                      else "")
            rows.append({"region": region, "model": name, "dataset": datasets.get(name), "features": len(m["features"]),
                         "stable served": f"v{m['stable_version']}{canary}" if m["stable_version"] else "-",
                         "events/s": t.get("events_per_s"), "p99 ms": t.get("p99_ms"), "errors": t.get("errors")})
    print_table(rows, ["region", "model", "dataset", "features", "stable served", "events/s", "p99 ms", "errors"],
                title=title)
    return served


def _act_retrain_rollout(s, replay, approver: str) -> None:
    """Act 4: an ordinary retrain, gated, rolled out region by region under live traffic."""
    from ebmops.tools.views import print_gate
    from flows.rollout import rollout as rollout_flow
    from flows.train import train as train_flow

    console.rule(f"4. a retrain of {s.registry.model_name}, gated, rolled out region by region")
    res2 = train_flow(dataset=s.data.dataset, seed=s.training.seed + 1, progress=False)
    print_gate(res2["gate"]["report"])
    replay.reset_stats()
    _rollout_table(rollout_flow(version=res2["version"], auto_approve_as=approver, created_by=approver,
                                model=s.registry.model_name))
    _traffic_table(replay, "traffic during the rollout")


def _act_bad_candidate(s, approver: str) -> None:
    """Act 5: a candidate whose threshold flags most events; the canary rolls it back."""
    from ebmops.core.runtime import env_overrides
    from flows.rollout import rollout as rollout_flow
    from flows.train import train as train_flow

    console.rule("5. a deliberately bad candidate: its threshold flags most events")
    with env_overrides({"EBMOPS_TRAINING__THRESHOLD_QUANTILE": "0.05"}):
        res3 = train_flow(dataset=s.data.dataset, seed=s.training.seed + 2, progress=False, run_gate=False)
    v3 = res3["version"]
    console.print(f"v{v3}: threshold {res3['threshold']:.4g} (the 5 % quantile of its calibration energies)")
    _rollout_table(rollout_flow(version=v3, auto_approve_as=approver, created_by=approver,
                                model=s.registry.model_name))


def _audit_table() -> None:
    from ebmops.core.state import open_store
    from ebmops.services.audit import verify_all

    settings = _settings()
    store = open_store(settings)
    entries = store.list_audit(limit=12)
    print_table([{"seq": e.seq, "when": e.created_at, "kind": e.kind, "version": e.version, "region": e.region,
                  "actor": e.actor} for e in reversed(entries)], ["seq", "when", "kind", "version", "region", "actor"],
                title="audit log (latest 12; `ebmops audit log` for all)")
    v, found = verify_all(settings, store)
    anchor = (f"; anchored outside the database at seq {found.newest.seq} (checkpoint in the region stores)"
              if found.newest else "; no checkpoint yet")
    console.print(f"audit log: {'intact' if v.ok else 'BROKEN: ' + str(v.problem)} ({v.n_records} records, "
                  f"MACs checked{' with the public dev key' if v.dev_key else ''}{anchor})")


def run_demo(*, bench_out: str | None = None) -> dict:
    """Run every act; returns the timings (the drift part is also bench/results/drift.json's source) and, per
    region, the stable version each node serves of each model at the end (``models``)."""
    os.environ.update({k: v for k, v in DEMO_ENV.items() if k not in os.environ})
    _dev_key_unless_configured()
    s = _settings()
    from ebmops.core.data import load_dataset
    from ebmops.core.runtime import prepare_environment
    from ebmops.tools.localnodes import start_nodes
    from ebmops.tools.replay import Replayer
    from ebmops.tools.views import mlflow_ui_hint

    prepare_environment(s)
    t0 = time.perf_counter()
    approver = s.rollout.oncall_roster[0]
    model = s.registry.model_name
    console.rule("[bold]ebmops demo[/bold]")
    console.print(f"home: {s.home}  (state {s.resolved_state_url}, MLflow {s.resolved_tracking_uri})")
    _act_first_version(s)

    console.rule(f"2. three regional nodes on loopback, {s.data.dataset} normal connections replayed to each")
    x = _normal_events(load_dataset(s.data.dataset, s))
    with start_nodes(s, wait_ready=True) as nodes:
        urls = {r: n.url for r, n in nodes.nodes.items()}
        print_table([{"region": r, "url": u, "pid": nodes.nodes[r].pid} for r, u in urls.items()],
                    ["region", "url", "pid"], title="nodes")
        with Replayer(urls, x, batch=32, rate=40) as replay:
            time.sleep(5)  # a few seconds of traffic to show: the table reports what was served, nothing waits on it
            _traffic_table(replay, "live traffic (32-event requests, 40 requests/s per region)")
            stats = {r: replay.traffic[r].summary() for r in urls}
            second, x2 = _act_second_model(s)
            with Replayer(urls, x2, batch=32, rate=10, seed=100, model=second) as replay2:
                replays = {model: replay, second: replay2}
                time.sleep(5)
                _models_table(s, replays, f"every model each node serves (GET /v1/models; {second} traffic: "
                                          f"32-event requests, 10 requests/s to /v1/models/{second}/score)")
                _act_retrain_rollout(s, replay, approver)
                _act_bad_candidate(s, approver)
                console.rule(f"6. drift: eu-west's {s.data.dataset} traffic shifts; monitor, hotfix, serve")
                timings = drift_scenario(s, replay, region="eu-west", approver=approver)
                _traffic_table(replay, f"{model} traffic after the hotfix")
                _audit_table()
                second_traffic = {r: replay2.traffic[r].summary() for r in urls}  # the whole run, before the reset
                for r in replays.values():
                    r.reset_stats()
                time.sleep(5)
                served = _models_table(s, replays, "what every region serves at the end: both models on the same "
                                                   "nodes (GET /v1/models), the last 5 s of traffic")

    console.rule(f"done in {time.perf_counter() - t0:.0f} s")
    console.print(f"Open the MLflow UI: [bold]{mlflow_ui_hint(s)}[/bold] then http://127.0.0.1:5000")
    result = {"traffic": stats, "drift": timings, "models": served, "second_model": second,
              "second_model_traffic": second_traffic, "seconds": time.perf_counter() - t0}
    if bench_out:
        from pathlib import Path

        Path(bench_out).write_text(json.dumps(result, indent=2, default=str))
    return result


def drift_scenario(settings, replay, *, region: str, approver: str) -> dict:
    """Shift ``region``'s traffic, run the monitor until it breaches, run the hotfix, time each step."""
    from flows.drift_monitor import drift_monitor
    from flows.hotfix import hotfix

    # the drift: the region now sees a different slice of real traffic (connections whose most
    # variable feature sits in its top quartile), values within the ranges seen in training
    from ebmops.tools.replay import drifted_slice

    drifted = drifted_slice(replay.events)
    t0 = time.perf_counter()
    replay.replace_events(region, drifted)
    first_drifted = datetime.now(timezone.utc)
    # the node's stats window must fill with drifted events before Δ moves: the monitor runs
    # every hour in production; here it runs every 2 s until it sees the breach
    breach = None
    for _ in range(30):
        time.sleep(2)
        out = drift_monitor(regions=[region], model=settings.registry.model_name)
        hits = [b for b in out["breaches"] if b["start_hotfix"]]
        if hits:
            breach = hits[0]
            break
    t_breach = time.perf_counter() - t0
    rows = [{"step": "first drifted event", "at": first_drifted.strftime("%H:%M:%S"), "after s": 0.0}]
    if breach is None:
        console.print("[red]no breach detected in 60 s[/red]")
        return {"breach_detected_s": None}
    rows.append({"step": f"breach detected (Δ={breach['delta']:.3f})", "at": datetime.now(timezone.utc).strftime(
        "%H:%M:%S"), "after s": t_breach})
    # the hotfix learns from the drifted traffic: let the node's recent sample fill with it first
    time.sleep(max(0.0, 7.0 - (time.perf_counter() - t0)))
    hf = hotfix(region=region, model=breach["model"], version=breach["version"], delta=breach["delta"],
                auto_approve_as=approver)
    t_serving = time.perf_counter() - t0
    for ev in hf.get("timeline", []):
        at = datetime.fromisoformat(ev["at"])
        rows.append({"step": ev["event"], "at": at.strftime("%H:%M:%S"),
                     "after s": (at - first_drifted).total_seconds()})
    print_table(rows, ["step", "at", "after s"], title=f"drift timeline in {region}")
    print_kv({"region": region, "breach detected after (s)": t_breach, "hotfix serving after (s)": t_serving,
              "hotfix version": hf.get("version"), "mode": hf.get("mode")}, title="hotfix")
    return {"region": region, "delta": breach["delta"], "breach_detected_s": t_breach,
            "hotfix_serving_s": t_serving, "hotfix_version": hf.get("version"), "mode": hf.get("mode"),
            "timeline": hf.get("timeline")}
