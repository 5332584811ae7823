"""Who is acting, and whether they may change production.

A command that changes production (start, resume or roll back a rollout, approve or reject a wave,
sync a version to a region, override the sync policy) acts as an **operator** the control plane can
check, never as a free-text name:

* by default the operator is the OS login name of the process (from its user id, not from ``$USER``);
* with ``rollout.operator_keys`` set, the operator is the roster member whose Ed25519 public key
  matches the private key the process holds (``operator.key`` / ``operator.key_file``); a signature
  made with that key is checked against the roster's public key.

``--as NAME`` is only an assertion: it must equal the resolved operator, or the command is refused.
An operator off ``rollout.oncall_roster`` is refused **before anything is written**, and the refusal
is audited (kind ``refusal``).

Flows run by a Prefect worker have no person at a keyboard. A sync there that the policy does not
allow (a version that is not the region's approved one, or not gate-passed) needs an **override
token**: a document naming the action, version, regions and operator, signed by the operator's key
(or, for an OS-user operator, by the control plane's own key in the CLI process that checked them),
with an expiry. ``ebmops operator authorize sync VERSION`` prints one; the flow verifies it.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, Mapping, Sequence

from ebmops.core.errors import ConfigError, NotOnRoster, SignatureError, SyncNotApproved
from ebmops.core.settings import Settings

OVERRIDE_TYPE = "ebmops.override/1"


@dataclass(frozen=True)
class Operator:
    """A checked identity: ``name`` is on the roster's terms, ``how`` says what proved it."""

    name: str
    how: Literal["os-user", "ed25519"]

    def __str__(self) -> str:
        return self.name


def os_login() -> str:
    """The login name of this process's effective user id (``$USER`` can be set to anything)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid-{os.geteuid()}"


def _operator_private_key(settings: Settings) -> str | None:
    op = settings.operator
    if op.key is not None:
        return op.key.get_secret_value().strip()
    if op.key_file is not None:
        try:
            return op.key_file.expanduser().read_text().strip()
        except OSError as e:
            raise ConfigError(f"operator.key_file: cannot read {op.key_file}: {e}") from e
    return None


def resolve_operator(settings: Settings, claimed: str | None = None) -> Operator:
    """The operator this process acts as; ``claimed`` (``--as``) must match it.

    Raises:
        NotOnRoster: ``claimed`` names someone else, or the key matches no roster member.
        ConfigError: operator keys are configured but this process holds none (or an unreadable one).
    """
    keys = settings.rollout.operator_keys
    if not keys:
        me = Operator(os_login(), "os-user")
    else:
        private = _operator_private_key(settings)
        if not private:
            raise ConfigError("rollout.operator_keys is set, so commands that change production need your operator "
                              "key: set EBMOPS_OPERATOR__KEY or operator.key_file (create one with `ebmops operator "
                              "keygen`, then add its public half to rollout.operator_keys)")
        me = Operator(_key_holder(keys, private), "ed25519")
    if claimed is not None and claimed != me.name:
        proof = "your operator key" if me.how == "ed25519" else "your OS login"
        raise NotOnRoster(f"--as {claimed!r}: {proof} says you are {me.name!r}; --as cannot name someone else "
                          "(drop --as, or act from that person's account/key)")
    return me


def _key_holder(keys: dict[str, str], private: str) -> str:
    """The roster name whose public key verifies a signature made with ``private`` now."""
    from registry.signing import ed25519_key, public_key_hex

    try:
        mine = ed25519_key(private=private)
        pub = public_key_hex(private)
    except Exception as e:  # noqa: BLE001 - a malformed key is a configuration error, named
        raise ConfigError(f"operator.key: not an Ed25519 private key (64 hex characters or PEM): "
                          f"{type(e).__name__}") from None
    challenge = secrets.token_bytes(32)
    signature = mine.sign_bytes(challenge)
    for name, listed in keys.items():
        if listed.strip().lower() != pub:
            continue
        try:
            ed25519_key(public=listed.strip()).verify_bytes(challenge, signature, what="operator challenge")
        except SignatureError:
            continue
        return name
    raise NotOnRoster(f"your operator key (public {pub[:16]}...) is not in rollout.operator_keys; ask for it to be "
                      "added under your roster name")


def require_roster(settings: Settings, store, operator: Operator, action: str, *, model: str,
                   version: str | None = None, region: str | None = None, roster: Sequence[str] | None = None) -> None:
    """Refuse (and audit the refusal) unless ``operator`` is on the roster; nothing else is written."""
    allowed = list(roster or settings.rollout.oncall_roster)
    if operator.name in allowed:
        return
    if store is not None:
        store.append_audit("refusal", model=model, version=version, region=region, actor=operator.name,
                           payload={"action": action, "reason": "not on the on-call roster", "how": operator.how})
    raise NotOnRoster(f"{operator.name!r} ({operator.how}) may not {action}: not on the on-call roster "
                      f"({', '.join(allowed)}); nothing was changed and the refusal is audited")


# ---- override tokens: a roster member's authorisation a worker-run flow can check -----------------
def override_token(settings: Settings, operator: Operator, *, action: str, model: str, version: str,
                   regions: Sequence[str], comment: str | None = None, ttl_s: float = 3600.0) -> str:
    """A signed authorisation of ``action`` on ``model`` ``version`` in ``regions`` by ``operator``."""
    from registry.signing import ed25519_key, sign_document, signing_key

    now = datetime.now(timezone.utc)
    doc = {"type": OVERRIDE_TYPE, "action": action, "model": model, "version": version,
           "regions": sorted(regions), "operator": operator.name, "how": operator.how, "comment": comment,
           "issued_at": now.isoformat(), "expires_at": (now + timedelta(seconds=ttl_s)).isoformat()}
    key = ed25519_key(private=_operator_private_key(settings)) if operator.how == "ed25519" else signing_key(settings)
    return json.dumps(sign_document(doc, key), sort_keys=True, separators=(",", ":"))


def check_override(settings: Settings, token: str | Mapping, *, action: str, model: str, version: str,
                   regions: Sequence[str]) -> dict:
    """The verified override document (``token``: its JSON text, or the parsed object, as a Prefect
    parameter arrives), or SyncNotApproved naming what is wrong with it."""
    from registry.signing import ed25519_key, signing_key, verify_document

    try:
        doc = dict(token) if isinstance(token, Mapping) else json.loads(token)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise SyncNotApproved(f"override: not a token from `ebmops operator authorize` ({e})") from None
    name, how = doc.get("operator"), doc.get("how")
    if how == "ed25519":
        public = settings.rollout.operator_keys.get(name or "")
        if public is None:
            raise SyncNotApproved(f"override: signed by {name!r}, who has no key in rollout.operator_keys")
        key = ed25519_key(public=public)
    elif how == "os-user" and not settings.rollout.operator_keys:
        key = signing_key(settings, verify_only=True)
    else:
        raise SyncNotApproved(f"override: made as {how!r}, which this control plane does not accept"
                              + (" (operator keys are configured)" if settings.rollout.operator_keys else ""))
    try:
        verify_document(doc, key, what="override token")
    except SignatureError as e:
        raise SyncNotApproved(f"override: {e}") from None
    wanted = {"type": OVERRIDE_TYPE, "action": action, "model": model, "version": version}
    wrong = {k: doc.get(k) for k, v in wanted.items() if doc.get(k) != v}
    if wrong:
        raise SyncNotApproved(f"override: it authorises {wrong}, not {({k: wanted[k] for k in wrong})}")
    outside = sorted(set(regions) - set(doc.get("regions") or []))
    if outside:
        raise SyncNotApproved(f"override: it does not cover regions {outside} (it names {doc.get('regions')})")
    try:
        expired = datetime.fromisoformat(doc["expires_at"]) <= datetime.now(timezone.utc)
    except (KeyError, TypeError, ValueError):
        expired = True
    if expired:
        raise SyncNotApproved(f"override: expired at {doc.get('expires_at')}; authorise again")
    if name not in settings.rollout.oncall_roster:
        raise SyncNotApproved(f"override: {name!r} is not on the on-call roster")
    return doc


def own_override(settings: Settings, *, version: str, regions: Sequence[str], comment: str,
                 model: str | None = None) -> str:
    """A sync override made by this process's operator (who must be on the roster): for scripts and
    benchmarks that call the ``sync`` flow in-process, as ``ebmops sync --override`` does."""
    operator = resolve_operator(settings)
    require_roster(settings, None, operator, f"override a sync of v{version}", model=model or "")
    return override_token(settings, operator, action="sync", model=model or settings.registry.model_name,
                          version=version, regions=regions, comment=comment, ttl_s=600)
