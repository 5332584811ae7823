"""What a node offers the drift monitor: the live energy shift gauge and its recent events."""

from __future__ import annotations

import numpy as np

from tests.registry.sync_fixtures import FEATURES
from tests.serving.conftest import metric_samples, model_file, publish_with_calibration, set_desired, torch_energies


def test_energy_shift_gauge_and_recent_events(node_factory, store, key, tmp_path):
    rng = np.random.default_rng(0)
    x_ref = rng.normal(0, 1, size=(3000, len(FEATURES))).astype(np.float32)
    path = model_file(tmp_path, "1")
    calibration = torch_energies(path, x_ref)  # the version's own energies on reference traffic
    publish_with_calibration(store, key, tmp_path, "1", calibration)
    set_desired(store, key, "1")
    with node_factory() as n:
        n.wait_ready()
        x = rng.normal(0, 1, size=(200, len(FEATURES))).astype(np.float32)
        assert n.score(x).status_code == 200
        same = metric_samples(n.client.get("/metrics").text)[("ebmops_node_energy_shift", (("version", "1"),))]
        assert same < 0.35  # traffic like the calibration's: only the noise of the 64-event window (stats_window)
        shifted = x + 3.0
        for _ in range(15):  # fill the stats window with shifted traffic
            assert n.score(shifted).status_code == 200
        moved = metric_samples(n.client.get("/metrics").text)[("ebmops_node_energy_shift", (("version", "1"),))]
        assert moved > 0.5 and moved > 2.5 * same

        recent = n.client.get("/recent", params={"n": 250}).json()
        assert recent["features"] == list(FEATURES)
        events = np.asarray(recent["events"], dtype=np.float32)
        assert events.shape == (250, len(FEATURES))
        np.testing.assert_allclose(events[-200:], shifted, rtol=1e-6)  # newest last, as scored
        np.testing.assert_allclose(np.asarray(recent["energies"])[-200:], torch_energies(path, shifted), rtol=1e-5)
        assert n.client.get("/recent", params={"n": 0}).status_code == 422
