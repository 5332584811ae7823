"""The Kubernetes manifests of the nodes: rendered files up to date, strictly valid, and safe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ebmops.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"


def _render_module():
    spec = importlib.util.spec_from_file_location("ebmops_k8s_render", K8S / "render.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


render = _render_module()
VALUES = render.load_values()
REGIONS = ["us-east", "eu-west", "ap-south"]


def _docs(region: str) -> dict[str, dict]:
    docs = list(yaml.safe_load_all((K8S / "regions" / f"{region}.yaml").read_text()))
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_every_region_has_an_overlay_and_a_rendered_file_that_is_up_to_date():
    assert sorted(VALUES) == sorted(REGIONS)
    for region in REGIONS:
        committed = (K8S / "regions" / f"{region}.yaml").read_text()
        assert committed == render.render_text(VALUES[region]), \
            f"deploy/k8s/regions/{region}.yaml is stale: run `python deploy/k8s/render.py`"


@pytest.mark.parametrize("region", REGIONS)
def test_every_rendered_manifest_is_valid_against_the_kubernetes_schemas(region):
    docs = _docs(region)
    assert sorted(d.split("/")[0] for d in docs) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                                                     "PodDisruptionBudget", "Service", "Service"]
    for name, doc in docs.items():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{region} {name}: {e.message}")


def test_strict_validation_catches_a_misspelt_field():
    doc = _docs("eu-west")["Deployment/ebmops-node-eu-west"]
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("region", REGIONS)
def test_the_deployment_probes_hardens_and_spreads_the_node(region):
    docs = _docs(region)
    dep = docs[f"Deployment/ebmops-node-{region}"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["args"] == ["--region", region, "--port", "8101"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {"topology.kubernetes.io/zone",
                                                                          "kubernetes.io/hostname"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"ebmops-signing", f"ebmops-node-tokens-{region}"}
    # everything the node writes is on a mounted volume (the root filesystem is read-only)
    assert {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")} == {"/var/lib/ebmops", "/tmp"}
    headless = docs[f"Service/ebmops-node-{region}-headless"]
    assert headless["spec"]["clusterIP"] == "None"
    hpa = docs[f"HorizontalPodAutoscaler/ebmops-node-{region}"]
    assert hpa["spec"]["minReplicas"] >= 2  # a PodDisruptionBudget of maxUnavailable 1 still leaves one serving
    assert docs[f"PodDisruptionBudget/ebmops-node-{region}"]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("region", REGIONS)
def test_the_configmap_is_a_valid_ebmops_yaml_that_requires_tokens(region):
    cm = _docs(region)[f"ConfigMap/ebmops-node-{region}-config"]
    s = Settings(**yaml.safe_load(cm["data"]["ebmops.yaml"]))
    assert region in s.data.regions
    assert s.serving.host == "0.0.0.0" and s.serving.auth.enabled and not s.serving.auth.insecure_bind
    assert s.serving.auth.tokens_file == Path("/etc/ebmops/tokens/tokens.yaml")
    assert s.sync.signing_key is None and s.sync.signing_key_file == Path("/etc/ebmops/signing/key")
    assert s.serving.log_format == "json"
    assert "sha256" not in cm["data"]["ebmops.yaml"]  # tokens live in the Secret, not the ConfigMap
