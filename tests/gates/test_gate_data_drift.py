"""Feature drift through a real Evidently report (this test pays Evidently's import)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ebmops.core.settings import GateSettings
from gates.checks import check_data_drift
from gates.data_drift import feature_drift
from gates.verdict import Verdict


def test_shifted_feature_is_flagged_and_html_kept(tmp_path):
    rng = np.random.default_rng(0)
    feats = ["f0", "f1", "f2", "f3"]
    ref = pd.DataFrame(rng.normal(0.5, 0.1, size=(3000, 4)), columns=feats)
    cur = pd.DataFrame(rng.normal(0.5, 0.1, size=(2000, 4)), columns=feats)
    cur["f2"] += 0.1  # one standard deviation
    cur["extra"] = 1.0
    html = tmp_path / "reports" / "drift.html"
    share, per = feature_drift(ref, cur, feats, method="wasserstein", threshold=0.1, html_path=html,
                               max_rows=2500)
    assert [f for f, v in per.items() if v["drifted"]] == ["f2"]
    assert share == 0.25
    assert per["f2"]["score"] > 0.5 and per["f0"]["score"] < 0.1
    assert html.is_file() and html.stat().st_size > 10_000
    r = check_data_drift(share, len(feats), GateSettings(max_drifted_share=0.2),
                         drifted=[f for f, v in per.items() if v["drifted"]], report_path=str(html))
    assert r.verdict is Verdict.FAIL and r.details["drifted"] == ["f2"]
