"""A node with tokens, on real HTTP: scopes (401/403), rotation, per-client rate limits, bounded bodies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import yaml

from ebmops.core.settings import load_settings
from serving.auth import config_line, new_token
from tests.registry.sync_fixtures import FEATURES
from tests.servers import free_port
from tests.serving.conftest import publish, set_desired

EVENT = [0.0] * len(FEATURES)


def _tokens(**scopes: list[str]) -> tuple[dict[str, str], list[dict]]:
    """A token per name, and the hashed entries a node is configured with."""
    tokens = {name: new_token() for name in scopes}
    entries = [yaml.safe_load(config_line(n, tokens[n], s))[0] for n, s in scopes.items()]
    return tokens, entries


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(tmp_path, store, key, node_factory):
    """A ready node with tokens: scorer (score), reader (read), ops (read, admin), limited (score, 2 req/s)."""
    tokens, entries = _tokens(scorer=["score"], reader=["read"], ops=["read", "admin"], limited=["score"])
    entries[-1]["requests_per_s"] = 2.0
    settings = load_settings(home=tmp_path / "home", serving={
        "poll_interval_s": 30.0, "max_body_bytes": 64 * 1024, "body_timeout_s": 1.0,
        "auth": {"tokens": entries, "burst_s": 1.0}})
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    with node_factory(settings=settings) as n:
        n.wait_ready()
        yield n, tokens


def test_no_token_is_401_on_score_read_and_admin_naming_the_scope(secured):
    n, _ = secured
    for method, path, scope in [("POST", "/score", "score"), ("GET", "/stats", "read"), ("GET", "/recent", "read"),
                                ("GET", "/v1/models", "read"), ("POST", "/admin/reload", "admin")]:
        r = n.client.request(method, path, json={"events": [EVENT]} if path == "/score" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["required_scope"] == scope
        assert "Bearer" in r.headers["www-authenticate"]
    r = n.client.post("/score", json={"events": [EVENT]}, headers=_auth("ebm_not-a-real-token"))
    assert r.status_code == 401 and "not valid" in r.json()["reason"]
    # the probes and /metrics stay open by default: kubelets and Prometheus carry no token
    assert n.client.get("/healthz").status_code == 200
    assert n.client.get("/readyz").status_code == 200
    assert n.client.get("/metrics").status_code == 200


def test_wrong_scope_is_403_and_the_right_scope_is_served(secured):
    n, t = secured
    r = n.client.post("/score", json={"events": [EVENT]}, headers=_auth(t["reader"]))
    assert r.status_code == 403
    assert r.json()["required_scope"] == "score" and r.json()["scopes"] == ["read"] and r.json()["client"] == "reader"
    assert n.client.post("/admin/reload", headers=_auth(t["reader"])).status_code == 403
    assert n.client.get("/recent", headers=_auth(t["scorer"])).status_code == 403
    assert n.client.post("/score", json={"events": [EVENT]}, headers=_auth(t["scorer"])).status_code == 200
    assert n.client.get("/stats", headers=_auth(t["reader"])).status_code == 200
    models = n.client.get("/v1/models", headers=_auth(t["reader"])).json()
    assert [m["version"] for m in models["data"]] == ["1"]
    assert n.client.post("/admin/reload", headers=_auth(t["ops"])).status_code == 200
    metrics = n.client.get("/metrics").text
    assert 'ebmops_node_client_requests_total{client="reader",outcome="forbidden"} 2.0' in metrics
    assert 'ebmops_node_client_requests_total{client="scorer",outcome="ok"} 1.0' in metrics
    assert 'ebmops_node_client_events_total{client="scorer"} 1.0' in metrics


def test_a_burst_over_the_limit_gets_429_while_another_token_is_served(secured):
    n, t = secured
    statuses = []
    for _ in range(6):  # the bucket holds 2 requests and refills 2 per second: a tight burst of 6 overflows it
        r = n.client.post("/score", json={"events": [EVENT]}, headers=_auth(t["limited"]))
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["limit"] == "requests_per_s" and r.json()["client"] == "limited"
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    for _ in range(10):  # another client is not limited by it
        assert n.client.post("/score", json={"events": [EVENT]}, headers=_auth(t["scorer"])).status_code == 200
    metrics = n.client.get("/metrics").text
    assert 'ebmops_node_client_requests_total{client="limited",outcome="rate_limited"} 1.0' in metrics


def test_the_event_bucket_limits_events_not_requests(tmp_path, store, key, node_factory):
    tokens, entries = _tokens(bulk=["score"])
    entries[0]["events_per_s"] = 100.0
    settings = load_settings(home=tmp_path / "home", serving={"poll_interval_s": 30.0, "auth": {"tokens": entries}})
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    with node_factory(settings=settings) as n:
        n.wait_ready()
        big = {"events": [EVENT] * 150}
        first = n.client.post("/score", json=big, headers=_auth(tokens["bulk"]))
        assert first.status_code == 200  # admitted while the bucket is positive, then it owes 50 events
        second = n.client.post("/score", json=big, headers=_auth(tokens["bulk"]))
        assert second.status_code == 429 and second.json()["limit"] == "events_per_s"


def _raw(url: str, request: bytes, *, then: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send ``request`` (headers and a first part of the body) on a raw socket, then ``then``; the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        if then:
            try:
                s.sendall(then)
            except OSError:
                pass  # the node closed the connection: what an oversized body should get
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_an_oversized_body_is_refused_from_its_content_length_unread(secured):
    n, t = secured
    head = (f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {50 * 1024 * 1024}"
            f"\r\nAuthorization: Bearer {t['scorer']}\r\n\r\n").encode()
    answer = _raw(n.url, head + b'{"events": [')  # 50 MB announced, a dozen bytes sent: the answer comes anyway
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower() and b"max_body_bytes" in answer
    # a chunked body (no Content-Length) is read up to the cap and no further
    chunk = b"x" * 32768
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
    head = (f"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Authorization: Bearer {t['scorer']}\r\n\r\n").encode()
    answer = _raw(n.url, head, then=body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert n.client.get("/healthz").status_code == 200
    assert n.node.metrics.errors.labels(kind="too-large")._value.get() == 2


def test_a_body_that_does_not_arrive_is_dropped(secured):
    n, t = secured
    head = (f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
            f"Authorization: Bearer {t['scorer']}\r\n\r\n").encode()
    answer = _raw(n.url, head + b'{"events": [[')  # 13 of 1000 bytes, then silence past body_timeout_s
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout_s" in answer
    assert n.node.metrics.errors.labels(kind="body-timeout")._value.get() == 1


def test_tokens_rotate_from_the_file_without_a_restart(tmp_path, store, key, node_factory):
    old, new = new_token(), new_token()
    path = tmp_path / "tokens.yaml"

    def write(*tokens: str) -> None:
        entries = [yaml.safe_load(config_line("app", tok, ["score"]))[0] for tok in tokens]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump({"tokens": entries}))
        os.replace(tmp, path)  # how a mounted Secret changes: a new file swapped in

    write(old)
    settings = load_settings(home=tmp_path / "home", serving={
        "poll_interval_s": 30.0, "auth": {"tokens_file": str(path), "reload_s": 0.05}})
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")

    def status(tok: str) -> int:
        return n.client.post("/score", json={"events": [EVENT]}, headers=_auth(tok)).status_code

    def until(check, what: str) -> None:
        deadline = time.monotonic() + 20
        while not check():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    with node_factory(settings=settings) as n:
        n.wait_ready()
        assert (status(old), status(new)) == (200, 401)
        write(old, new)  # both valid while clients move over
        until(lambda: status(new) == 200, "the new token was not picked up")
        assert status(old) == 200
        write(new)  # the old one is retired
        until(lambda: status(old) == 401, "the old token stayed valid")
        assert status(new) == 200
        path.write_text("tokens: [{name: app}]")  # a broken file keeps the current table
        guard = n.node.guard
        until(lambda: guard.checked_signature == guard.file_signature(), "the broken file was not read")
        assert status(new) == 200


def _node_process(tmp_path, env_extra: dict, *args: str) -> subprocess.Popen:
    env = {**os.environ, "EBMOPS_HOME": str(tmp_path / "home"), "EBMOPS_SYNC__SIGNING_KEY": "s" * 40, **env_extra}
    env.pop("EBMOPS_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "ebmops.cli.main", "node", "--region", "eu-west", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_node_without_tokens_refuses_a_public_address_and_says_why(tmp_path):
    proc = _node_process(tmp_path, {}, "--host", "0.0.0.0", "--port", str(free_port()))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "no tokens are configured" in out and "serving.auth.insecure_bind" in out


@pytest.mark.slow
def test_node_process_with_tokens_binds_all_addresses_and_logs_json_without_secrets(tmp_path):
    from registry.objectstore.factory import store_for_region
    from registry.signing import hmac_key

    home = tmp_path / "home"
    store = store_for_region(load_settings(home=home), "eu-west")
    key = hmac_key("s" * 40)
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    token = new_token()
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text(yaml.safe_dump({"tokens": [yaml.safe_load(config_line("cp", token, ["read", "admin",
                                                                                              "score"]))[0]]}))
    port = free_port()
    proc = _node_process(tmp_path, {"EBMOPS_SERVING__AUTH__TOKENS_FILE": str(tokens_file),
                                    "EBMOPS_SERVING__LOG_FORMAT": "json", "EBMOPS_SERVING__POLL_INTERVAL_S": "0.2"},
                         "--host", "0.0.0.0", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "node did not become ready"
            time.sleep(0.1)
        assert httpx.post(f"{url}/admin/reload").status_code == 401
        assert httpx.post(f"{url}/admin/reload", headers=_auth(token)).status_code == 200
        r = httpx.post(f"{url}/score", json={"events": [EVENT]}, headers=_auth(token))
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    import json

    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    served = [x for x in lines if x.get("event") == "served"]
    assert served and served[0]["region"] == "eu-west" and served[0]["version"] == "1"
    assert served[0]["model"] == "ebm-kdd99" and served[0]["generation"] == 1
    assert token not in out
    assert np.isfinite(r.json()["energies"][0])


def test_config_show_never_prints_the_control_planes_token(tmp_path):
    token = new_token()
    env = {**os.environ, "EBMOPS_HOME": str(tmp_path), "EBMOPS_SERVING__CLIENT_TOKEN": token}
    env.pop("EBMOPS_CONFIG", None)
    out = subprocess.run([sys.executable, "-m", "ebmops.cli.main", "config", "show", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert token not in out.stdout + out.stderr and '"client_token": "**********"' in out.stdout
