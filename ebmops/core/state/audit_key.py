"""The audit key: what makes an audit record or checkpoint something a database writer cannot forge.

The audit log's hash chain (audit.py) shows that a record changed, unless whoever changed it also
recomputed every later hash, which anyone who can write to the database can do. So every record
also carries a MAC (HMAC-SHA256) made with a key the database does not hold:

    audit key = HMAC-SHA256(key=<the control plane's sync signing secret>, msg="ebmops audit-log key v1")

The secret is ``sync.signing_key`` (or ``sync.signing_key_file``), the one the control plane already
signs bundles and desired states with; the label separates the two uses, so a MAC of the audit log
is never a valid bundle signature and the other way round. With ``sync.signing_algorithm: ed25519``
the secret is the Ed25519 private key, taken as its 32 raw bytes (hex and PEM give the same key).
Nodes never hold the secret with ed25519 (only the public key), and with hmac-sha256 they do:
keep the state store's writers and the nodes apart, or use ed25519 (README, "Audit log").

Every MAC input starts with a context (``record`` or ``checkpoint``) so a record's MAC is never
a valid checkpoint's. ``key_id`` (16 hex characters of a hash of the derived key) is stored with
each record and checkpoint, to say which key made it when keys were rotated.

Without a secret and outside ``sync.dev_mode`` there is no audit key: records are written
without a MAC (with a warning) and ``ebmops audit verify`` refuses to run. In dev mode the key
is derived from a fixed, public secret: MACs then prove nothing, and verify says so.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field

from ebmops.core.errors import ConfigError
from ebmops.core.keytext import raw32

log = logging.getLogger(__name__)

LABEL = b"ebmops audit-log key v1"
# Public on purpose, like the sync layer's development key: MACs made with it prove nothing.
DEV_SECRET = b"ebmops-dev-mode-audit-secret-NOT-SECRET-do-not-use-in-production"
RECORD = "record"
CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class AuditKey:
    """An HMAC-SHA256 key for audit records and checkpoints. ``dev``: derived from the public dev secret."""

    key_id: str
    _key: bytes = field(repr=False)
    dev: bool = False

    def mac(self, context: str, payload: bytes) -> str:
        """The hex MAC of ``payload`` in ``context`` (``record`` or ``checkpoint``)."""
        return hmac.new(self._key, context.encode("ascii") + b"\n" + payload, hashlib.sha256).hexdigest()

    def check(self, context: str, payload: bytes, mac: str | None) -> bool:
        """Whether ``mac`` is this key's MAC of ``payload`` in ``context`` (constant time)."""
        return isinstance(mac, str) and hmac.compare_digest(self.mac(context, payload), mac)


def derive(secret: bytes, *, dev: bool = False) -> AuditKey:
    """The audit key of a signing secret (domain-separated from every other use of that secret)."""
    key = hmac.new(bytes(secret), LABEL, hashlib.sha256).digest()
    return AuditKey(hashlib.sha256(b"ebmops-audit-key-id:" + key).hexdigest()[:16], key, dev)


def _ed25519_seed(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 private key given as 64 hex characters or PEM."""
    raw = raw32(text)
    if raw is not None:
        return raw
    text = text.strip()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        priv = serialization.load_pem_private_key(text.encode(), None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"sync.signing_key: cannot read the Ed25519 private key for the audit key: {e}; give "
                          "64 hex characters or PEM") from e
    if not isinstance(priv, Ed25519PrivateKey):
        raise ConfigError("sync.signing_key is not an Ed25519 private key (sync.signing_algorithm is ed25519)")
    return priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                              serialization.NoEncryption())


_warned: set[str] = set()


def _warn_once(what: str, message: str) -> None:
    if what not in _warned:  # once per process: every append asks
        _warned.add(what)
        log.warning("%s", message)


def audit_key_from_settings(settings) -> AuditKey | None:
    """The audit key of the control plane, or None when no signing secret is configured (and not dev mode).

    Raises:
        ConfigError: the key file cannot be read, or an Ed25519 key cannot be parsed.
    """
    sync = settings.sync
    secret = sync.signing_key.get_secret_value() if sync.signing_key else None
    if secret is None and sync.signing_key_file is not None:
        try:
            secret = sync.signing_key_file.expanduser().read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read sync.signing_key_file {sync.signing_key_file}: {e}") from e
    if secret:
        raw = _ed25519_seed(secret) if sync.signing_algorithm == "ed25519" else secret.encode("utf-8")
        return derive(raw)
    if sync.dev_mode:
        _warn_once("dev", "sync.dev_mode is on: audit records are MACed with a public development key; anyone "
                          "can forge them. Set EBMOPS_SYNC__SIGNING_KEY outside development.")
        return derive(DEV_SECRET, dev=True)
    return None


def warn_unkeyed() -> None:
    _warn_once("none", "no sync signing key: audit records are written without a MAC, so a database writer can "
                       "rewrite them unnoticed. Set EBMOPS_SYNC__SIGNING_KEY (the control plane's signing key).")
