"""``make demo`` end to end (``run_demo``): real Prefect, MLflow, region stores and three node processes. Both
models are served by the same nodes at the end, each on its own version, and the second model's live
traffic (``/v1/models/<model>/score``) went through without an error."""

from __future__ import annotations

import json

import pytest

from tests.servers import free_port_run

pytestmark = pytest.mark.slow


def test_the_demo_serves_kdd99_and_a_second_model_on_the_same_nodes(prefect_server, flow_env, monkeypatch):
    from ebmops.core.settings import get_settings, load_settings
    from ebmops.services.authority import os_login
    from ebmops.services.models import list_models
    from ebmops.tools.demo import DEMO_ENV, SECOND_DATASET, run_demo

    # the demo writes its defaults into os.environ: set them here so the test restores them
    for k, v in {**DEMO_ENV, "EBMOPS_SYNC__SIGNING_KEY": "d" * 40, "EBMOPS_SERVING__BASE_PORT": str(free_port_run(3)),
                 "EBMOPS_ROLLOUT__ONCALL_ROSTER": json.dumps(["oncall", os_login()])}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    out = run_demo()
    settings = load_settings()

    second = out["second_model"]
    assert second == f"ebm-{SECOND_DATASET}"
    regions = list(settings.data.regions)
    rows = {m["model"]: m for m in list_models(settings)}
    assert rows[second]["dataset"] == SECOND_DATASET and rows[second]["champion"] == "1"

    def approved(model: str, region: str) -> str:  # what sync may publish there: prod-<region>, else champion
        return rows[model]["prod"][region] or rows[model]["champion"]

    assert set(out["models"]) == set(regions)
    for r in regions:
        served = out["models"][r]
        assert set(served) == {"ebm-kdd99", second}, served  # both models, in the same node process
        assert served[second] == approved(second, r) == "1"  # its baseline, untouched by kdd99's rollouts
        # kdd99: what the registry approved for the region (the retrain where it promoted, the hotfix in eu-west)
        assert served["ebm-kdd99"] == approved("ebm-kdd99", r), (r, served, rows["ebm-kdd99"])
        t = out["second_model_traffic"][r]
        assert t["events"] > 0 and t["errors"] == 0, t
        assert set(t["versions"]) == {"1"}
    hotfixed = out["drift"]["region"]
    assert out["models"][hotfixed]["ebm-kdd99"] == out["drift"]["hotfix_version"]
    get_settings.cache_clear()
