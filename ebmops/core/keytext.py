"""Key material as people paste it: 32 raw bytes, or 64 hexadecimal characters.

Shared by the signing keys of bundles and desired states (``registry/signing.py``) and the audit-log key
derived from them (``ebmops/core/state/audit_key.py``); PEM and other encodings are each caller's next try.
"""

from __future__ import annotations


def raw32(value: str | bytes) -> bytes | None:
    """``value`` as 32 raw key bytes: itself when it is 32 bytes, decoded when it is 64 hex characters
    (surrounding whitespace ignored); None for anything else (PEM, say)."""
    if isinstance(value, bytes) and len(value) == 32:
        return value
    text = (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None
    return None
