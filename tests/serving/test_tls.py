"""A node serving HTTPS; the control plane trusts it through serving.tls_ca_file, and only then."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ebmops.core.errors import ConfigError
from ebmops.core.settings import load_settings
from ebmops.adapters.nodes import node_reports
from tests.serving.conftest import REGION, publish, set_desired


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path):
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ebmops test CA")])
    ca = _cert("ebmops test CA", ca_key, ca_name, ca_key, ca=True)
    cert = _cert("node", ca_key, ca_name, key, ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(pem))
    (tmp_path / "tls.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path


def test_node_serves_https_and_the_control_plane_needs_the_ca(pki, tmp_path, store, key, node_factory):
    publish(store, key, tmp_path, "1")
    set_desired(store, key, "1")
    settings = load_settings(home=tmp_path / "home", serving={
        "poll_interval_s": 30.0, "tls_cert_file": str(pki / "tls.crt"), "tls_key_file": str(pki / "tls.key"),
        "tls_ca_file": str(pki / "ca.pem")})
    with node_factory(settings=settings) as n:
        assert n.url.startswith("https://")
        n.wait_ready()
        trusting = load_settings(home=tmp_path / "cp", serving={"node_urls": {REGION: n.url},
                                                                "tls_ca_file": str(pki / "ca.pem")})
        assert node_reports(trusting, [REGION])[REGION].stable_version == "1"
        untrusting = load_settings(home=tmp_path / "cp", serving={"node_urls": {REGION: n.url}})
        rep = node_reports(untrusting, [REGION])[REGION]
        assert not rep.reachable and "CERTIFICATE_VERIFY_FAILED" in rep.error


def test_tls_settings_come_in_pairs_and_must_exist(tmp_path):
    with pytest.raises(Exception, match="tls_cert_file and serving.tls_key_file go together"):
        load_settings(home=tmp_path, serving={"tls_cert_file": str(tmp_path / "x.crt")})
    from serving.node import uvicorn_config

    s = load_settings(home=tmp_path, serving={"tls_cert_file": str(tmp_path / "x.crt"),
                                              "tls_key_file": str(tmp_path / "x.key")})
    with pytest.raises(ConfigError, match="tls_cert_file .* does not exist"):
        uvicorn_config(object(), host="127.0.0.1", port=1, settings=s)
