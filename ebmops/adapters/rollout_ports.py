"""The real traffic and alias ports of the rollout controller (canary/controller.py).

* ``RegionTraffic``: a region's object store (bundles, signed desired state) and its node
  (``/admin/reload?model=``, ``/v1/models/<model>/stats`` of the model settings.registry.model_name
  names), with each version's energies turned into percentiles of its own
  calibration energies (gauge-free).
* ``RegistryAliases``: MLflow aliases (``prod-<region>``, ``champion``, ``previous-champion``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from canary.controller import SamplesUnavailable, VersionSamples
from ebmops.core.errors import EbmopsError, RolloutRefused
from ebmops.core.settings import Settings

log = logging.getLogger(__name__)
# order statistics of a version's calibration the judge reads its window's drift against: enough that Δ's
# noise floor (drift/delta.py) is set by the window's ~2,000 events, not by the reference
REFERENCE_POINTS = 2001


@dataclass
class RegionTraffic:
    settings: Settings
    reload_timeout_s: float = 30.0
    _bundles: dict = field(default_factory=dict)
    _gauges: dict = field(default_factory=dict)
    _expected: dict = field(default_factory=dict)
    _references: dict = field(default_factory=dict)
    _stores: dict = field(default_factory=dict)
    _signing_key: object = None

    def _store(self, region: str):
        """One store per region for the controller's life: an S3 store holds a boto3 client (slow to build)."""
        if region not in self._stores:
            from registry.objectstore.factory import store_for_region

            self._stores[region] = store_for_region(self.settings, region)
        return self._stores[region]

    def _key(self):
        if self._signing_key is None:
            from registry.signing import signing_key

            self._signing_key = signing_key(self.settings)
        return self._signing_key

    def prepare(self, region: str, version: str) -> None:
        from ebmops.adapters.bundles import prepare
        from registry.publish import publish_to_regions

        b = self._bundles.get(version) or prepare(self.settings, version)
        self._bundles[version] = b
        publish_to_regions({region: self._store(region)}, b.model_file, model_name=b.model_name, version=b.version,
                           features=b.features, threshold=b.threshold, gate_verdict=b.gate_verdict, key=self._key(),
                           set_stable=False, metadata=b.metadata, extra_files=b.extra_files or None)

    def set_traffic(self, region: str, *, stable: str | None, canary: str | None, weight: float) -> None:
        from ebmops.adapters.nodes import generation_floors
        from registry.desired_state import needs_write, next_desired, read_desired, write_desired

        if stable is None:
            raise RolloutRefused(f"region {region} has no stable version to fall back to; sync one first "
                                 "(`ebmops sync VERSION --region {region}`)")
        model = self.settings.registry.model_name
        store, key = self._store(region), self._key()
        current = read_desired(store, model, key)
        floor = generation_floors(self.settings, [region])[region]
        ttl = self.settings.sync.desired_ttl_s
        wanted = next_desired(current, model, stable_version=stable, canary_version=canary,
                              canary_weight=weight if canary else 0.0, updated_by="ebmops-rollout", floor=floor,
                              ttl_s=ttl)
        if needs_write(wanted, current, floor=floor, refresh_within_s=ttl / 2):
            write_desired(store, wanted, key)
        self._wait_applied(region, stable, canary, weight if canary else 0.0)

    def _wait_applied(self, region: str, stable: str, canary: str | None, weight: float) -> None:
        """Reload the node and wait until it serves exactly this; a node that is down is left to its
        poll (the desired state is the truth), a node that refuses is an error."""
        from ebmops.adapters.nodes import node_reports

        deadline = time.monotonic() + self.reload_timeout_s
        while True:
            rep = node_reports(self.settings, [region], reload=True)[region]
            if not rep.reachable:
                log.warning("%s: node unreachable (%s); it will apply the desired state when it polls", region,
                            rep.error)
                return
            if (rep.stable_version, rep.canary_version) == (stable, canary) and \
                    abs((rep.canary_weight or 0.0) - weight) < 1e-9:
                if rep.error:  # some replicas down: they apply the desired state when they poll
                    log.warning("%s: applied by every reachable replica; unreachable: %s", region, rep.error)
                return
            if time.monotonic() > deadline:
                raise EbmopsError(f"node of {region} does not apply stable {stable} / canary {canary} @ {weight}: it "
                                  f"serves {rep.stable_version} / {rep.canary_version}"
                                  + (f" (last error: {rep.last_error})" if rep.last_error else ""))
            time.sleep(0.2)

    def served(self, region: str) -> str | None:
        """The stable version the region's node serves now; None when it cannot be reached."""
        from ebmops.adapters.nodes import node_reports

        rep = node_reports(self.settings, [region])[region]
        # "" when reachable replicas disagree (or serve nothing): not served everywhere yet
        return (rep.stable_version or "") if rep.reachable else None

    def _gauge(self, version: str) -> np.ndarray | None:
        """The version's sorted calibration energies: each live energy becomes its percentile among them.

        Two versions' raw energies are in different gauges (an EBM's energy is defined up to shift and
        scale, and two trainings differ in shape too). The percentile within a version's own
        calibration is gauge-free: on the same traffic, two sound versions give the same percentile
        distribution, and a version whose energies moved gives a different one."""
        if version not in self._gauges:
            from registry import ModelRegistry

            reg = ModelRegistry.from_settings(self.settings)
            try:
                dst = self.settings.home / "rollouts" / "calibration" / version
                cal = np.load(reg.download_artifact(version, "calibration_energies.npy", dst))
                self._gauges[version] = np.sort(np.asarray(cal, dtype=np.float64))
            except Exception as e:  # noqa: BLE001 - without a calibration the energy metric has no data
                log.warning("no calibration energies for version %s (%s); its energies are not compared", version, e)
                self._gauges[version] = None
        return self._gauges[version]

    def _reference(self, version: str) -> np.ndarray | None:
        """The version's calibration energies in the judge's gauge (each one's percentile among them, as
        ``_samples_of`` maps the window's), thinned to ``REFERENCE_POINTS`` evenly spaced order statistics."""
        if version not in self._references:
            cal = self._gauge(version)
            if cal is None or not len(cal):
                self._references[version] = None
            else:
                pct = np.searchsorted(cal, cal, side="right") / len(cal)
                self._references[version] = pct[np.linspace(0, len(pct) - 1, min(len(pct), REFERENCE_POINTS),
                                                            dtype=np.int64)]
        return self._references[version]

    def _expected_alert_rate(self, version: str, threshold: float | None) -> float | None:
        """The share of normal events the version should flag: what a threshold at its training run's
        quantile flags among its calibration energies (1 - quantile, less the ties at the threshold on
        discrete traffic). Computed from the quantile, not from the served threshold, so a version whose
        threshold is wrong is held to what it was meant to flag. Without the quantile: the share of its
        calibration energies above the served threshold; without calibration energies: 1 - quantile."""
        if version not in self._expected:
            from training.calibrate import expected_alert_rate

            q = None
            try:
                from registry import ModelRegistry

                q = ModelRegistry.from_settings(self.settings).run_params(version).get("threshold_quantile")
            except Exception as e:  # noqa: BLE001 - without an expectation the judge compares with stable only
                log.warning("no threshold quantile for version %s (%s)", version, e)
            cal = self._gauge(version)
            has_cal = cal is not None and len(cal) > 0
            if q is not None:
                rate = expected_alert_rate(cal, float(q)) if has_cal else 1.0 - float(q)
            else:
                rate = float(np.mean(cal > threshold)) if has_cal and threshold is not None else None
            self._expected[version] = rate
        return self._expected[version]

    def samples(self, region: str) -> dict[str, VersionSamples]:
        """Every replica's recent samples, pooled per version; SamplesUnavailable names the replicas that
        could not be read (the judge does not judge on part of the region)."""
        from ebmops.adapters.nodes import replica_get
        from serving.client import model_path

        bodies, failed, n_urls = replica_get(self.settings, region, model_path(self.settings, "stats"))
        if failed or not n_urls:
            raise SamplesUnavailable(f"{region}: {len(failed)} of {n_urls} node replicas unreachable, not judged: "
                                     + ("; ".join(f"{url} ({err})" for url, err in failed)
                                        or "serving.node_urls resolves to no address"))
        parts = [self._samples_of(body) for body in bodies]
        if len(parts) == 1:
            return parts[0]
        return {v: VersionSamples.pooled([p[v] if v in p else VersionSamples.empty() for p in parts])
                for v in dict.fromkeys(v for p in parts for v in p)}

    def _samples_of(self, body: dict) -> dict[str, VersionSamples]:
        out = {}
        for version, s in (body.get("by_version") or {}).items():
            e = np.asarray(s.get("energies") or [], dtype=np.float64)
            thr = s.get("threshold")
            cal = self._gauge(version)
            out[version] = VersionSamples(
                requests=int(s.get("requests", 0)), events=int(s.get("events", 0)),
                latency_ms=np.asarray(s.get("latency_ms") or [], dtype=np.float64),
                outcomes=np.asarray(s.get("outcomes") or [], dtype=np.float64),
                energies=np.searchsorted(cal, e, side="right") / len(cal) if cal is not None and len(cal) else np.empty(0),
                alerts=(e > thr).astype(np.float64) if thr is not None else np.empty(0),
                expected_alert_rate=self._expected_alert_rate(version, thr),
                energy_reference=self._reference(version))
        return out


@dataclass
class RegistryAliases:
    settings: Settings

    def _reg(self):
        from registry import ModelRegistry

        return ModelRegistry.from_settings(self.settings)

    def get_alias(self, alias: str) -> str | None:
        info = self._reg().get_by_alias(alias)
        return info.version if info else None

    def set_alias(self, alias: str, version: str) -> None:
        self._reg().set_alias(alias, version)
