"""The pure parts of node security: token buckets, scopes by path, the tokens file, `ebmops node token create`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from ebmops.core.errors import ConfigError
from ebmops.core.settings import AuthSettings
from serving.auth import Bucket, TokenGuard, scope_of, token_sha256


def test_a_bucket_admits_its_burst_then_refills_at_its_rate():
    b = Bucket(rate=2.0, burst_s=1.0)
    t = b.t
    assert b.take(1, t) == 0.0 and b.take(1, t) == 0.0
    assert b.take(1, t) == pytest.approx(0.5)  # empty: one request refills in half a second
    assert b.take(1, t + 0.5) == 0.0
    assert Bucket(rate=0.0, burst_s=1.0).take(10**9, t) == 0.0  # rate 0: unlimited


def test_an_event_bucket_admits_one_large_request_while_positive_and_then_owes():
    b = Bucket(rate=100.0, burst_s=1.0)
    t = b.t
    assert b.take(250, t) == 0.0  # more than the bucket holds: admitted, the bucket goes to -150
    assert b.take(1, t + 1.0) == pytest.approx(0.51)  # after 1 s it holds -50: 0.51 s until it holds one
    assert b.take(1, t + 1.51) == 0.0


@pytest.mark.parametrize("t0", [0.0, 17421.8498049, 1e6 + 0.1])
def test_waiting_exactly_the_advised_time_is_admitted_whatever_the_clock_reads(t0):
    b = Bucket(rate=100.0, burst_s=1.0)
    b.t = t0  # monotonic readings are large floats: t0 + 1.51 - t0 is not exactly 1.51
    assert b.take(250, t0) == 0.0
    wait = b.take(1, t0 + 1.0)
    assert wait == pytest.approx(0.51)
    assert b.take(1, t0 + 1.0 + wait) == 0.0


def test_scopes_by_path():
    cfg = AuthSettings()
    assert [scope_of(p, cfg) for p in ("/score", "/stats", "/recent", "/v1/models", "/admin/reload", "/nope")] == \
        ["score", "read", "read", "read", "admin", "read"]
    assert scope_of("/healthz", cfg) is None and scope_of("/metrics", cfg) is None
    model_paths = ("/v1/models/dns/score", "/v1/models/dns/stats", "/v1/models/dns/recent", "/v1/models/dns",
                   "/v1/models/score", "/v1/models/score/stats", "/v1/models/score/score")
    assert [scope_of(p, cfg) for p in model_paths] == ["score", "read", "read", "read", "read", "read", "score"]
    closed = AuthSettings(public_probes=False, public_metrics=False)
    assert scope_of("/readyz", closed) == "read" and scope_of("/metrics", closed) == "read"


def test_a_bad_tokens_file_is_an_error_naming_the_file_and_the_entry(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tokens": [{"name": "a", "sha256": token_sha256("x"), "scopes": ["score"]},
                                               {"name": "b", "sha256": "not-hex", "scopes": ["score"]}]}))
    with pytest.raises(ConfigError, match=r"tokens\[1\].*sha256"):
        TokenGuard(AuthSettings(tokens_file=path))
    with pytest.raises(ConfigError, match="cannot be read"):
        TokenGuard(AuthSettings(tokens_file=tmp_path / "missing.yaml"))


def test_token_create_prints_the_token_once_and_the_hashed_entry(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    out = subprocess.run([sys.executable, "-m", "ebmops.cli.main", "node", "token", "create", "--name", "ops",
                          "--scope", "read", "--scope", "admin", "--append", str(tokens)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = next(line for line in out.stdout.splitlines() if line.startswith("ebm_"))
    entry = yaml.safe_load(tokens.read_text())["tokens"][0]
    assert entry == {"name": "ops", "sha256": token_sha256(token), "scopes": ["read", "admin"]}
    assert token not in tokens.read_text()
    guard = TokenGuard(AuthSettings(tokens_file=tokens))
    assert guard.authorize(f"Bearer {token}".encode(), "admin").name == "ops"
    bad = subprocess.run([sys.executable, "-m", "ebmops.cli.main", "node", "token", "create", "--name", "x",
                          "--scope", "write"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a scope" in bad.stderr
