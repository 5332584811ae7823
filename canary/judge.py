"""The canary judge: is the canary worse than stable, measured side by side in one region and window?

Kayenta-style. For every metric the caller hands over two samples taken in the same region over the
same window, one from the canary version and one from the stable version:

* ``latency_ms``  request latencies (continuous);
* ``error``       0/1 per request (1 = the request failed);
* ``energy``      event energies (continuous; see "Energies" below);
* ``alert``       0/1 per scored event (1 = above the model's alert threshold).

Each metric is *classified* on its own, then the classes are *scored*.

Classification (``classify``), per metric, from its ``CanaryMetricSettings``:

* ``no-data``  either sample has fewer than ``min_samples`` finite values;
* ``low-power`` no failure seen, but the window could not have seen the metric's ``power_effect``
  with power ``rollout.analysis.power`` (canary/power.py); counts as passing in the score, but
  makes the analysis inconclusive (rule 2b below);
* ``high``/``low``  the canary differs from stable in the metric's *bad* direction, both
  significantly (the test's p-value below ``alpha``) and materially (the effect beyond
  ``effect_size``); ``high`` when the canary is above stable, ``low`` when below;
* ``pass``  anything else: no significant change, a change too small to matter, or a change in the
  good direction (a faster canary is not a failure).

Needing *both* a p-value and an effect is deliberate: with thousands of requests a 1 % slowdown is
"significant" but harmless, and with a handful a 50 % slowdown is large but may be noise.

Tests. Continuous metrics use the Mann-Whitney U test (``scipy.stats.mannwhitneyu``): rank-based, so
it needs no normality and is not thrown by the heavy right tail of latencies and energies; one-sided
(``greater``/``less``) when only one direction is bad, two-sided for ``either``. 0/1 metrics use
Fisher's exact test on the 2x2 table of (canary, stable) x (0, 1) counts instead: on 0/1 data the
U statistic only counts pairs across two tie groups, its normal approximation is poor exactly where
canaries live (error rates of 0-1 %, where most or all values tie), and with no event on either
side it is undefined (scipy returns NaN). Fisher's test is exact at any count, including zero
events, so "0 errors out of 200 against 0 out of 200" reads as p = 1, not as an error. A
two-proportion z-test would be cheaper but needs about five expected events per cell, which a 5 %
canary step at a 0.1 % error rate does not give.

Effect sizes (``effect``): ``relative_median`` / ``relative_mean`` is ``(canary - stable) / |stable|``
(a 3x latency reads 2.0); ``rate_ratio`` is the canary's rate over stable's with an absolute floor
(gates/rates.py, the gate's alert-rate rule: ``effect_size`` and ``fail_effect_size`` are factors
either way, a gap up to ``abs_floor`` never counts; 1.0 = no change). For alerts the caller also
passes each version's calibrated rate (``expected``): the canary is then held to its own with an
exact binomial test as well (the two comparisons share alpha), stable's is reported beside it, and
a canary gap explained by stable being off its calibration while the canary is on its own is not
a failure; ``rate_difference`` is the canary's rate minus stable's (0.01 = one percentage point); ``energy_shift`` is Δ = ``drift.delta.energy_shift(stable, canary)`` (W1 over the
robust spread of stable), signed by the direction the canary's median moved. For energies a change
must also exceed Δ's 99 % noise floor at these sample sizes (``drift.delta.noise_floor``). Given
each version's calibration energies (``expected``), a canary gap is not a failure when the canary's
window keeps its own calibration (Δ within the allowed effect) and stable's is off its own: stable
drifted (a hotfix recalibrated on the moved traffic meets exactly this).

Energies: the energy of an EBM has no fixed unit (see drift/delta.py), and two versions' energies
are in different gauges. The caller must pass both in one gauge, e.g. each version's energies
standardised by its own calibration (median and IQR), or the canary's window energies against the
canary's own calibration energies; Δ and U are then meaningful.

Scoring (``judge``): ``score = 100 * weight(passing) / weight(metrics with data)``. Then, first rule
that applies:

1. a critical metric that is high/low, or any metric whose bad effect passes its
   ``fail_effect_size`` -> FAIL (evidence of harm outranks missing evidence elsewhere);
2. a critical metric with no data, metrics with no data carrying more than half the total weight,
   or no metric with data at all -> INCONCLUSIVE (never a pass);
   2b. any low-power metric, unless the score already fails -> INCONCLUSIVE, naming the traffic
   that would do;
3. ``score >= pass_score`` -> PASS, ``score >= marginal_score`` -> MARGINAL, else FAIL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from scipy import stats

from canary.power import Power, continuous_power, log_spread, rate_power
from drift.delta import energy_shift, noise_floor
from ebmops.core.jsonsafe import encode_json, encode_number
from ebmops.core.settings import CanaryAnalysisSettings, CanaryMetricSettings
from gates.rates import RateRule, alternative_rates, rate_effect

# The judge's configuration lives in settings (rollout.analysis), as the gate's does.
MetricConfig = CanaryMetricSettings
JudgeConfig = CanaryAnalysisSettings


class JudgeVerdict(str, Enum):
    PASS = "pass"                  # score at or above pass_score, no critical failure
    MARGINAL = "marginal"          # score between marginal_score and pass_score
    FAIL = "fail"                  # score below marginal_score, or a critical/fail-limit failure
    INCONCLUSIVE = "inconclusive"  # too little data to judge; never promotes on its own

    def __str__(self) -> str:
        return self.value


class Classification(str, Enum):
    PASS = "pass"        # no significant, material change in the bad direction
    HIGH = "high"        # canary significantly and materially above stable (bad)
    LOW = "low"          # canary significantly and materially below stable (bad)
    NO_DATA = "no-data"  # too few samples on either side
    LOW_POWER = "low-power"  # no failure seen, but the window could not have seen the metric's power_effect

    def __str__(self) -> str:
        return self.value

    @property
    def failing(self) -> bool:
        return self in (Classification.HIGH, Classification.LOW)


@dataclass(frozen=True)
class MetricResult:
    """One metric's classification with the numbers behind it."""

    name: str
    classification: Classification
    reason: str
    weight: float
    critical: bool
    n_canary: int
    n_stable: int
    test: str | None = None
    p_value: float | None = None
    effect: float | None = None
    allowed_effect: float | None = None
    fail_effect: float | None = None
    beyond_fail_limit: bool = False
    power: dict[str, Any] | None = None
    canary_summary: float | None = None
    stable_summary: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "classification": self.classification.value, "reason": self.reason,
                "weight": self.weight, "critical": self.critical, "n_canary": self.n_canary,
                "n_stable": self.n_stable, "test": self.test, "p_value": encode_number(self.p_value),
                "effect": encode_number(self.effect), "allowed_effect": encode_number(self.allowed_effect),
                "fail_effect": encode_number(self.fail_effect), "beyond_fail_limit": self.beyond_fail_limit,
                "power": encode_json(self.power) if self.power is not None else None,
                "canary_summary": encode_number(self.canary_summary),
                "stable_summary": encode_number(self.stable_summary), "details": encode_json(self.details)}


@dataclass(frozen=True)
class Judgement:
    """The judge's verdict on one analysis of a canary step."""

    verdict: JudgeVerdict
    score: float | None
    metrics: list[MetricResult]
    reason: str

    def metric(self, name: str) -> MetricResult:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"no metric {name!r} in this judgement; metrics: {', '.join(m.name for m in self.metrics)}")

    @property
    def failed_metrics(self) -> list[str]:
        return [m.name for m in self.metrics if m.classification.failing]

    @property
    def power(self) -> str | None:
        """One line on the window's power: 'ok' or, per low-power metric, its power and the traffic
        that would do (``ebmops rollout status``); None when no metric was checked."""
        return power_summary([m.to_dict() for m in self.metrics])

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "score": encode_number(self.score), "reason": self.reason,
                "failed_metrics": self.failed_metrics, "power": self.power,
                "metrics": [m.to_dict() for m in self.metrics]}


def power_summary(metrics: list[dict[str, Any]]) -> str | None:
    """'ok (min power 0.93)' or 'alert 0.41<0.8, needs 2.4x traffic; ...' from metric dicts."""
    checked = [m for m in metrics if m.get("power")]
    if not checked:
        return None
    short = [m for m in checked if not m["power"].get("enough")]
    if not short:
        return f"ok (min power {min(float(m['power']['power']) for m in checked):.2f})"
    parts = []
    for m in short:
        p = m["power"]
        need = p.get("needed_scale")
        parts.append(f"{m['name']} {float(p['power']):.2f}<{p['target']:g}, "
                     + (f"needs {need:.1f}x traffic" if need is not None else "undetectable at this traffic"))
    return "; ".join(parts)


# ---- classification of one metric ---------------------------------------------------------------------

def _finite(x: Sequence[float] | np.ndarray | None) -> tuple[np.ndarray, int]:
    if x is None:
        return np.empty(0), 0
    a = np.asarray(x, dtype=np.float64).ravel()
    ok = np.isfinite(a)
    return a[ok], int(a.size - ok.sum())


def _relative(c: float, s: float) -> float:
    if s == 0:
        return 0.0 if c == 0 else math.copysign(math.inf, c)
    return (c - s) / abs(s)


def _bad_side(direction: str, effect: float) -> bool:
    if direction == "increase":
        return effect > 0
    if direction == "decrease":
        return effect < 0
    return effect != 0


_ALTERNATIVE = {"increase": "greater", "decrease": "less", "either": "two-sided"}


def classify(name: str, canary: Sequence[float] | np.ndarray | None, stable: Sequence[float] | np.ndarray | None,
             cfg: MetricConfig, *, alpha: float = 0.05, default_min_samples: int = 50,
             expected: tuple[float | None, float | None] | None = None, power: float = 0.0) -> MetricResult:
    """Classify one metric (see the module docstring). Non-finite values are dropped and counted.

    ``expected``: (canary, stable) rates each version should show on normal traffic (from its
    calibration), for ``rate_ratio`` metrics; for ``energy_shift`` metrics, each version's calibration
    energies in the samples' gauge (see "Energies" in the module docstring); ``power``: the power the
    window needs against the metric's ``power_effect`` before it may pass (0: no power rule)."""
    c, c_bad = _finite(canary)
    s, s_bad = _finite(stable)
    min_n = cfg.min_samples or default_min_samples
    base = dict(name=name, weight=cfg.weight, critical=cfg.critical, n_canary=int(c.size), n_stable=int(s.size),
                allowed_effect=cfg.effect_size, fail_effect=cfg.fail_effect_size)
    details: dict[str, Any] = {"dropped_non_finite": {"canary": c_bad, "stable": s_bad}} if c_bad or s_bad else {}
    if c.size < min_n or s.size < min_n:
        return MetricResult(classification=Classification.NO_DATA, details=details,
                            reason=f"{name}: {c.size} canary and {s.size} stable samples, fewer than the {min_n} "
                                   "needed on each side", **base)
    if cfg.effect in ("rate_difference", "rate_ratio"):
        if not (np.isin(c, (0.0, 1.0)).all() and np.isin(s, (0.0, 1.0)).all()):
            raise ValueError(f"{name} uses effect {cfg.effect!r}, so its samples must be 0/1 per request or event")
    if cfg.effect == "rate_ratio":
        res, pw = _classify_ratio(name, c, s, cfg, alpha, expected, power, base, details)
    else:
        res, pw = _classify_shift(name, c, s, cfg, alpha, power, base, details,
                                  expected if cfg.effect == "energy_shift" else None)
    if pw is None:
        return res
    res = replace(res, power=pw.to_dict())
    if res.classification is Classification.PASS and not pw.enough:
        more = _more_traffic(pw, res.n_canary)
        return replace(res, classification=Classification.LOW_POWER,
                       reason=f"{name} low-power: the window detects its power_effect {pw.effect:g} with power "
                              f"{pw.power:.2f}, below {pw.target:g}; {more} ({res.reason})")
    return res


def _more_traffic(pw: Power, n_canary: int) -> str:
    if math.isinf(pw.needed_scale):
        return f"over {1024 * max(n_canary, 1):,} canary samples would be needed: this plan cannot tell"
    extra = math.ceil((pw.needed_scale - 1) * n_canary)
    return (f"about {extra:,} more canary samples ({pw.needed_scale:.1f}x this window: a bake that much longer, "
            "or a larger traffic step) would do")


class _Measured(NamedTuple):
    """One metric measured on both sides: the test's p-value, the effect, each side's summary."""

    p: float
    effect: float
    c_sum: float
    s_sum: float
    test: str
    unit: str
    power: Power | None


def _measure_rate_difference(c, s, cfg: MetricConfig, alpha: float, power: float, details: dict) -> _Measured:
    kc, ks = int(c.sum()), int(s.sum())
    # rows: canary, stable; columns: events, non-events. "greater": the canary's odds are higher.
    p = float(stats.fisher_exact([[kc, c.size - kc], [ks, s.size - ks]],
                                 alternative=_ALTERNATIVE[cfg.bad_direction]).pvalue)
    c_sum, s_sum = kc / c.size, ks / s.size
    details.update({"canary_events": kc, "stable_events": ks})
    pw = None
    if power > 0 and cfg.power_effect:
        alts = {}
        if cfg.bad_direction != "decrease":
            alts["up"] = min(1.0, s_sum + cfg.power_effect)
        if cfg.bad_direction != "increase":
            alts["down"] = max(0.0, s_sum - cfg.power_effect)
        pw = rate_power(c.size, s.size, s_sum, None, alts, alpha=alpha, two_sided=cfg.bad_direction == "either",
                        target=power, effect=cfg.power_effect)
    return _Measured(p, c_sum - s_sum, c_sum, s_sum, "fisher_exact", "rate", pw)


def _measure_continuous(c, s, cfg: MetricConfig, alpha: float, power: float, details: dict) -> _Measured:
    if np.ptp(np.concatenate([c, s])) == 0:
        p = 1.0  # every value equal: nothing to rank (scipy would warn and return NaN on some versions)
    else:
        p = float(stats.mannwhitneyu(c, s, alternative=_ALTERNATIVE[cfg.bad_direction], method="asymptotic").pvalue)
    c_med, s_med = float(np.median(c)), float(np.median(s))
    if cfg.effect == "relative_mean":
        c_sum, s_sum, unit = float(np.mean(c)), float(np.mean(s)), "mean"
        effect = _relative(c_sum, s_sum)
    elif cfg.effect == "energy_shift":
        c_sum, s_sum, unit = c_med, s_med, "median"
        sign = 1.0 if c_med > s_med else (-1.0 if c_med < s_med else (1.0 if np.mean(c) >= np.mean(s) else -1.0))
        effect = sign * energy_shift(s, c)
        details["noise_floor"] = noise_floor(s.size, c.size)
    else:
        c_sum, s_sum, unit = c_med, s_med, "median"
        effect = _relative(c_med, s_med)
    pw = None
    if power > 0 and cfg.power_effect:
        two_sided = cfg.bad_direction == "either"
        if cfg.effect == "energy_shift":
            pw = continuous_power(c.size, s.size, cfg.power_effect, alpha=alpha, two_sided=two_sided, target=power,
                                  effect=cfg.power_effect, min_noise_effect=cfg.power_effect)
        else:
            shift = math.log1p(cfg.power_effect) / log_spread(s)
            pw = continuous_power(c.size, s.size, shift, alpha=alpha, two_sided=two_sided, target=power,
                                  effect=cfg.power_effect)
    return _Measured(p, effect, c_sum, s_sum, "mann_whitney_u", unit, pw)


def _off_calibration(sample: np.ndarray, reference, effect_size: float) -> tuple[float, bool] | None:
    """Δ of a version's window against its own calibration energies (same gauge), and whether that is
    beyond ``effect_size`` and Δ's noise floor; None without a usable reference."""
    if reference is None:
        return None
    ref = np.asarray(reference, dtype=np.float64).ravel()
    ref = ref[np.isfinite(ref)]
    if ref.size < 2:
        return None
    d = float(energy_shift(ref, sample))
    return d, bool(d > effect_size and d > noise_floor(ref.size, sample.size))


def _classify_shift(name, c, s, cfg: MetricConfig, alpha: float, power: float, base: dict,
                    details: dict, expected=None) -> tuple[MetricResult, Power | None]:
    measure = _measure_rate_difference if cfg.effect == "rate_difference" else _measure_continuous
    m = measure(c, s, cfg, alpha, power, details)
    significant = bool(m.p < alpha)
    material = abs(m.effect) > cfg.effect_size
    if cfg.effect == "energy_shift":
        material = material and abs(m.effect) > details["noise_floor"]
    bad_side = _bad_side(cfg.bad_direction, m.effect)
    numbers = (f"canary {m.unit} {m.c_sum:.4g} vs stable {m.s_sum:.4g}, effect {m.effect:+.4g} "
               f"(allowed {cfg.effect_size:g}), {m.test} p={m.p:.3g} (alpha {alpha:g})")
    common = dict(test=m.test, p_value=m.p, effect=m.effect, canary_summary=m.c_sum, stable_summary=m.s_sum,
                  details=details, **base)
    if significant and material and bad_side and expected is not None:
        own = _off_calibration(c, expected[0], cfg.effect_size), _off_calibration(s, expected[1], cfg.effect_size)
        if own[0] is not None and own[1] is not None:
            details["vs_calibration"] = {"canary": own[0][0], "stable": own[1][0], "canary_off": own[0][1],
                                         "stable_off": own[1][1]}
            if own[1][1] and not own[0][1]:
                # The canary's energies sit where its calibration put them and stable's do not (a hotfix
                # recalibrated on the traffic that moved, or a candidate trained on newer data): the gap
                # is stable's drift, which the drift monitor owns, not a fault of the canary.
                return MetricResult(classification=Classification.PASS,
                                    reason=f"{name} pass (the canary keeps its calibration, Δ {own[0][0]:.3g}; stable "
                                           f"is off its own, Δ {own[1][0]:.3g}: the gap is stable's): {numbers}",
                                    **common), m.power
    if significant and material and bad_side:
        cls = Classification.HIGH if m.effect > 0 else Classification.LOW
        beyond = cfg.fail_effect_size is not None and abs(m.effect) > cfg.fail_effect_size
        extra = f"; beyond the fail limit {cfg.fail_effect_size:g}" if beyond else ""
        return MetricResult(classification=cls, reason=f"{name} {cls.value}: {numbers}{extra}",
                            beyond_fail_limit=beyond, **common), m.power
    if material and not bad_side:
        why = "moved in the good direction"  # a one-sided test does not look that way
    elif significant:
        why = "significant but within the allowed effect"
    elif material:
        why = "beyond the allowed effect but not significant"
    else:
        why = "no significant change"
    return MetricResult(classification=Classification.PASS, reason=f"{name} pass ({why}): {numbers}",
                        **common), m.power


def _usable_rate(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) and 0 < x < 1 else None


class _VsExpected(NamedTuple):
    """The canary's rate against its own calibrated rate (and stable's against its own, for context)."""

    bad: bool                # the canary is off its calibrated rate, significantly and materially
    fails: bool              # ... beyond the fail limit, and stable is not off the same way
    stable_off: bool         # stable is off its own calibrated rate the same way (unusual traffic?)
    explained: bool          # the gap to stable is stable's: the canary keeps its calibration, stable does not
    effect: object           # gates.rates effect against the calibrated rate
    p: float


def _vs_expected(kc: int, nc: int, ks: int, ns: int, exp_c: float, exp_s: float | None, rule: RateRule,
                 alternative: str, alpha: float, bad_st: bool, parts: list[str], details: dict) -> _VsExpected:
    rc, rs = kc / nc, ks / ns
    p_ex = float(stats.binomtest(kc, nc, exp_c, alternative=alternative).pvalue)
    e_ex = rate_effect(rc, exp_c, rule)
    bad_ex = p_ex < alpha and e_ex.material
    vs = {"expected": exp_c, "ratio": e_ex.ratio, "p_value": p_ex, "failing": bad_ex}
    parts.append(f"vs its calibrated {exp_c:.3%} (x{e_ex.ratio:.2f}, binomial p={p_ex:.3g})")
    stable_off = explained = False
    if exp_s is not None:
        p_sx = float(stats.binomtest(ks, ns, exp_s, alternative=alternative).pvalue)
        e_sx = rate_effect(rs, exp_s, rule)
        stable_off_any = bool(p_sx < alpha and e_sx.material)
        stable_off = stable_off_any and (e_sx.gap > 0) == (e_ex.gap > 0)
        vs["stable"] = {"expected": exp_s, "ratio": e_sx.ratio, "p_value": p_sx, "off": stable_off_any,
                        "off_the_same_way": stable_off}
        if bad_st and stable_off_any and not bad_ex:
            # The canary alerts as its calibration promises and stable does not (a hotfix replacing a
            # drifted stable, or a stable whose threshold went wrong): the gap is stable's, not a failure.
            explained = True
            parts.append(f"stable is off its own calibrated {exp_s:.3%} (x{e_sx.ratio:.2f}): the gap is stable's")
    details["vs_expected"] = vs
    # A canary off its calibration while stable is off the same way may be meeting unusual traffic:
    # that costs the weight (a human looks) but does not fail the analysis outright.
    return _VsExpected(bad_ex, bad_ex and e_ex.beyond_fail and not stable_off, stable_off, explained, e_ex, p_ex)


def _classify_ratio(name, c, s, cfg: MetricConfig, alpha: float, expected, power: float, base: dict,
                    details: dict) -> tuple[MetricResult, Power | None]:
    """A 0/1 rate judged as a ratio with a floor (gates/rates.py): canary against stable (Fisher), and
    canary against its own calibrated rate (exact binomial), stable against its own for context."""
    rule = RateRule(max_ratio=cfg.effect_size, abs_floor=cfg.abs_floor, fail_ratio=cfg.fail_effect_size,
                    direction=cfg.bad_direction)
    alternative = _ALTERNATIVE[cfg.bad_direction]
    nc, ns = int(c.size), int(s.size)
    kc, ks = int(c.sum()), int(s.sum())
    rc, rs = kc / nc, ks / ns
    exp_c, exp_s = (_usable_rate(x) for x in (expected or (None, None)))
    if exp_c is not None:
        alpha = alpha / 2  # two looks at one metric share its alpha (Bonferroni): no change still passes
    p_st = float(stats.fisher_exact([[kc, nc - kc], [ks, ns - ks]], alternative=alternative).pvalue)
    e_st = rate_effect(rc, rs, rule)
    bad_st = p_st < alpha and e_st.material
    details.update({"canary_events": kc, "stable_events": ks, "alpha_per_comparison": alpha,
                    "vs_stable": {"ratio": e_st.ratio, "gap": e_st.gap, "p_value": p_st, "failing": bad_st}})
    parts = [f"canary rate {rc:.3%} vs stable {rs:.3%} (x{e_st.ratio:.2f}, Fisher p={p_st:.3g})"]
    ex = (_vs_expected(kc, nc, ks, ns, exp_c, exp_s, rule, alternative, alpha, bad_st, parts, details)
          if exp_c is not None else None)
    if ex is not None and ex.explained:
        bad_st = False
    pw = None
    if power > 0 and cfg.power_effect:
        alts = alternative_rates(rs, rule, cfg.power_effect)
        alts_ex = alternative_rates(exp_c, rule, cfg.power_effect) if exp_c is not None else None
        pw = rate_power(nc, ns, rs, exp_c, alts, alpha=alpha, two_sided=cfg.bad_direction == "either",
                        target=power, effect=cfg.power_effect, alternatives_expected=alts_ex)
    numbers = "; ".join(parts) + f" (allowed x{cfg.effect_size:g} beyond ±{cfg.abs_floor:.2%}, alpha {alpha:g})"
    common = dict(test="fisher_exact", canary_summary=rc, stable_summary=rs, details=details, **base)
    bad_ex = ex is not None and ex.bad
    if bad_st or bad_ex:
        eff, p = (e_st, p_st) if bad_st else (ex.effect, ex.p)
        cls = Classification.HIGH if eff.gap > 0 else Classification.LOW
        beyond = (bad_st and e_st.beyond_fail) or (ex is not None and ex.fails)
        word = "storm" if eff.gap > 0 else ("silent" if eff.rate == 0 else "drop")
        against = ("stable" if bad_st else "") + (" and " if bad_st and bad_ex else "") + \
                  ("its calibrated rate" if bad_ex else "")
        extra = f"; beyond the fail limit x{cfg.fail_effect_size:g}" if beyond else ""
        if bad_ex and not bad_st and ex.stable_off:
            extra += "; stable is off its calibrated rate the same way (unusual traffic?): a human decides"
        return MetricResult(classification=cls, p_value=p, effect=eff.ratio, beyond_fail_limit=beyond,
                            reason=f"{name} {cls.value} ({word} against {against}): {numbers}{extra}",
                            **common), pw
    material = e_st.material or (ex is not None and ex.effect.material)
    if ex is not None and ex.explained:
        why = "the canary keeps its calibrated rate; stable does not"
    elif e_st.beyond_ratio and not e_st.bad_side:
        why = "moved in the good direction"
    elif material:
        why = "beyond the allowed ratio but not significant"
    elif p_st < alpha or (ex is not None and ex.p < alpha):
        why = "significant but within the allowed ratio"
    else:
        why = "no significant change"
    return MetricResult(classification=Classification.PASS, p_value=p_st, effect=e_st.ratio,
                        reason=f"{name} pass ({why}): {numbers}", **common), pw


# ---- combining --------------------------------------------------------------------------------------

Samples = Mapping[str, tuple[Sequence[float] | np.ndarray | None, Sequence[float] | np.ndarray | None]]


def judge(samples: Samples, config: JudgeConfig | None = None, *,
          expected: Mapping[str, tuple[float | None, float | None]] | None = None) -> Judgement:
    """Judge a canary step. ``samples`` maps metric name to ``(canary, stable)``; a configured metric
    absent from ``samples`` is no-data, a metric in ``samples`` but not configured is an error.
    ``expected`` maps a rate metric to the (canary, stable) rates the versions' calibrations promise, and
    an energy metric to the (canary, stable) calibration energies in the samples' gauge."""
    config = config or JudgeConfig()
    unknown = set(samples) - set(config.metrics)
    if unknown:
        raise ValueError(f"no judge configuration for metrics {sorted(unknown)}; configured: "
                         f"{', '.join(config.metrics)} (rollout.analysis.metrics)")
    expected = expected or {}
    results = [classify(name, *samples.get(name, (None, None)), cfg, alpha=config.alpha,
                        default_min_samples=config.min_samples, expected=expected.get(name), power=config.power)
               for name, cfg in config.metrics.items()]
    return combine(results, config)


def _reasons(results: list[MetricResult]) -> str:
    """The failing metrics' own reasons (their numbers): what an on-call engineer reads in the log, the
    rollout's message and its status table, without opening the analysis record."""
    return "; ".join(m.reason for m in results if m.classification.failing)


def combine(results: list[MetricResult], config: JudgeConfig | None = None) -> Judgement:
    """Score classified metrics and decide the verdict (rules in the module docstring)."""
    config = config or JudgeConfig()
    with_data = [m for m in results if m.classification is not Classification.NO_DATA]
    no_data = [m for m in results if m.classification is Classification.NO_DATA]
    w_total = sum(m.weight for m in results)
    w_data = sum(m.weight for m in with_data)
    w_pass = sum(m.weight for m in with_data if not m.classification.failing)
    score = 100.0 * w_pass / w_data if w_data > 0 else None
    score_txt = f"score {score:.1f}" if score is not None else "no score"

    critical_fail = [m.name for m in with_data if m.critical and m.classification.failing]
    over_limit = [m.name for m in with_data if m.beyond_fail_limit]
    if critical_fail or over_limit:
        parts = []
        if critical_fail:
            parts.append(f"critical metric(s) {', '.join(critical_fail)} failed")
        if over_limit:
            parts.append(f"{', '.join(over_limit)} beyond the fail limit")
        return Judgement(JudgeVerdict.FAIL, score, results,
                         f"fail: {'; '.join(parts)} ({score_txt}): {_reasons(with_data)}")

    critical_missing = [m.name for m in no_data if m.critical]
    w_missing = w_total - w_data
    if critical_missing or not with_data or w_missing > w_total / 2:
        if critical_missing:
            why = f"critical metric(s) {', '.join(critical_missing)} have too few samples"
        else:
            why = (f"metrics without enough data ({', '.join(m.name for m in no_data)}) carry "
                   f"{w_missing:g} of {w_total:g} weight")
        return Judgement(JudgeVerdict.INCONCLUSIVE, score, results, f"inconclusive: {why}")

    low_power = [m for m in with_data if m.classification is Classification.LOW_POWER]
    if low_power and score >= config.marginal_score:
        # no failure seen where the window could not have seen one: never a pass
        why = "; ".join(m.reason for m in low_power)
        return Judgement(JudgeVerdict.INCONCLUSIVE, score, results,
                         f"inconclusive: too little traffic to judge {', '.join(m.name for m in low_power)} "
                         f"({score_txt}): {why}")

    failing_txt = f"; failing: {_reasons(with_data)}" if any(m.classification.failing for m in with_data) else ""
    ignored = f"; no data: {', '.join(m.name for m in no_data)}" if no_data else ""
    if score >= config.pass_score:
        verdict, limit = JudgeVerdict.PASS, f">= pass score {config.pass_score:g}"
    elif score >= config.marginal_score:
        verdict, limit = JudgeVerdict.MARGINAL, (f"below pass score {config.pass_score:g}, >= marginal score "
                                                 f"{config.marginal_score:g}")
    else:
        verdict, limit = JudgeVerdict.FAIL, f"below marginal score {config.marginal_score:g}"
    return Judgement(verdict, score, results, f"{verdict.value}: {score_txt} {limit}{failing_txt}{ignored}")
