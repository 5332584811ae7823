"""The signed desired-state document of a region, on LocalStore and on S3 (SeaweedFS)."""

from __future__ import annotations

import json

import pytest

from ebmops.core.errors import DesiredStateError
from registry.bundle import manifest_key, publish_bundle
from registry.desired_state import (
    DesiredState,
    desired_key,
    make_desired,
    next_desired,
    read_desired,
    write_desired,
)
from tests.registry.sync_fixtures import FEATURES, objstore, other_key, save_energy_model, sync_key  # noqa: F401

MODEL = "ebm-anomaly"


@pytest.fixture
def store(objstore, sync_key, tmp_path):
    """A region store holding versions 1 and 2 of the model, and no desired state yet."""
    for version, seed in (("1", 0), ("2", 1)):
        publish_bundle(objstore, save_energy_model(tmp_path / f"m{version}.pt", seed=seed), model_name=MODEL,
                       version=version, features=FEATURES, threshold=0.75, gate_verdict="pass", key=sync_key)
    return objstore


def test_write_then_read_round_trip(store, sync_key):
    assert read_desired(store, MODEL, sync_key) is None
    first = next_desired(None, MODEL, stable_version="1", updated_by="alice")
    written = write_desired(store, first, sync_key)
    assert written.generation == 1 and written.signature["alg"] == "hmac-sha256"
    got = read_desired(store, MODEL, sync_key)
    assert got == written
    assert (got.stable_version, got.canary_version, got.canary_weight, got.updated_by) == ("1", None, 0.0, "alice")
    canary = next_desired(got, MODEL, stable_version="1", canary_version="2", canary_weight=0.1)
    write_desired(store, canary, sync_key)
    got = read_desired(store, MODEL, sync_key)
    assert (got.generation, got.canary_version, got.canary_weight, got.versions()) == (2, "2", 0.1, ["1", "2"])
    assert store.list("desired/") == [desired_key(MODEL)]


def test_generation_must_grow(store, sync_key):
    write_desired(store, make_desired(MODEL, stable_version="1", generation=5), sync_key)
    before = store.get_bytes(desired_key(MODEL))
    for generation in (5, 4, 1):
        with pytest.raises(DesiredStateError, match="does not exceed the stored generation 5"):
            write_desired(store, make_desired(MODEL, stable_version="2", generation=generation), sync_key)
    assert store.get_bytes(desired_key(MODEL)) == before
    assert write_desired(store, make_desired(MODEL, stable_version="2", generation=6), sync_key).generation == 6


@pytest.mark.parametrize("field,value", [("canary_weight", 1.0), ("generation", 99), ("stable_version", "2")])
def test_a_tampered_document_is_refused(store, sync_key, field, value):
    write_desired(store, make_desired(MODEL, stable_version="1", canary_version="2", canary_weight=0.05,
                                      generation=1), sync_key)
    doc = json.loads(store.get_bytes(desired_key(MODEL)))
    doc[field] = value
    store.put_bytes(desired_key(MODEL), json.dumps(doc).encode())
    with pytest.raises(DesiredStateError, match="refused: .*modified"):
        read_desired(store, MODEL, sync_key)
    # A controller does not build on a document it cannot trust either.
    with pytest.raises(DesiredStateError, match="modified"):
        write_desired(store, make_desired(MODEL, stable_version="1", generation=100), sync_key)


def test_a_document_signed_with_another_key_is_refused(store, sync_key, other_key):
    write_desired(store, make_desired(MODEL, stable_version="1", generation=1), other_key)
    with pytest.raises(DesiredStateError, match="key rotated"):
        read_desired(store, MODEL, sync_key)


def test_a_signed_manifest_cannot_pose_as_a_desired_state(store, sync_key):
    store.put_bytes(desired_key(MODEL), store.get_bytes(manifest_key(MODEL, "1")))
    with pytest.raises(DesiredStateError, match="signed but invalid"):
        read_desired(store, MODEL, sync_key)


@pytest.mark.parametrize("kwargs,message", [
    ({"canary_weight": 1.5, "canary_version": "2"}, "less than or equal to 1"),
    ({"canary_weight": -0.1, "canary_version": "2"}, "greater than or equal to 0"),
    ({"canary_weight": float("nan"), "canary_version": "2"}, "finite"),
    ({"canary_weight": 0.2}, "needs a canary_version"),
    ({"canary_version": "1"}, "equals stable_version"),
    ({"generation": 0}, "greater than or equal to 1"),
    ({"stable_version": "../1"}, "pattern"),
])
def test_invalid_states_are_refused(kwargs, message):
    args = {"stable_version": "1", "generation": 1, **kwargs}
    with pytest.raises(DesiredStateError, match=message):
        make_desired(MODEL, **args)


def test_a_canary_at_weight_zero_is_allowed():
    state = make_desired(MODEL, stable_version="1", canary_version="2", canary_weight=0.0, generation=1)
    assert state.versions() == ["1", "2"]


def test_versions_must_be_published_before_they_are_desired(store, sync_key):
    for kwargs in ({"stable_version": "9"}, {"stable_version": "1", "canary_version": "9", "canary_weight": 0.1}):
        with pytest.raises(DesiredStateError, match=r"\['9'\] are not published"):
            write_desired(store, make_desired(MODEL, generation=1, **kwargs), sync_key)
    assert read_desired(store, MODEL, sync_key) is None


def test_documents_for_another_model_are_refused(store, sync_key):
    write_desired(store, make_desired(MODEL, stable_version="1", generation=1), sync_key)
    store.put_bytes(desired_key("other-model"), store.get_bytes(desired_key(MODEL)))
    with pytest.raises(DesiredStateError, match="names model ebm-anomaly"):
        read_desired(store, "other-model", sync_key)


def test_direct_construction_validates_too():
    with pytest.raises(ValueError):
        DesiredState(model=MODEL, stable_version="1", canary_weight=0.5, generation=1)
