"""The delivery wiring: GitHub workflows, prefect.yaml, the GPU pool template, `ebmops up` / `down`.

The fast tests read the files and check them against the code: every `ebmops` command and
option a workflow calls exists in the Typer app, every `flow/deployment` it runs is declared,
every entrypoint imports to a Prefect flow of that name, every parameter a deployment or
trigger passes is a parameter of its flow, and Prefect's own schemas accept the schedules and
the trigger. The stack itself (`ebmops up`, every deployment run through a real worker, `ebmops down`) is
tested end to end in tests/flows/test_deployments_e2e.py.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
GPU_TEMPLATE = ROOT / "deploy" / "k8s" / "gpu-job-template.json"


def _workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _on(doc: dict) -> dict:
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
    return doc.get(True, doc.get("on"))


def _run_scripts(doc: dict) -> list[str]:
    return [step["run"] for job in doc["jobs"].values() for step in job["steps"] if "run" in step]


def _prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _deployments() -> dict[str, dict]:
    return {d["name"]: d for d in _prefect_yaml()["deployments"]}


def _flow_of(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(entrypoint)  # how the worker loads it


def _shell_commands(script: str) -> list[list[str]]:
    """Simple commands of a shell script: continuation lines joined, split at ; | && || and $( )."""
    text = script.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        for part in re.split(r"\|\||&&|[;|]|\$\(|\)", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                words = part.split()
            if words:
                out.append(words)
    return out


def _calls(doc: dict, program: str) -> list[list[str]]:
    """Argument lists of every call of ``program`` (bare or as .venv/bin/program)."""
    calls = []
    for script in _run_scripts(doc):
        for words in _shell_commands(script):
            for i, w in enumerate(words):
                if w in (program, f".venv/bin/{program}"):
                    calls.append(words[i + 1:])
                    break
    return calls


# ---- GitHub workflows ---------------------------------------------------------------------------


def test_ci_workflow_runs_make_test_on_push_and_pull_request():
    doc = _workflow("ci.yml")
    on = _on(doc)
    assert "push" in on and "pull_request" in on
    (job,) = doc["jobs"].values()
    steps = job["steps"]
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in steps)
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"
    assert any(s.get("run", "").strip().split()[:2] == ["make", "test"] for s in steps)
    assert str(job["env"]["CI"]).lower() == "true"


def test_model_cd_triggers():
    on = _on(_workflow("model-cd.yml"))
    assert set(on["workflow_dispatch"]["inputs"]) == {"epochs", "bake_s"}
    assert on["push"]["branches"] == ["main"]
    assert set(on["push"]["paths"]) == {"ebmops.yaml", "training/**", "configs/**"}


def test_model_cd_trains_then_rolls_out_without_approving():
    doc = _workflow("model-cd.yml")
    runs = [c for c in _calls(doc, "prefect") if c[:2] == ["deployment", "run"]]
    assert [c[2] for c in runs] == ["train/train-local", "rollout/rollout"]
    for c in runs:
        assert "--watch" in c
    assert any(a.startswith("epochs=") for a in runs[0])
    rollout_params = [runs[1][i + 1] for i, a in enumerate(runs[1]) if a == "--param"]
    assert not any(p.startswith("auto_approve_as") for p in rollout_params), "approvals stay with on-call engineers"
    assert any(c[:2] == ["rollout", "status"] for c in _calls(doc, "ebmops"))
    assert any(c[:1] == ["install"] for c in _calls(doc, "make"))
    script = "\n".join(_run_scripts(doc))
    assert "secrets.PREFECT_API_URL" in (WORKFLOWS / "model-cd.yml").read_text()
    assert "secrets.PREFECT_API_KEY" in (WORKFLOWS / "model-cd.yml").read_text()
    assert "PREFECT_API_URL" in script


def _click_root():
    import typer

    from ebmops.cli.main import app

    return typer.main.get_command(app)


@pytest.mark.parametrize("workflow", ["ci.yml", "model-cd.yml"])
def test_every_ebmops_command_and_option_a_workflow_calls_exists(workflow):
    root = _click_root()
    for args in _calls(_workflow(workflow), "ebmops"):
        cmd, path = root, ["ebmops"]
        rest = list(args)
        while rest and hasattr(cmd, "commands") and not rest[0].startswith("-"):
            name = rest.pop(0)
            assert name in cmd.commands, f"{workflow}: `{' '.join(path)} {name}` is not an ebmops command"
            cmd, path = cmd.commands[name], path + [name]
        assert not hasattr(cmd, "commands"), f"{workflow}: `{' '.join(path)}` needs a subcommand"
        opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for a in rest:
            if a.startswith("--"):
                assert a.split("=")[0] in opts, f"{workflow}: `{' '.join(path)}` has no option {a}"


@pytest.mark.parametrize("workflow", ["ci.yml", "model-cd.yml"])
def test_every_make_target_a_workflow_calls_exists(workflow):
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:", (ROOT / "Makefile").read_text(), re.M))
    for args in _calls(_workflow(workflow), "make"):
        assert args and args[0] in targets, f"{workflow}: make {args} is not a Makefile target"


@pytest.mark.parametrize("workflow", ["ci.yml", "model-cd.yml"])
def test_every_deployment_a_workflow_runs_is_declared(workflow):
    deployments = _deployments()
    for args in _calls(_workflow(workflow), "prefect"):
        if args[:2] != ["deployment", "run"]:
            continue
        flow_name, dep_name = args[2].split("/")
        assert dep_name in deployments, f"{workflow}: deployment {dep_name!r} is not in prefect.yaml"
        assert _flow_of(deployments[dep_name]["entrypoint"]).name == flow_name
        params = inspect.signature(_flow_of(deployments[dep_name]["entrypoint"]).fn).parameters
        for i, a in enumerate(args):
            if a == "--param":
                assert args[i + 1].split("=")[0] in params, f"{workflow}: {args[2]} has no parameter {args[i + 1]}"


def test_prefect_cli_options_the_workflows_use_exist():
    calls = [c for c in _calls(_workflow("model-cd.yml"), "prefect") if c[:2] == ["deployment", "run"]]
    assert calls
    help_text = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "--help"], capture_output=True,
                               text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}).stdout
    for c in calls:
        for a in c:
            if a.startswith("--"):
                assert re.search(rf"(?<![\w-]){re.escape(a)}(?![\w-])", help_text), f"prefect deployment run has no {a}"


# ---- prefect.yaml ---------------------------------------------------------------------------------

EXPECTED = {
    "train-local": ("flows.train:train", "local"),
    "train-nightly": ("flows.train:train", "local"),
    "train-gpu": ("flows.train:train", "gpu"),
    "gate": ("flows.gate:gate", "local"),
    "rollout": ("flows.rollout:rollout", "local"),
    "sync-daily": ("flows.sync:sync", "local"),
    "sync": ("flows.sync:sync", "local"),
    "drift-monitor": ("flows.drift_monitor:drift_monitor", "local"),
    "hotfix": ("flows.hotfix:hotfix", "local"),
    "audit-checkpoint": ("flows.audit_checkpoint:audit_checkpoint", "local"),
    "score": ("flows.score:score", "local"),
}


def test_prefect_yaml_declares_every_deployment_once():
    names = [d["name"] for d in _prefect_yaml()["deployments"]]
    assert len(names) == len(set(names))
    got = {n: (d["entrypoint"], d["work_pool"]["name"]) for n, d in _deployments().items()}
    assert got == EXPECTED
    pull = _prefect_yaml()["pull"]
    assert pull[0]["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $EBMOPS_REPO_DIR }}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entrypoint_imports_to_a_flow_that_takes_the_parameters(name):
    from prefect import Flow

    dep = _deployments()[name]
    flow = _flow_of(dep["entrypoint"])
    assert isinstance(flow, Flow)
    params = inspect.signature(flow.fn).parameters
    for p in dep.get("parameters") or {}:
        assert p in params, f"{name}: {dep['entrypoint']} has no parameter {p!r}"
    expected_flow = {"drift-monitor": "drift-monitor", "hotfix": "hotfix",
                     "audit-checkpoint": "audit-checkpoint"}.get(name, dep["entrypoint"].split(":")[1])
    assert flow.name == expected_flow


def _schedule(name: str) -> dict:
    (sched,) = _deployments()[name]["schedules"]
    return sched


def test_schedules():
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule

    assert _schedule("train-nightly")["cron"] == "0 2 * * *"
    assert _schedule("train-nightly")["timezone"] == "UTC"
    assert _schedule("sync-daily")["interval"] == 86400
    assert _deployments()["sync-daily"]["parameters"] == {"reconcile": True, "reason": "scheduled"}
    assert _schedule("drift-monitor")["interval"] == 3600
    assert _schedule("audit-checkpoint")["interval"] == 3600
    for name, dep in _deployments().items():
        for s in dep.get("schedules") or []:
            built = _schedule_config_to_deployment_schedule(dict(s))  # Prefect's own parser
            assert built["active"] is True, name
    on_demand = {n for n, d in _deployments().items() if not d.get("schedules")}
    assert on_demand == {"train-local", "train-gpu", "gate", "rollout", "sync", "hotfix", "score"}


def test_hotfix_trigger_passes_the_event_payload():
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    dep = _deployments()["hotfix"]
    (spec,) = dep["triggers"]
    assert spec["type"] == "event"
    assert spec["expect"] == ["ebmops.drift.breached"]
    assert spec["match"] == {"prefect.resource.id": "ebmops.model.*"}
    params = spec["parameters"]
    assert set(params) == {"region", "model", "version", "delta"}
    for key, template in params.items():
        assert re.fullmatch(r"\{\{ event\.payload\.%s( \| string)? \}\}" % key, template), (key, template)
    flow_params = inspect.signature(_flow_of(dep["entrypoint"]).fn).parameters
    assert set(params) <= set(flow_params)
    required = {n for n, p in flow_params.items() if p.default is inspect.Parameter.empty}
    assert required <= set(params), "the trigger must pass every required parameter of hotfix"
    (trigger,) = _initialize_deployment_triggers("hotfix", [json.loads(json.dumps(spec))])  # Prefect's schema
    assert trigger.expect == {"ebmops.drift.breached"}
    assert trigger.parameters == params


def test_gpu_template_has_gpu_limits_node_selector_and_tolerations():
    import jsonschema

    tpl = json.loads(GPU_TEMPLATE.read_text())
    assert set(tpl) == {"job_configuration", "variables"}
    variables = tpl["variables"]["properties"]
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(tpl["job_configuration"])))
    assert used <= set(variables), f"placeholders without a variable: {used - set(variables)}"
    pod = tpl["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert container["image"] == "{{ image }}" and container["env"] == "{{ env }}"
    assert pod["nodeSelector"] == "{{ node_selector }}" and pod["tolerations"] == "{{ tolerations }}"
    assert variables["tolerations"]["default"][0]["key"] == "nvidia.com/gpu"
    job_vars = _deployments()["train-gpu"]["work_pool"]["job_variables"]
    assert set(job_vars) <= set(variables)
    schema = {k: v for k, v in tpl["variables"].items()}
    jsonschema.validate(job_vars, schema)


def test_train_gpu_renders_to_a_job_that_kubernetes_accepts(prefect_server):
    """The Job the `gpu` pool's worker would submit for a train-gpu run: the pool's base job template
    rendered with the deployment's job variables by prefect-kubernetes itself, then the flow run's
    additions (engine command, run labels, env); validated offline against the Kubernetes 1.37
    schemas, strictly (an unknown field is an error, as the API server's strict decoding makes it)."""
    import asyncio
    import uuid

    import kubernetes_validate
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    dep = _deployments()["train-gpu"]
    tpl = json.loads(GPU_TEMPLATE.read_text())
    cfg = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        tpl, dep["work_pool"]["job_variables"]))
    run = FlowRun(flow_id=uuid.uuid4(), name="nightly-otter", deployment_id=uuid.uuid4())
    cfg.prepare_for_flow_run(flow_run=run)
    job = cfg.job_manifest
    kubernetes_validate.validate(job, "1.37.0", strict=True)
    assert job["kind"] == "Job" and job["metadata"]["generateName"] == "nightly-otter-"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["args"] == ["prefect", "flow-run", "execute"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PREFECT__FLOW_RUN_ID"] == str(run.id) and env["EBMOPS_TRAINING__DEVICE"] == "auto"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    # and the validator is strict: a pod-level field the schema does not know is refused
    pod["completions"] = 1
    with pytest.raises(kubernetes_validate.ValidationError, match="completions"):
        kubernetes_validate.validate(job, "1.37.0", strict=True)
