"""The rollout plan: defaults from settings, per-run overrides, errors that name the field."""

import pytest

from canary.plan import PlanError, RolloutPlan
from ebmops.core.errors import ConfigError
from ebmops.core.settings import load_settings


def test_defaults_from_settings(settings):
    plan = RolloutPlan.from_settings(settings)
    assert plan.kind == "standard"
    assert plan.waves == [["us-east"], ["eu-west"], ["ap-south"]]
    assert plan.steps == [0.25, 0.5, 1.0]
    assert plan.bake_s == [180.0] * 3
    assert plan.approval == [True, True, True]
    assert plan.approval_timeout_s == 3600
    assert plan.oncall_roster == ["oncall"]
    assert plan.analysis.pass_score == 75 and plan.analysis.marginal_score == 50
    assert set(plan.analysis.metrics) == {"latency_ms", "error", "energy", "alert"}
    assert plan.regions == ["us-east", "eu-west", "ap-south"] and plan.wave_of("eu-west") == 1


def test_hotfix_plan(settings):
    plan = RolloutPlan.from_settings(settings, hotfix=True)
    assert plan.kind == "hotfix"
    assert plan.steps == [0.25, 1.0] and plan.bake_s == [10.0, 10.0]
    assert plan.approval == [True] * 3 and plan.approval_timeout_s == 900


def test_settings_shape_the_plan(tmp_path):
    s = load_settings(home=tmp_path, data={"regions": ["a", "b", "c", "d"]},
                      rollout={"steps": [0.1, 1.0], "bake_s": 5, "approval_required": False,
                               "oncall_roster": ["ana", "bo"], "analysis": {"pass_score": 90, "marginal_score": 60}})
    plan = RolloutPlan.from_settings(s)
    assert plan.waves == [["a"], ["b"], ["c"], ["d"]]  # one wave per region when rollout.waves is unset
    assert plan.steps == [0.1, 1.0] and plan.bake_s == [5.0, 5.0] and plan.approval == [False] * 4
    assert plan.oncall_roster == ["ana", "bo"] and plan.analysis.pass_score == 90


def test_overrides(settings):
    plan = RolloutPlan.from_settings(settings, waves=[["us-east", "eu-west"], ["ap-south"]], steps=[0.1, 0.5, 1.0],
                                     bake_s=[1, 2, 3], approval=[False, True], approval_timeout_s=60,
                                     analysis={"alpha": 0.01, "metrics": {"latency_ms": {"effect_size": 0.5}}})
    assert plan.waves == [["us-east", "eu-west"], ["ap-south"]]
    assert plan.bake_s == [1, 2, 3] and plan.approval == [False, True] and plan.approval_timeout_s == 60
    assert plan.analysis.alpha == 0.01
    lat = plan.analysis.metrics["latency_ms"]
    assert lat.effect_size == 0.5 and lat.fail_effect_size == 1.0 and lat.weight == 2  # merged, not replaced
    assert plan.analysis.metrics["error"].critical


def test_new_steps_keep_the_configured_bake_and_waves_the_approval(settings):
    plan = RolloutPlan.from_settings(settings, steps=[0.5, 1.0], waves=[["ap-south"]])
    assert plan.bake_s == [180.0, 180.0] and plan.approval == [True]


def test_plan_round_trips_through_json(settings):
    plan = RolloutPlan.from_settings(settings, approval=[True, False, True])
    again = RolloutPlan.from_dict(plan.to_dict(), regions=settings.data.regions)
    assert again == plan


@pytest.mark.parametrize("overrides,field", [
    ({"waves": [["us-east"], ["mars"]]}, "waves[1][0]"),
    ({"waves": [["us-east"], []]}, "waves[1] is empty"),
    ({"waves": [["us-east"], ["us-east"]]}, "waves[1][0]"),
    ({"steps": [0.5, 0.25]}, "steps[1]"),
    ({"steps": [0.0, 1.0]}, "steps[0]"),
    ({"steps": [0.5, 1.5]}, "steps[1]"),
    ({"steps": []}, "steps"),
    ({"bake_s": [1, 2]}, "bake_s has 2 entries for 3 steps"),
    ({"bake_s": -1}, "bake_s[0]"),
    ({"approval": [True]}, "approval has 1 entries for 3 waves"),
    ({"approval_timeout_s": 0}, "approval_timeout_s"),
    ({"analysis": {"pass_score": 40}}, "marginal_score"),
    ({"oncall_roster": []}, "oncall_roster"),
    ({"colour": "red"}, "colour"),
])
def test_bad_plans_name_the_field(settings, overrides, field):
    with pytest.raises(PlanError) as e:
        RolloutPlan.from_settings(settings, **overrides)
    assert field in str(e.value)
    assert isinstance(e.value, ConfigError) and e.value.exit_code == 2


def test_bad_rollout_settings_name_the_field(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="rollout.steps"):
        load_settings(home=tmp_path, rollout={"steps": [0.5, 0.4]})
    with pytest.raises(ValidationError, match="rollout.hotfix.steps"):
        load_settings(home=tmp_path, rollout={"hotfix": {"steps": [2.0]}})
