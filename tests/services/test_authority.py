"""Operator identity: the OS login or a roster key, never a free-text name; override tokens a worker-run
flow can check (signature, action, version, regions, expiry, roster)."""

from __future__ import annotations

import json

import pytest

from ebmops.core.errors import ConfigError, NotOnRoster, SyncNotApproved
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.services.authority import (check_override, os_login, override_token, require_roster,
                                       resolve_operator)
from tests.flows.test_rollout_e2e import KEYS


@pytest.fixture
def keyed(tmp_path):
    return load_settings(home=tmp_path, sync={"signing_key": "k" * 40},
                         rollout={"oncall_roster": ["oncall", "alice"],
                                  "operator_keys": {n: pub for n, (_, pub) in KEYS.items()}})


def test_without_keys_the_operator_is_the_os_login_and_as_cannot_differ(tmp_path):
    s = load_settings(home=tmp_path)
    me = resolve_operator(s)
    assert (me.name, me.how) == (os_login(), "os-user")
    assert resolve_operator(s, os_login()) == me
    with pytest.raises(NotOnRoster, match="cannot name someone else"):
        resolve_operator(s, "someone-else")


def test_with_keys_the_operator_is_the_holder_of_a_listed_key(keyed, monkeypatch):
    with pytest.raises(ConfigError, match="EBMOPS_OPERATOR__KEY"):
        resolve_operator(keyed)
    s = keyed.model_copy(update={"operator": keyed.operator.model_copy(update={"key": _secret(KEYS["alice"][0])})})
    assert (resolve_operator(s).name, resolve_operator(s).how) == ("alice", "ed25519")
    with pytest.raises(NotOnRoster, match="says you are 'alice'"):
        resolve_operator(s, "oncall")
    from tests.flows.test_rollout_e2e import _keypair

    stranger = keyed.model_copy(update={"operator": keyed.operator.model_copy(update={"key": _secret(_keypair()[0])})})
    with pytest.raises(NotOnRoster, match="not in rollout.operator_keys"):
        resolve_operator(stranger)


def test_an_off_roster_operator_is_refused_and_the_refusal_audited(keyed):
    s = keyed.model_copy(update={"operator": keyed.operator.model_copy(update={"key": _secret(KEYS["mallory"][0])})})
    store = open_store(s)
    op = resolve_operator(s)
    with pytest.raises(NotOnRoster, match="nothing was changed"):
        require_roster(s, store, op, "roll back eu-west", model="m", region="eu-west")
    (rec,) = [e for e in store.list_audit(limit=10) if e.kind == "refusal"]
    assert (rec.actor, rec.region, rec.payload["action"]) == ("mallory", "eu-west", "roll back eu-west")


@pytest.mark.parametrize("who", ["alice", "os-user"])
def test_an_override_token_verifies_only_for_what_it_names(keyed, tmp_path, who):
    if who == "os-user":
        s = load_settings(home=tmp_path, sync={"signing_key": "k" * 40}, rollout={"oncall_roster": [os_login()]})
    else:
        s = keyed.model_copy(update={"operator": keyed.operator.model_copy(update={"key": _secret(KEYS["alice"][0])})})
    op = resolve_operator(s)
    token = override_token(s, op, action="sync", model="m", version="3", regions=["eu-west"], comment="why")
    doc = check_override(s, token, action="sync", model="m", version="3", regions=["eu-west"])
    assert (doc["operator"], doc["comment"]) == (op.name, "why")
    for kw, needle in [({"version": "4"}, "authorises"), ({"regions": ["eu-west", "us-east"]}, "does not cover"),
                       ({"model": "other"}, "authorises")]:
        with pytest.raises(SyncNotApproved, match=needle):
            check_override(s, token, **{"action": "sync", "model": "m", "version": "3", "regions": ["eu-west"], **kw})
    forged = json.loads(token)
    forged["version"] = "4"
    with pytest.raises(SyncNotApproved, match="signature"):
        check_override(s, json.dumps(forged), action="sync", model="m", version="4", regions=["eu-west"])
    old = override_token(s, op, action="sync", model="m", version="3", regions=["eu-west"], ttl_s=-1)
    with pytest.raises(SyncNotApproved, match="expired"):
        check_override(s, old, action="sync", model="m", version="3", regions=["eu-west"])


def _secret(v: str):
    from pydantic import SecretStr

    return SecretStr(v)
