"""Render the Kubernetes manifests of one region's node replicas from deploy/k8s/regions.yaml.

    python deploy/k8s/render.py                 # rewrite deploy/k8s/regions/<region>.yaml for every region
    python deploy/k8s/render.py --region eu-west --stdout | kubectl apply -f -

One base (the functions below) and one overlay per region (its values in regions.yaml): the
rendered files are what ``kubectl apply -f`` takes, committed so a review shows the exact change.
Per region: a ConfigMap (``ebmops.yaml``), a Deployment (readiness on /readyz after the model is
verified and warmed up, liveness on /healthz, a read-only root filesystem, non-root, topology
spread over zones and nodes), a Service for clients, a headless Service for the control plane
(``serving.node_urls[region] = dns+http://<headless>:8101``: every ready replica), a
HorizontalPodAutoscaler and a PodDisruptionBudget. Secrets are referenced, never rendered:

    ebmops-signing                 key: key         (the HMAC key, or the ed25519 verify key)
    ebmops-node-tokens-<region>    key: tokens.yaml (hashed tokens: `ebmops node token create`)
    ebmops-store-<region>          keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (optional)
    ebmops-node-tls-<region>       type kubernetes.io/tls (only with tls: true)
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PORT = 8101
CONFIG_DIR, TOKENS_DIR, SIGNING_DIR, TLS_DIR, HOME = (
    "/etc/ebmops/config", "/etc/ebmops/tokens", "/etc/ebmops/signing", "/etc/ebmops/tls", "/var/lib/ebmops")


def load_values(path: Path = HERE / "regions.yaml") -> dict[str, dict[str, Any]]:
    """Each region's values: ``defaults`` overlaid with the region's own (maps merged key by key)."""
    doc = yaml.safe_load(path.read_text())
    out = {}
    for region, own in (doc.get("regions") or {}).items():
        out[region] = _merge(copy.deepcopy(doc["defaults"]), own or {})
        out[region]["region"] = region
        out[region]["all_regions"] = list(doc["regions"])
    return out


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base.get(k) or {}, v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def names(v: dict) -> dict[str, str]:
    base = f"ebmops-node-{v['region']}"
    return {"app": base, "config": f"{base}-config", "headless": f"{base}-headless", "tokens": f"ebmops-node-tokens-{v['region']}",
            "store": f"ebmops-store-{v['region']}", "tls": f"ebmops-node-tls-{v['region']}"}


def labels(v: dict) -> dict[str, str]:
    return {"app.kubernetes.io/name": "ebmops-node", "app.kubernetes.io/part-of": "ebmops",
            "app.kubernetes.io/instance": names(v)["app"], "ebmops.io/region": v["region"]}


def _meta(v: dict, name: str) -> dict:
    return {"name": name, "namespace": v["namespace"], "labels": labels(v)}


def node_config(v: dict) -> dict:
    """The node's ebmops.yaml."""
    store = {k: val for k, val in v["store"].items() if val is not None}
    serving: dict[str, Any] = {
        "host": "0.0.0.0", "log_format": "json", "install_dir": f"{HOME}/nodes", "max_body_bytes": v["max_body_bytes"],
        "auth": {"tokens_file": f"{TOKENS_DIR}/tokens.yaml", "requests_per_s": v["requests_per_s"],
                 "events_per_s": v["events_per_s"]}}
    if v["tls"]:
        serving |= {"tls_cert_file": f"{TLS_DIR}/tls.crt", "tls_key_file": f"{TLS_DIR}/tls.key"}
    return {"home": HOME, "data": {"regions": v["all_regions"]}, "registry": {"model_name": v["model_name"]},
            "sync": {"signing_key_file": f"{SIGNING_DIR}/key", "cache_dir": f"{HOME}/cache/blobs",
                     "regions": {v["region"]: store}},
            "serving": serving}


def config_map(v: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(v, names(v)["config"]),
            "data": {"ebmops.yaml": yaml.safe_dump(node_config(v), sort_keys=False)}}


def _probe(path: str, scheme: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "http", "scheme": scheme}, "periodSeconds": period,
            "timeoutSeconds": 2, "failureThreshold": failures}


def deployment(v: dict) -> dict:
    n = names(v)
    scheme = "HTTPS" if v["tls"] else "HTTP"
    volumes = [{"name": "config", "configMap": {"name": n["config"]}},
               {"name": "tokens", "secret": {"secretName": n["tokens"]}},
               {"name": "signing", "secret": {"secretName": "ebmops-signing", "items": [{"key": "key", "path": "key"}]}},
               {"name": "home", "emptyDir": {"sizeLimit": "2Gi"}},
               {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": "tokens", "mountPath": TOKENS_DIR, "readOnly": True},
              {"name": "signing", "mountPath": SIGNING_DIR, "readOnly": True},
              {"name": "home", "mountPath": HOME}, {"name": "tmp", "mountPath": "/tmp"}]
    if v["tls"]:
        volumes.append({"name": "tls", "secret": {"secretName": n["tls"]}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    env = [{"name": "EBMOPS_CONFIG", "value": f"{CONFIG_DIR}/ebmops.yaml"},
           {"name": "EBMOPS_HOME", "value": HOME}]
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": n["store"], "key": key, "optional": True}}}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    container = {
        "name": "node", "image": v["image"], "imagePullPolicy": "IfNotPresent",
        "args": ["--region", v["region"], "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": dict(v["requests"]), "limits": dict(v["limits"])},
        # ready only once a verified model is loaded and warmed up; a startup probe gives the first load time
        "startupProbe": _probe("/healthz", scheme, 2, 30),
        "readinessProbe": _probe("/readyz", scheme, 5, 2),
        "livenessProbe": _probe("/healthz", scheme, 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},  # let endpoints drop the pod before it stops
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    spread = [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": how,
               "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": n["app"]}}}
              for key, how in (("topology.kubernetes.io/zone", "ScheduleAnyway"),
                               ("kubernetes.io/hostname", "ScheduleAnyway"))]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(v, n["app"]),
        "spec": {
            "replicas": v["replicas"],
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": n["app"]}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(v),
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                                             "prometheus.io/path": "/metrics",
                                             "prometheus.io/scheme": scheme.lower()}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "topologySpreadConstraints": spread,
                    "containers": [container],
                    "volumes": volumes,
                }}}}


def service(v: dict) -> dict:
    n = names(v)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(v, n["app"]),
            "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/instance": n["app"]},
                     "ports": [{"name": "http", "port": 443 if v["tls"] else 80, "targetPort": "http",
                                "protocol": "TCP"}]}}


def headless_service(v: dict) -> dict:
    """Every ready replica's address under one name: the control plane's dns+http:// node URL."""
    n = names(v)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(v, n["headless"]),
            "spec": {"clusterIP": "None", "selector": {"app.kubernetes.io/instance": n["app"]},
                     "publishNotReadyAddresses": False,
                     "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]}}


def autoscaler(v: dict) -> dict:
    n = names(v)
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(v, n["app"]),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": n["app"]},
                     "minReplicas": v["min_replicas"], "maxReplicas": v["max_replicas"],
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": v["cpu_target_percent"]}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}


def disruption_budget(v: dict) -> dict:
    n = names(v)
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(v, n["app"]),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/instance": n["app"]}}}}


def render(v: dict) -> list[dict]:
    return [config_map(v), deployment(v), service(v), headless_service(v), autoscaler(v), disruption_budget(v)]


def render_text(v: dict) -> str:
    head = (f"# Rendered by deploy/k8s/render.py from deploy/k8s/regions.yaml (region {v['region']}); "
            "do not edit by hand.\n")
    return head + yaml.safe_dump_all(render(v), sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--region", action="append", help="only these regions (default: every region)")
    p.add_argument("--stdout", action="store_true", help="print instead of writing deploy/k8s/regions/")
    args = p.parse_args(argv)
    values = load_values()
    for region in args.region or list(values):
        if region not in values:
            p.error(f"--region {region}: not in deploy/k8s/regions.yaml ({', '.join(values)})")
        text = render_text(values[region])
        if args.stdout:
            sys.stdout.write(text)
        else:
            (HERE / "regions" / f"{region}.yaml").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
