"""Signing of sync documents (bundle manifests, desired states).

A document is a JSON object. Its signature covers the *canonical* JSON of every field except
``signature`` itself: keys sorted, no spaces, UTF-8, no NaN. Canonical form makes the bytes
independent of who serialised the object, so a verifier re-derives them from the parsed JSON.
Each document also carries a ``type`` field inside the signed bytes, so a signature made for one
kind of document cannot be replayed as another.

Two algorithms:

* ``hmac-sha256`` (default): one shared secret signs and verifies. Simple; every node that can
  verify could also sign.
* ``ed25519``: the control plane holds the private key; nodes get only the public key
  (``sync.verify_key``) and cannot forge a document.

The signature is stored as ``{"alg", "key_id", "value"}``. The verifier never trusts ``alg``
from the document: it must equal its own key's algorithm (no downgrade), and ``key_id`` tells
an operator which key signed when keys were rotated. Comparison is constant time.

Keys come from settings (``sync.signing_key``, env ``EBMOPS_SYNC__SIGNING_KEY``, or
``sync.signing_key_file``). Outside ``sync.dev_mode`` a missing key is an error naming the
setting; in dev mode a fixed, public key is used and a warning logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ebmops.core.errors import ConfigError, SignatureError, SigningKeyMissing
from ebmops.core.keytext import raw32

log = logging.getLogger(__name__)

HMAC = "hmac-sha256"
ED25519 = "ed25519"
MIN_HMAC_KEY_BYTES = 32
# Public on purpose: documents signed with it are accepted only by processes in dev mode.
DEV_SECRET = b"ebmops-dev-mode-signing-key-NOT-SECRET-do-not-use-in-production"
_KEY_HELP = "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"


def canonical_json(obj: Any) -> bytes:
    """The bytes a signature covers: sorted keys, no whitespace, UTF-8, finite numbers only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class SigningKey:
    """A key that verifies, and (unless ``can_sign`` is False) signs, sync documents."""

    alg: str
    key_id: str
    _sign: Callable[[bytes], bytes] | None = field(repr=False)
    _verify: Callable[[bytes, bytes], bool] = field(repr=False)
    dev: bool = False

    @property
    def can_sign(self) -> bool:
        return self._sign is not None

    def sign_bytes(self, payload: bytes) -> dict[str, str]:
        if self._sign is None:
            raise ConfigError(f"key {self.key_id} ({self.alg}) can only verify: signing needs the private key "
                              "in EBMOPS_SYNC__SIGNING_KEY")
        return {"alg": self.alg, "key_id": self.key_id, "value": self._sign(payload).hex()}

    def verify_bytes(self, payload: bytes, signature: Any, *, what: str = "document") -> None:
        """Raise SignatureError unless ``signature`` is this key's valid signature of ``payload``."""
        if not isinstance(signature, Mapping) or not all(
                isinstance(signature.get(k), str) for k in ("alg", "key_id", "value")):
            raise SignatureError(f"{what} is unsigned or its signature is malformed")
        if signature["alg"] != self.alg:
            raise SignatureError(f"{what} is signed with {signature['alg']}, but this process verifies {self.alg} "
                                 "(sync.signing_algorithm must match the control plane's)")
        try:
            value = bytes.fromhex(signature["value"])
        except ValueError:
            raise SignatureError(f"{what} has a signature that is not hex") from None
        if not self._verify(payload, value):
            rotated = "" if signature["key_id"] == self.key_id else (
                f"; it names key {signature['key_id']} but this process holds key {self.key_id} (key rotated?)")
            raise SignatureError(f"{what} fails signature verification: it was modified or signed with another key"
                                 + rotated)


def hmac_key(secret: bytes | str, *, dev: bool = False) -> SigningKey:
    """An HMAC-SHA256 key from a shared secret (at least 32 bytes)."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(raw) < MIN_HMAC_KEY_BYTES:
        raise ConfigError(f"the HMAC signing key has {len(raw)} bytes; use at least {MIN_HMAC_KEY_BYTES} ({_KEY_HELP})")
    key_id = hashlib.sha256(b"ebmops-key-id:" + raw).hexdigest()[:16]

    def _sign(payload: bytes) -> bytes:
        return hmac.new(raw, payload, hashlib.sha256).digest()

    def _verify(payload: bytes, value: bytes) -> bool:
        return hmac.compare_digest(_sign(payload), value)

    return SigningKey(HMAC, key_id, _sign, _verify, dev)


def ed25519_key(private: str | bytes | None = None, public: str | bytes | None = None, *,
                dev: bool = False) -> SigningKey:
    """An Ed25519 key: ``private`` (signs and verifies) or only ``public`` (verifies).

    Each is 32 raw bytes, 64 hex characters, or PEM text.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    try:
        if private is not None:
            raw = raw32(private)
            priv = (Ed25519PrivateKey.from_private_bytes(raw) if raw is not None else
                    serialization.load_pem_private_key(private.encode() if isinstance(private, str) else private, None))
            if not isinstance(priv, Ed25519PrivateKey):
                raise ValueError("not an Ed25519 private key")
            pub = priv.public_key()
        elif public is not None:
            raw = raw32(public)
            pub = (Ed25519PublicKey.from_public_bytes(raw) if raw is not None else
                   serialization.load_pem_public_key(public.encode() if isinstance(public, str) else public))
            if not isinstance(pub, Ed25519PublicKey):
                raise ValueError("not an Ed25519 public key")
            priv = None
        else:
            raise ValueError("give a private or a public key")
    except (ValueError, TypeError) as e:
        raise ConfigError(f"cannot read the Ed25519 key: {e}; give 64 hex characters or PEM") from e
    pub_raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(pub_raw).hexdigest()[:16]

    def _verify(payload: bytes, value: bytes) -> bool:
        try:
            pub.verify(value, payload)
            return True
        except InvalidSignature:
            return False

    return SigningKey(ED25519, key_id, priv.sign if priv is not None else None, _verify, dev)


def public_key_hex(key_pem_or_hex: str) -> str:
    """The Ed25519 public key (hex) for a private key, to hand to nodes as ``sync.verify_key``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text = key_pem_or_hex.strip()
    priv = (Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text)) if len(text) == 64
            else serialization.load_pem_private_key(text.encode(), None))
    return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


_dev_warned = False


def signing_key(settings, *, verify_only: bool = False) -> SigningKey:
    """The sync key from settings.

    Args:
        settings: resolved ``ebmops.core.settings.Settings``.
        verify_only: a node that only verifies; with ed25519 it may hold just ``sync.verify_key``.
    Raises:
        SigningKeyMissing: no key configured and ``sync.dev_mode`` is off (names the setting).
        ConfigError: the key is unreadable or too short.
    """
    sync = settings.sync
    secret: str | None = sync.signing_key.get_secret_value() if sync.signing_key else None
    if secret is None and sync.signing_key_file is not None:
        try:
            secret = sync.signing_key_file.expanduser().read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read sync.signing_key_file {sync.signing_key_file}: {e}") from e
    if sync.signing_algorithm == ED25519:
        if secret:
            return ed25519_key(private=secret)
        if verify_only and sync.verify_key:
            return ed25519_key(public=sync.verify_key)
    elif secret:
        return hmac_key(secret)
    if sync.dev_mode:
        global _dev_warned
        if not _dev_warned:  # once per process: a rollout asks for the key at every step
            _dev_warned = True
            log.warning("sync.dev_mode is on: signing and verifying with the public development key; "
                        "anyone can forge bundles. Set EBMOPS_SYNC__SIGNING_KEY outside development.")
        seed = hashlib.sha256(DEV_SECRET).digest()
        return ed25519_key(private=seed, dev=True) if sync.signing_algorithm == ED25519 else hmac_key(DEV_SECRET, dev=True)
    wanted = ("EBMOPS_SYNC__VERIFY_KEY (the Ed25519 public key) or EBMOPS_SYNC__SIGNING_KEY"
              if verify_only and sync.signing_algorithm == ED25519 else "EBMOPS_SYNC__SIGNING_KEY")
    raise SigningKeyMissing(f"no sync signing key: set {wanted}, or sync.signing_key / sync.signing_key_file in "
                            f"the config file ({_KEY_HELP}); for local development only, EBMOPS_SYNC__DEV_MODE=true "
                            "uses a public key")


def sign_document(doc: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """A copy of ``doc`` with ``signature`` set over the canonical JSON of its other fields."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    return {**body, "signature": key.sign_bytes(canonical_json(body))}


def verify_document(doc: Mapping[str, Any], key: SigningKey, *, what: str = "document") -> dict[str, Any]:
    """Check ``doc``'s signature; return the document without it. Raises SignatureError."""
    if not isinstance(doc, Mapping):
        raise SignatureError(f"{what} is not a JSON object")
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        payload = canonical_json(body)
    except ValueError as e:
        raise SignatureError(f"{what} holds values that cannot be signed: {e}") from e
    key.verify_bytes(payload, doc.get("signature"), what=what)
    return body
