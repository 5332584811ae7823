"""The node's HTTP surface (FastAPI). One node process serves every model of its region: the
default model (settings.registry.model_name) always, and each model whose signed desired state is in
the region's store (``desired/<model>.json``, listed on every reload, at start and every
serving.discover_interval_s of polls; serving.models, when set, limits which). Each model has its own
state, reconciler, canary split, stats, recent events, metrics (label ``model``) and warm-up; a
refused document or bundle of one never touches another.

    POST /score                     the default model: energies, anomaly flags, serving version of each event
    POST /v1/models/{model}/score   the same for ``model``
    GET  /healthz                   the process is alive
    GET  /readyz                    200 once the models found at start warmed up and one serves; lists each
    GET  /metrics                   Prometheus text (the app's own registry)
    GET  /stats, /v1/models/{model}/stats     what is served, the latest refusal, recent latencies and
                                    energies per version (default model, or ``model``)
    GET  /recent, /v1/models/{model}/recent   the newest kept events and their energies (drift, hotfixes)
    GET  /v1/models                 every model: versions, roles, weights, features, ready
    GET  /v1/models/{model}         one of them; an unknown model is a 404 naming the served ones
    POST /admin/reload              reconcile every model now (``?model=`` one)

With tokens configured (serving.auth, see serving/auth.py) every request but the public probes
needs a bearer token with the path's scope, checked in ``NodeApp.__call__`` before any routing,
and is counted and rate-limited per client. ``/score`` bodies are bounded: a Content-Length over
serving.max_body_bytes is refused before a byte of the body is read, a body without one is read
up to that cap, and one that has not arrived within serving.body_timeout_s is dropped; each of
those answers closes the connection, so the unread rest costs nothing.

Bodies are parsed from bytes with orjson and answered with orjson: pydantic request models
would cost more than scoring a 1-event request. For the same reason ``POST /score`` does not go
through FastAPI at all: ``NodeApp`` (a FastAPI subclass) answers exactly that method and path,
and ``POST /v1/models/{model}/score``, as a bare ASGI handler before Starlette's middleware and
routing (about 40 % of a 1-event request's CPU), and hands every other request, other methods on
/score included, to FastAPI, whose score routes stay registered (they answer 405 for other methods,
and serve POST should the app be mounted under a prefix). Both paths run
``ModelServer.handle_score``: same statuses, bodies, metrics.
``/score`` takes a JSON body or, with ``Content-Type: application/x-ebmops-f32``, raw float32 rows
(serving.payload); both become one ``ScoreRequest`` and are scored, counted and recorded alike. A
request that sends ``Accept: application/x-ebmops-f32`` gets the energies as float32 bytes when one
version scored the whole batch (headers x-ebmops-versions, -generation, -threshold), else JSON.
Nothing a client sends can take the node down: bad input is a 4xx naming the field, and anything
unexpected a counted 500 with a JSON body.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable, NamedTuple

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from ebmops.core.errors import ConfigError, StoreError
from ebmops.core.settings import REGION_NAME_PATTERN, Settings
from registry.desired_state import desired_models
from registry.manifest import NAME_PATTERN
from registry.objectstore.base import ObjectStore
from registry.signing import SigningKey
from serving.auth import Client, Denial, TokenGuard, scope_of
from serving.batcher import MicroBatcher
from serving.logs import note
from serving.metrics import EnergyShift, NodeMetrics, RecentStats
from serving.recent import RecentEvents
from serving.model import LoadedModel
from serving.payload import F32, InputError, parse_request
from serving.router import route, route_random
from serving.trust import trusted_models
from serving.state import NodeState, Reconciler, ReconcileResult, Refusal, Serving, is_refusal_of_bundle

log = logging.getLogger(__name__)
JSON = "application/json"
SCORE_PATH = "/score"
# A request of at most this many events that finds the micro-batcher idle is scored on the event
# loop (MicroBatcher.inline_max_events): cheaper than the thread hand-overs for tiny batches.
INLINE_MAX_EVENTS = 8
# A refused /score body up to this size is left for the HTTP parser to skip (the connection stays
# open for the client's next request); a larger or unknown one closes the connection instead.
SMALL_BODY = 65536
_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=_DUMPS_OPTS), status_code=status, media_type=JSON, headers=headers)


class Reply(NamedTuple):
    """A /score answer, independent of the web framework: status, body bytes (JSON unless
    ``media_type`` says otherwise), extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    media_type: str = JSON

    @classmethod
    def json(cls, body: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> "Reply":
        return cls(status, orjson.dumps(body, option=_DUMPS_OPTS), headers)

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type=self.media_type, headers=dict(self.headers))

    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        """What Starlette's ``Response`` would send: content-length, content-type, then the extras."""
        return [(b"content-length", str(len(self.body)).encode()), (b"content-type", self.media_type.encode()),
                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers)]


MIN_SHIFT_EVENTS = 100  # fewer recent energies give a Δ too noisy to export
MODELS_PREFIX = "/v1/models/"


class UnknownModel(LookupError):
    """A path names a model this node does not serve."""

    def __init__(self, model: str, served: list[str]):
        super().__init__(model)
        self.model, self.served = model, served

    def reply(self) -> "Reply":
        return Reply.json({"error": "unknown model", "field": "model", "model": self.model, "served": self.served,
                           "reason": f"this node serves no model {self.model!r}; it serves "
                                     f"{', '.join(self.served) or 'none yet'} (a model is served once its desired "
                                     "state is in the region's store, and serving.models, when set, names it)"}, 404)


class ModelServer:
    """One model of a node: its state and reconciler, its recent stats and events, its metrics; the
    scoring of its requests. Nothing in it touches another model's."""

    def __init__(self, node: "Node", name: str):
        cfg = node.cfg
        self.node = node
        self.name = name
        self.region = node.region
        self.cfg = cfg
        self.state = NodeState(node.region, name)
        self.metrics = node.node_metrics.model(name)
        self.stats = RecentStats(cfg.stats_window)
        self.recent = RecentEvents(cfg.recent_events, cfg.recent_keep_every) if cfg.recent_events else None
        self.reconciler = Reconciler(self.state, node.store, node.key,
                                     install_dir=node.settings.node_install_dir(node.region),
                                     cache_dir=node.settings.blob_cache_dir, metrics=self.metrics)
        self.batcher = node.batcher
        self.guard = node.guard
        self.checked = False  # one reconcile has run to its end (applied, refused or nothing desired): warmed up
        self._rng = np.random.default_rng()
        self._requests_by_status: dict[int, Any] = {}  # labelled children, looked up once
        self._events_by_version: dict[str, tuple[Any, tuple[str, str]]] = {}  # counter, histogram key
        self._energies = node.node_metrics.energies

    def reconcile(self) -> ReconcileResult:
        """One reconcile of this model (blocking; the node runs it in its reconcile thread)."""
        try:
            return self.reconciler.reconcile()
        finally:
            self.checked = True

    # ---- scoring --------------------------------------------------------------------------
    async def handle_score(self, read_body: Callable[[], Awaitable[bytes]], content_type: str | None = None,
                           accept: str | None = None, admit: Client | None = None,
                           request_id: str | None = None) -> Reply:
        """One score request of this model, whatever serves it: the reply, counted by status; never raises.
        ``admit``: the client whose event bucket is charged once the request's events are counted."""
        t0 = time.perf_counter()
        try:
            reply = await self.score(await read_body(), content_type, accept, admit)
        except InputError as e:  # the body itself was refused (too large, too slow): close, leave the rest unread
            self.metrics.errors.labels(kind="too-large" if e.status == 413 else "body-timeout").inc()
            note(log, logging.WARNING, f"/score body refused: {e.reason}", region=self.region,
                 model=self.name, request_id=request_id, status=e.status)
            reply = Reply.json(e.body(), e.status, headers=(("Connection", "close"),))
        except Exception as e:  # noqa: BLE001 - counted and answered here, never a dropped connection
            serving = self.state.serving
            note(log, logging.ERROR, "/score failed", exc_info=True, region=self.region, model=self.name,
                 version=serving.stable.version if serving else None,
                 generation=serving.generation if serving else None, request_id=request_id)
            self.metrics.errors.labels(kind="internal").inc()
            reply = Reply.json({"error": "internal error", "field": None, "reason": f"{type(e).__name__}: {e}"}, 500)
        counter = self._requests_by_status.get(reply.status)
        if counter is None:
            counter = self._requests_by_status[reply.status] = self.metrics.requests.labels(status=str(reply.status))
        counter.inc()
        if reply.status != 200:
            self.metrics.latency.observe(time.perf_counter() - t0)
        return reply

    async def score(self, raw: bytes, content_type: str | None = None, accept: str | None = None,
                    admit: Client | None = None) -> Reply:
        """Score a score body (JSON, or float32 rows when ``content_type`` is ``F32``)."""
        serving = self.state.serving  # captured once: this request is served by this snapshot throughout
        if serving is None:
            self.metrics.errors.labels(kind="no-model").inc()
            err = self.state.last_error
            return Reply.json({"error": "no model loaded", "field": None,
                               "reason": f"the node has not loaded a verified version of {self.name} yet"
                                         + (f"; latest refusal: {err.message}" if err else ""),
                               "region": self.region, "model": self.name}, 503, headers=(("Retry-After", "1"),))
        t0 = time.perf_counter()
        schema, positional = _schema(serving)
        try:
            req = parse_request(raw, content_type, schema, max_events=self.cfg.max_batch_events,
                                positional=positional,
                                categorical=serving.stable.categorical + (serving.canary.categorical
                                                                          if serving.canary is not None else ()))
        except InputError as e:
            self.metrics.errors.labels(kind={400: "bad-json", 413: "too-large"}.get(e.status, "invalid-input")).inc()
            return Reply.json(e.body(), e.status)
        if admit is not None:
            denial = self.guard.admit_events(admit, req.n)
            if denial is not None:
                return Reply.json(denial.body, denial.status, denial.headers)
        canary_mask = self._route(serving, req.keys, req.n)
        energies, versions = await self._score_routed(serving, schema, req.x, canary_mask, req.cats)
        anomaly = self._record(serving, energies, canary_mask, (time.perf_counter() - t0) * 1000.0)
        if self.recent is not None:
            self.recent.offer(tuple(schema), req.x, energies, req.cats)
        if accept and F32 in accept.lower() and (canary_mask is None or not canary_mask.any() or canary_mask.all()):
            model = serving.canary if canary_mask is not None and canary_mask.any() else serving.stable
            return Reply(200, np.asarray(energies, dtype="<f4").tobytes(),
                         (("x-ebmops-versions", model.version), ("x-ebmops-generation", str(serving.generation)),
                          ("x-ebmops-threshold", repr(model.threshold))), F32)
        return Reply.json({"energies": energies, "anomaly": anomaly, "versions": versions,
                           "generation": serving.generation})

    def _route(self, serving: Serving, keys: list[str | None] | None, n: int) -> np.ndarray | None:
        """The canary's events (a boolean mask), or None when every event goes to the stable."""
        if serving.canary is None:
            return None
        if keys is None:
            return route_random(n, serving.canary_weight, self._rng)
        return route(keys, serving.canary_weight, salt=self.name, rng=self._rng)

    async def _score_routed(self, serving: Serving, schema: list[str], x: np.ndarray,
                            canary_mask: np.ndarray | None, cats: dict | None = None) -> tuple[np.ndarray, list[str]]:
        n_canary = 0 if canary_mask is None else int(np.count_nonzero(canary_mask))
        if n_canary in (0, len(x)):  # one version: one job, no splitting (the common case)
            model = serving.canary if n_canary else serving.stable
            try:
                energies = await self.batcher.score(model, self._input(x, schema, model, cats))
            except BaseException:
                self.stats.record_error(model.version)  # the judge sees each version's own error rate
                raise
            return energies, [model.version] * len(x)
        parts = [(serving.stable, np.flatnonzero(~canary_mask)), (serving.canary, np.flatnonzero(canary_mask))]
        results = await asyncio.gather(*(self.batcher.score(m, self._input(x[idx], schema, m, cats, idx))
                                         for m, idx in parts),
                                       return_exceptions=True)
        failed = [(m, r) for (m, _), r in zip(parts, results) if isinstance(r, BaseException)]
        if failed:
            for m, _ in failed:  # the judge sees each version's own error rate
                self.stats.record_error(m.version)
            raise failed[0][1]
        energies = np.empty(len(x), dtype=np.float32)
        for (_, idx), e in zip(parts, results):
            energies[idx] = e
        versions = np.where(canary_mask, serving.canary.version, serving.stable.version).tolist()
        return energies, versions

    def _input(self, x: np.ndarray, schema: list[str], model: LoadedModel, cats: dict | None,
               idx: np.ndarray | None = None) -> np.ndarray:
        """``model``'s input: its columns, categorical ones encoded (unknown values counted)."""
        x = _columns(x, schema, model)
        if cats and idx is not None:
            cats = {c: v[idx] for c, v in cats.items()}
        if not model.categories:
            if cats:  # a column the other served version takes as categories: numbers for this one
                import pandas as pd

                x = x.copy()
                for c, texts in cats.items():
                    if c in model.features:
                        x[:, model.features.index(c)] = pd.to_numeric(pd.Series(texts), errors="coerce")
            return x
        x, unknown = model.encode(x, cats)
        for column, n in unknown.items():
            self.metrics.unknown_categories.labels(region=self.region, model=self.state.model_name,
                                                   column=column).inc(n)
        return x

    def _record(self, serving: Serving, energies: np.ndarray, canary_mask: np.ndarray | None,
                latency_ms: float) -> np.ndarray:
        """Metrics and recent stats per version; returns the anomaly flags."""
        n_canary = 0 if canary_mask is None else int(np.count_nonzero(canary_mask))
        if n_canary in (0, len(energies)):  # one version: no masking (the common case)
            model = serving.canary if n_canary else serving.stable
            anomaly = energies > model.threshold
            self._record_version(model, energies, anomaly, latency_ms)
        else:
            anomaly = np.empty(len(energies), dtype=bool)
            for model, mask in ((serving.stable, ~canary_mask), (serving.canary, canary_mask)):
                e = energies[mask]
                anomaly[mask] = flags = e > model.threshold
                self._record_version(model, e, flags, latency_ms)
        self.metrics.latency.observe(latency_ms / 1000.0)
        return anomaly

    def _record_version(self, model: LoadedModel, e: np.ndarray, flags: np.ndarray, latency_ms: float) -> None:
        cached = self._events_by_version.get(model.version)
        if cached is None:
            if len(self._events_by_version) > 64:  # bounded: versions come and go over a node's life
                self._events_by_version.clear()
            cached = self._events_by_version[model.version] = (self.metrics.events.labels(version=model.version),
                                                               (self.name, model.version))
        counter, key = cached
        counter.inc(len(e))
        bad = self._energies.observe(key, e)  # the node's histograms, keyed (model, version)
        self.stats.record(model.version, latency_ms, e, int(np.count_nonzero(flags)), model.threshold)
        if bad:
            self.metrics.errors.labels(kind="non-finite-energy").inc(bad)

    # ---- reports --------------------------------------------------------------------------
    def energy_shifts(self) -> dict[str, float]:
        """Live Δ per served version: its recent energies against its own calibration energies."""
        from drift.delta import energy_shift

        serving = self.state.serving
        out: dict[str, float] = {}
        if serving is None:
            return out
        for model in filter(None, (serving.stable, serving.canary)):
            recent = self.stats.energies(model.version)
            if model.calibration is not None and len(recent) >= min(MIN_SHIFT_EVENTS, self.stats.window):
                out[model.version] = float(energy_shift(model.calibration, recent))
        return out

    def describe(self) -> dict[str, Any]:
        serving = self.state.serving
        err = self.state.last_error
        last = self.state.last_reconcile_at
        return {"region": self.region, "model": self.name, "ready": serving is not None,
                "warming_up": not self.checked,  # not reconciled once yet: it may be about to serve
                "generation": serving.generation if serving else None,
                "stable_version": serving.stable.version if serving else None,
                "canary_version": serving.canary.version if serving and serving.canary else None,
                "canary_weight": serving.canary_weight if serving else 0.0,
                # the stable's feature order: the columns of positional JSON events and binary f32 rows
                "features": list(serving.stable.features) if serving else [],
                "versions": serving.roles() if serving else {},
                "last_error": err.as_dict() if err else None,
                "trusted_generation": self.state.trusted_generation,
                # serving the last verified state from disk (store unreachable or its document refused): why
                "degraded": self.state.degraded.as_dict() if self.state.degraded else None,
                "last_reconcile_at": last.isoformat() if last else None}

    def stats_body(self) -> dict[str, Any]:
        return {**self.describe(), "stats_window": self.stats.window, "micro_batches": self.batcher.batches,
                "by_version": self.stats.as_dict()}


class Node:
    """Everything one node holds: a ``ModelServer`` per model it serves (the default model,
    settings.registry.model_name, always; every other model whose desired state is in the region's
    store, limited to serving.models when set), the shared micro-batcher, token guard and metrics.
    The app's routes are thin wrappers around it, which keeps it usable without HTTP in tests."""

    def __init__(self, settings: Settings, region: str, store: ObjectStore, key: SigningKey):
        self.settings = settings
        self.cfg = settings.serving
        self.region = region
        self.store = store
        self.key = key
        self.default_model = settings.registry.model_name
        self.node_metrics = NodeMetrics(region)
        self.batcher = MicroBatcher(max_events=self.cfg.micro_batch_max_events, wait_ms=self.cfg.micro_batch_wait_ms,
                                    inline_max_events=INLINE_MAX_EVENTS,
                                    on_batch=lambda _v, n: self.node_metrics.batch_events.observe(n))
        self.guard = TokenGuard(self.cfg.auth, self.node_metrics, region)
        self.bodies = BodyDeadlines(self.cfg.body_timeout_s)
        # replaced whole, never changed in place: readers on the event loop iterate it while the reconcile
        # thread adds a model
        self.models: dict[str, ModelServer] = {}
        self._listed_at = float("-inf")  # monotonic time of the last listing of the store's models
        self._was_ready = False  # every model found at start has warmed up and one served
        self.node_metrics.registry.register(EnergyShift(self.energy_shifts))
        self._add_model(self.default_model)
        # what it trusted before a restart is served again: its floor holds even if the store lost the model
        for name in trusted_models(settings.node_install_dir(region)):
            if re.match(NAME_PATTERN, name) and self._wanted(name) and name not in self.models:
                self._add_model(name)
        self._list_failed = False
        self._reconcile_pool: ThreadPoolExecutor | None = None
        self._poll_task: asyncio.Task | None = None
        self._tokens_task: asyncio.Task | None = None

    # ---- the default model (``/score``, ``/stats``, ``/recent``) ---------------------------------
    @property
    def default(self) -> ModelServer:
        return self.models[self.default_model]

    @property
    def state(self) -> NodeState:
        return self.default.state

    @property
    def metrics(self):
        """The default model's metrics (``NodeMetrics.model``); ``node_metrics`` holds them all."""
        return self.default.metrics

    @property
    def stats(self) -> RecentStats:
        return self.default.stats

    @property
    def recent(self) -> RecentEvents | None:
        return self.default.recent

    @property
    def reconciler(self) -> Reconciler:
        return self.default.reconciler

    def model(self, name: str) -> ModelServer:
        """The server of model ``name``; UnknownModel when this node does not serve it."""
        server = self.models.get(name)
        if server is None:
            raise UnknownModel(name, sorted(self.models))
        return server

    # ---- which models --------------------------------------------------------------------------
    def _add_model(self, name: str) -> ModelServer:
        server = ModelServer(self, name)
        self.models = {**self.models, name: server}
        return server

    def _wanted(self, name: str) -> bool:
        return self.cfg.models is None or name in self.cfg.models or name == self.default_model

    def discover(self) -> list[str]:
        """Add a server for every model with a desired state in the store (those serving.models names,
        when set); returns the names added. A store that cannot be listed adds nothing: each model's
        reconcile reports the store's error."""
        self._listed_at = time.monotonic()  # a store that cannot be listed is tried again at the next interval
        try:
            names = desired_models(self.store)
        except StoreError as e:
            (log.debug if self._list_failed else log.warning)("%s: cannot list the models in %s: %s", self.region,
                                                              self.store.description, e)
            self._list_failed = True
            return []
        self._list_failed = False
        added = []
        for name in names:
            if name in self.models or not self._wanted(name):
                continue
            self._add_model(name)
            added.append(name)
            note(log, logging.INFO, f"model {name} found in the region's store: served from now on",
                 region=self.region, model=name)
        return added

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self.batcher.start()
        self._reconcile_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ebm-reconcile")
        self._poll_task = asyncio.create_task(self._poll(), name="ebm-reconcile-poll")
        if self.cfg.auth.tokens_file is not None:
            self._tokens_task = asyncio.create_task(self._watch_tokens(), name="ebm-tokens-watch")
        self.bodies.start()

    async def stop(self) -> None:
        for task in (self._poll_task, self._tokens_task):
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.bodies.stop()
        await self.batcher.stop()
        if self._reconcile_pool is not None:
            self._reconcile_pool.shutdown(wait=False, cancel_futures=True)

    async def reconcile(self, model: str | None = None, *, poll: bool = False) -> dict[str, ReconcileResult]:
        """Find new models, then reconcile ``model`` (UnknownModel if not served) or every model, in the
        reconcile thread (verification and model loading block). A failure of one model's reconcile is
        counted and logged and never keeps another's from running. ``poll``: a poll lists the store's
        models only once serving.discover_interval_s has passed since the last listing."""
        assert self._reconcile_pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._reconcile_pool, self._reconcile, model, poll)

    def _reconcile(self, model: str | None, poll: bool = False) -> dict[str, ReconcileResult]:
        if not poll or time.monotonic() - self._listed_at >= self.cfg.discover_interval_s:
            self.discover()
        servers = [self.model(model)] if model is not None else list(self.models.values())
        out: dict[str, ReconcileResult] = {}
        for server in servers:
            try:
                out[server.name] = server.reconcile()
            except Exception as e:  # noqa: BLE001 - one model's failure is its own
                log.exception("%s: reconcile of %s failed unexpectedly", self.region, server.name)
                server.metrics.errors.labels(kind="reconcile").inc()
                if model is not None:
                    raise
                out[server.name] = ReconcileResult("refused", server.state.serving, Refusal(
                    "reconcile-failed", f"reconcile raised {type(e).__name__}: {e}", "store"))
        return out

    async def _poll(self) -> None:
        while True:
            try:
                await self.reconcile(poll=True)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the poll loop must survive anything
                log.exception("%s: reconcile failed unexpectedly", self.region)
                self.node_metrics.errors.labels(model="", kind="reconcile").inc()
            await asyncio.sleep(self.cfg.poll_interval_s)

    async def _watch_tokens(self) -> None:
        """Re-read the tokens file when it changes: rotation without a restart."""
        while True:
            await asyncio.sleep(self.cfg.auth.reload_s)
            try:
                if self.guard.reload():
                    note(log, logging.INFO, "tokens reloaded", region=self.region)
            except Exception:  # noqa: BLE001 - a bad file keeps the current tokens
                log.exception("%s: token reload failed", self.region)

    # ---- scoring (the default model) ----------------------------------------------------------
    async def handle_score(self, read_body: Callable[[], Awaitable[bytes]], content_type: str | None = None,
                           accept: str | None = None, admit: Client | None = None,
                           request_id: str | None = None) -> Reply:
        """One POST /score: the default model's ``ModelServer.handle_score``."""
        return await self.default.handle_score(read_body, content_type, accept, admit, request_id)

    async def score(self, raw: bytes, content_type: str | None = None, accept: str | None = None,
                    admit: Client | None = None) -> Reply:
        return await self.default.score(raw, content_type, accept, admit)

    # ---- reports --------------------------------------------------------------------------
    def energy_shifts(self) -> dict[tuple[str, str], float]:
        """Live Δ per (model, served version)."""
        return {(name, version): delta for name, server in list(self.models.items())
                for version, delta in server.energy_shifts().items()}

    def ready(self) -> bool:
        """At least one model serves, and no model is still warming up, until the node has been ready
        once: a model synced later warms up while the others go on serving (its own entry says
        ``warming_up``); readiness flipping then would take every replica out of its Service at once."""
        models = list(self.models.values())
        if not any(m.state.serving is not None for m in models):
            return False
        if not self._was_ready:
            self._was_ready = all(m.checked for m in models)
        return self._was_ready

    def describe(self) -> dict[str, Any]:
        """The default model's description (the body ``/stats`` and ``/readyz`` have always had)."""
        return self.default.describe()

    def readiness(self) -> dict[str, Any]:
        """``/readyz``: the default model's description, ``ready`` for the whole node, and every model's."""
        return {**self.describe(), "ready": self.ready(),
                "models": {name: _readiness(m) for name, m in sorted(self.models.items())}}


def _readiness(m: ModelServer) -> dict[str, Any]:
    d = m.describe()
    return {k: d[k] for k in ("ready", "warming_up", "stable_version", "canary_version", "canary_weight",
                              "generation", "degraded", "last_error")}


def _schema(serving: Serving) -> tuple[list[str], int | None]:
    """Matrix columns: the stable's features, then any the canary adds; and the positional width."""
    schema = list(serving.stable.features)
    if serving.canary is None or serving.canary.features == serving.stable.features:
        return schema, None
    extra = [f for f in serving.canary.features if f not in schema]
    return schema + extra, len(schema)


def _columns(x: np.ndarray, schema: list[str], model: LoadedModel) -> np.ndarray:
    """``x`` (columns in ``schema`` order) in ``model``'s feature order."""
    if len(schema) == model.n_features and tuple(schema) == model.features:
        return x
    return np.ascontiguousarray(x[:, [schema.index(f) for f in model.features]])


class NodeApp(FastAPI):
    """The node's FastAPI app, with ``POST /score`` answered as bare ASGI in front of it and every
    request's token checked before routing (see the module docstring); everything else, lifespan
    included, is FastAPI's."""

    node: Node

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                path = scope["path"]
                if path == SCORE_PATH:
                    return await self._score(scope, receive, send, self.node.default)
                if path.startswith(MODELS_PREFIX) and path.endswith(SCORE_PATH):
                    name = path[len(MODELS_PREFIX):-len(SCORE_PATH)]
                    if name and "/" not in name:
                        return await self._score_model(scope, receive, send, name)
            guard = self.node.guard
            if guard.enabled:
                needed = scope_of(scope["path"], guard.cfg)
                if needed is not None:
                    authorization = None
                    for name, value in scope["headers"]:
                        if name == b"authorization":
                            authorization = value
                            break
                    client = guard.check(authorization, needed)
                    if isinstance(client, Denial):
                        return await _send(send, Reply.json(client.body, client.status, client.headers))
        await super().__call__(scope, receive, send)

    async def _score_model(self, scope, receive, send, name: str) -> None:
        """POST /v1/models/{name}/score: the token is checked before the model is looked up (an unknown
        name is a 404 only for those who may score)."""
        server = self.node.models.get(name)
        if server is not None:
            return await self._score(scope, receive, send, server)
        guard = self.node.guard
        if guard.enabled:
            authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            client = guard.check(authorization, "score")
            if isinstance(client, Denial):
                return await _send(send, Reply.json(client.body, client.status,
                                                    (*client.headers, ("Connection", "close"))))
        reply = UnknownModel(name, sorted(self.node.models)).reply()
        return await _send(send, reply._replace(headers=(("Connection", "close"),)))

    async def _score(self, scope, receive, send, server: "ModelServer") -> None:
        node = self.node
        content_type = accept = authorization = length = request_id = None
        for name, value in scope["headers"]:  # ASGI: lowercased names, bytes
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
        admit = None
        guard = node.guard
        if guard.enabled:
            client = guard.check(authorization, "score")
            if isinstance(client, Denial):  # the body stays unread: a large or unknown one closes the connection
                close = length is None or not length.isdigit() or int(length) > SMALL_BODY
                return await _send(send, Reply.json(client.body, client.status,
                                                    (*client.headers, ("Connection", "close")) if close
                                                    else client.headers))
            admit = client
        cap = node.cfg.max_body_bytes
        if length is not None and (not length.isdigit() or int(length) > cap):
            server.metrics.errors.labels(kind="too-large").inc()
            note(log, logging.WARNING, "/score body refused from its Content-Length", region=node.region,
                 model=server.name, request_id=request_id, status=413)
            return await _send(send, Reply.json(
                {"error": "body too large", "field": None,
                 "reason": f"Content-Length {length.decode('latin-1')} is over this node's limit of {cap} bytes "
                           "(serving.max_body_bytes); split the events over several requests"}, 413,
                (("Connection", "close"),)))
        async def read_body() -> bytes:
            return await node.bodies.read(_read_capped(receive, cap))

        reply = await server.handle_score(read_body, content_type, accept, admit, request_id)
        await _send(send, reply)


class BodyDeadlines:
    """Drops a /score body that has not arrived ``timeout_s`` after the read began (408).

    A timer per request (``asyncio.timeout``) costs about 5 us, 6 % of a 1-event request's CPU; here a
    read costs a dict insert and delete, and one sweeper task cancels the overdue reads a few times per
    timeout (so a read is dropped between ``timeout_s`` and ``1.25 * timeout_s``)."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._reading: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="ebm-body-deadlines")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass

    async def read(self, body: Awaitable[bytes]) -> bytes:
        task = asyncio.current_task()
        self._reading[task] = time.monotonic() + self.timeout_s
        try:
            return await body
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            task.uncancel()
            raise InputError(408, "body timeout", None, f"the body did not arrive within {self.timeout_s:g} s "
                                                        "(serving.body_timeout_s)") from None
        finally:
            del self._reading[task]
            self._expired.discard(task)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.timeout_s / 4)
            now = time.monotonic()
            for task, deadline in list(self._reading.items()):
                if deadline < now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()


async def _read_capped(receive, cap: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``cap`` bytes."""
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnect()  # what Starlette's Request.body() raises: counted like it
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise InputError(413, "body too large", None, f"the body passed this node's limit of {cap} bytes "
                                                          "(serving.max_body_bytes); split the events over several "
                                                          "requests")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.asgi_headers()})
    await send({"type": "http.response.body", "body": reply.body})


def create_app(settings: Settings, region: str, store: ObjectStore | None = None,
               key: SigningKey | None = None) -> NodeApp:
    """The node app for ``region``; ``store`` and ``key`` default to the ones settings configure."""
    import re

    if not re.match(REGION_NAME_PATTERN, region):
        raise ConfigError(f"--region {region!r} must be lowercase letters, digits and '-'")
    if store is None:
        from registry.objectstore.factory import store_for_region

        store = store_for_region(settings, region)
    if key is None:
        from registry.signing import signing_key

        key = signing_key(settings, verify_only=True)
    node = Node(settings, region, store, key)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    app = NodeApp(title=f"ebmops node {region}", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.node = app.state.node = node
    _routes(app, node)
    return app


def _routes(app: FastAPI, node: Node) -> None:
    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> Response:
        log.exception("%s: unhandled error", node.region, exc_info=exc)
        node.node_metrics.errors.labels(model="", kind="internal").inc()
        return json_response({"error": "internal error", "field": None,
                              "reason": f"{type(exc).__name__}; the node keeps serving, see its log"}, 500)

    @app.exception_handler(UnknownModel)
    async def unknown_model(_request: Request, exc: UnknownModel) -> Response:
        return exc.reply().response()

    @app.post(SCORE_PATH)
    async def score(request: Request) -> Response:
        """Reached only when NodeApp's ASGI handler does not see the request (a mounted app)."""
        return (await node.handle_score(request.body, request.headers.get("content-type"),
                                        request.headers.get("accept"))).response()

    @app.post(MODELS_PREFIX + "{model}" + SCORE_PATH)
    async def score_model(model: str, request: Request) -> Response:
        """Reached only when NodeApp's ASGI handler does not see the request (a mounted app)."""
        return (await node.model(model).handle_score(request.body, request.headers.get("content-type"),
                                                     request.headers.get("accept"))).response()

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "alive", "region": node.region})

    @app.get("/readyz")
    async def readyz() -> Response:
        body = node.readiness()
        return json_response(body, 200 if body["ready"] else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(node.node_metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stats")
    async def stats() -> Response:
        return json_response(node.default.stats_body())

    @app.get(MODELS_PREFIX + "{model}/stats")
    async def model_stats(model: str) -> Response:
        return json_response(node.model(model).stats_body())

    async def recent_of(server: ModelServer, n: int) -> Response:
        """The newest ``n`` kept events (features in the served schema's order) and their energies."""
        if n < 1:
            return json_response({"error": "invalid query", "field": "n", "reason": "n must be at least 1"}, 422)
        if server.recent is None:
            return json_response({"features": [], "events": [], "energies": [], "region": node.region,
                                  "model": server.name})
        features, x, e = await asyncio.get_running_loop().run_in_executor(None, server.recent.latest, n)
        return Response(orjson.dumps({"region": node.region, "model": server.name, "features": features,
                                      "events": x, "energies": e}, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    @app.get("/recent")
    async def recent(n: int = 5000) -> Response:
        return await recent_of(node.default, n)

    @app.get(MODELS_PREFIX + "{model}/recent")
    async def model_recent(model: str, n: int = 5000) -> Response:
        return await recent_of(node.model(model), n)

    @app.get("/v1/models")
    async def models() -> Response:
        """Every model this node serves (``models``), and one entry per loaded version (``data``)."""
        servers = sorted(node.models.items())
        data = []
        for name, server in servers:
            serving = server.state.serving
            weights = _weights(serving)
            for v, r in (serving.roles() if serving else {}).items():
                data.append({"id": f"{name}/{v}", "model": name, "version": v, "role": r,
                             "generation": serving.generation, "weight": weights[v]})
        return json_response({"object": "list", "region": node.region, "default_model": node.default_model,
                              "models": [_model_entry(s) for _, s in servers], "data": data})

    @app.get(MODELS_PREFIX + "{model}")
    async def model_info(model: str) -> Response:
        return json_response(_model_entry(node.model(model)))

    @app.post("/admin/reload")
    async def reload(model: str | None = None) -> Response:
        """Reconcile every model (or ``?model=``): the body describes that model (default: the default
        model) as before, and ``models`` what each reconcile did."""
        results = await node.reconcile(model)
        name = model or node.default_model
        result = results[name]
        server = node.model(name)
        body = {**result.as_dict(), **server.describe(),
                "models": {n: {**r.as_dict(), "ready": node.models[n].state.serving is not None}
                           for n, r in sorted(results.items())}}
        if result.outcome == "refused":
            return json_response(body, 502 if is_refusal_of_bundle(result.refusal) else 409)
        if result.outcome == "no-desired-state":
            body["reason"] = (f"no desired state for {name} in this region's store; publish a "
                              "version with set_stable")
            return json_response(body, 409)
        return json_response(body)


def _weights(serving: Serving | None) -> dict[str, float]:
    """Share of the model's traffic per served version."""
    if serving is None:
        return {}
    if serving.canary is None:
        return {serving.stable.version: 1.0}
    return {serving.stable.version: 1.0 - serving.canary_weight, serving.canary.version: serving.canary_weight}


def _model_entry(server: ModelServer) -> dict[str, Any]:
    d = server.describe()
    return {**{k: d[k] for k in ("model", "ready", "warming_up", "generation", "stable_version", "canary_version",
                                 "canary_weight", "features", "versions", "degraded", "last_error")},
            "weights": _weights(server.state.serving)}
