"""Signing of sync documents: canonical JSON, HMAC-SHA256 and Ed25519, and where keys come from."""

from __future__ import annotations

import json
import logging

import pytest

from ebmops.core.errors import ConfigError, SignatureError, SigningKeyMissing
from ebmops.core.settings import load_settings
from registry.bundle import fetch_bundle, publish_bundle
from registry.objectstore import LocalStore
from registry.signing import (
    ED25519,
    HMAC,
    canonical_json,
    ed25519_key,
    hmac_key,
    public_key_hex,
    sign_document,
    signing_key,
    verify_document,
)
from tests.registry.sync_fixtures import FEATURES, save_energy_model

SECRET = "s" * 40
ED_PRIVATE = "11" * 32
DOC = {"type": "t/1", "b": [1, 2.5, "x"], "a": {"z": None, "é": True}}


def test_canonical_json_ignores_key_order_and_whitespace():
    reordered = json.loads(json.dumps({"a": {"é": True, "z": None}, "b": [1, 2.5, "x"], "type": "t/1"}, indent=4))
    assert canonical_json(DOC) == canonical_json(reordered)
    assert canonical_json(DOC) == '{"a":{"z":null,"é":true},"b":[1,2.5,"x"],"type":"t/1"}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


@pytest.mark.parametrize("make", [lambda: hmac_key(SECRET), lambda: ed25519_key(private=ED_PRIVATE)],
                         ids=[HMAC, ED25519])
def test_sign_and_verify_round_trip_and_any_change_is_refused(make):
    key = make()
    signed = sign_document(DOC, key)
    assert set(signed["signature"]) == {"alg", "key_id", "value"} and signed["signature"]["alg"] == key.alg
    assert verify_document(json.loads(json.dumps(signed)), key) == DOC
    for change in ({"b": [1, 2.5, "y"]}, {"extra": 1}, {"type": "other/1"}):
        with pytest.raises(SignatureError, match="modified"):
            verify_document({**signed, **change}, key)
    flipped = dict(signed, signature=dict(signed["signature"], value="00" * (len(signed["signature"]["value"]) // 2)))
    with pytest.raises(SignatureError):
        verify_document(flipped, key)


def test_a_document_signed_with_another_algorithm_is_refused():
    signed = sign_document(DOC, hmac_key(SECRET))
    with pytest.raises(SignatureError, match="signed with hmac-sha256, but this process verifies ed25519"):
        verify_document(signed, ed25519_key(private=ED_PRIVATE))


def test_malformed_signatures_are_refused():
    key = hmac_key(SECRET)
    for sig in (None, "abc", {"alg": HMAC}, {"alg": HMAC, "key_id": key.key_id, "value": "not-hex"}):
        with pytest.raises(SignatureError):
            verify_document({**DOC, "signature": sig}, key)


def test_ed25519_public_key_verifies_but_cannot_sign():
    signer = ed25519_key(private=ED_PRIVATE)
    verifier = ed25519_key(public=public_key_hex(ED_PRIVATE))
    assert verifier.key_id == signer.key_id and not verifier.can_sign
    verify_document(sign_document(DOC, signer), verifier)
    with pytest.raises(ConfigError, match="can only verify"):
        sign_document(DOC, verifier)


def test_keys_are_validated():
    with pytest.raises(ConfigError, match="at least 32"):
        hmac_key("short")
    with pytest.raises(ConfigError, match="Ed25519"):
        ed25519_key(private="not a key")
    assert hmac_key(SECRET).key_id == hmac_key(SECRET).key_id != hmac_key(SECRET + "x").key_id


# ---- keys from settings ---------------------------------------------------------------------

@pytest.fixture(autouse=True)
def no_sync_environment(monkeypatch):
    """Keys must come from what each test sets, not from the developer's shell."""
    import os

    for name in [n for n in os.environ if n.startswith("EBMOPS_SYNC__")]:
        monkeypatch.delenv(name)


def test_missing_key_outside_dev_mode_is_an_error_naming_the_setting(tmp_path):
    with pytest.raises(SigningKeyMissing, match="EBMOPS_SYNC__SIGNING_KEY") as info:
        signing_key(load_settings(home=tmp_path))
    assert isinstance(info.value, ConfigError) and "DEV_MODE" in str(info.value)


def test_verify_only_ed25519_node_without_a_key_names_the_verify_key_setting(tmp_path):
    settings = load_settings(home=tmp_path, sync={"signing_algorithm": "ed25519"})
    with pytest.raises(SigningKeyMissing, match="EBMOPS_SYNC__VERIFY_KEY"):
        signing_key(settings, verify_only=True)


def test_key_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMOPS_SYNC__SIGNING_KEY", SECRET)
    key = signing_key(load_settings(home=tmp_path))
    assert key.alg == HMAC and key.key_id == hmac_key(SECRET).key_id and not key.dev
    assert SECRET not in repr(load_settings(home=tmp_path).sync)  # a SecretStr, never printed


def test_key_from_a_file_and_ed25519_from_settings(tmp_path):
    f = tmp_path / "key"
    f.write_text(SECRET + "\n")
    assert signing_key(load_settings(home=tmp_path, sync={"signing_key_file": str(f)})).key_id == hmac_key(SECRET).key_id
    ed = load_settings(home=tmp_path, sync={"signing_algorithm": "ed25519", "verify_key": public_key_hex(ED_PRIVATE)})
    node = signing_key(ed, verify_only=True)
    assert node.alg == ED25519 and not node.can_sign
    with pytest.raises(SigningKeyMissing):
        signing_key(ed)  # the control plane must have the private key to sign


def test_dev_mode_uses_a_public_key_with_a_warning(tmp_path, caplog, monkeypatch):
    import registry.signing

    monkeypatch.setattr(registry.signing, "_dev_warned", False)
    with caplog.at_level(logging.WARNING, logger="registry.signing"):
        key = signing_key(load_settings(home=tmp_path, sync={"dev_mode": True}))
        signing_key(load_settings(home=tmp_path, sync={"dev_mode": True}))
    assert key.dev and caplog.text.count("dev_mode") == 1  # warned once per process, not at every call
    # A process with a real key refuses what the dev key signed.
    with pytest.raises(SignatureError):
        verify_document(sign_document(DOC, key), hmac_key(SECRET))


def test_ed25519_bundle_verifies_on_a_node_holding_only_the_public_key(tmp_path):
    store = LocalStore(tmp_path / "store")
    model = save_energy_model(tmp_path / "m.pt")
    publish_bundle(store, model, model_name="m", version="1", features=FEATURES, threshold=0.75,
                   gate_verdict="pass", key=ed25519_key(private=ED_PRIVATE))
    node_key = ed25519_key(public=public_key_hex(ED_PRIVATE))
    assert fetch_bundle(store, "m", "1", node_key, tmp_path / "node").manifest.signature["alg"] == ED25519
