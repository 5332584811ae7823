"""The node's HTTP surface (FastAPI).

    POST /score          energies, anomaly flags and serving version of each event
    GET  /healthz        the process is alive
    GET  /readyz         200 once a verified, warmed-up model serves; 503 before
    GET  /metrics        Prometheus text (the app's own registry)
    GET  /stats          what is served, the latest refusal, recent latencies and energies per version
    GET  /recent         the newest kept events and their energies (drift reports, hotfixes)
    GET  /v1/models      the served versions and their roles
    POST /admin/reload   reconcile with the desired state now

With tokens configured (serving.auth, see serving/auth.py) every request but the public probes
needs a bearer token with the path's scope, checked in ``NodeApp.__call__`` before any routing,
and is counted and rate-limited per client. ``/score`` bodies are bounded: a Content-Length over
serving.max_body_bytes is refused before a byte of the body is read, a body without one is read
up to that cap, and one that has not arrived within serving.body_timeout_s is dropped; each of
those answers closes the connection, so the unread rest costs nothing.

Bodies are parsed from bytes with orjson and answered with orjson: pydantic request models
would cost more than scoring a 1-event request. For the same reason ``POST /score`` does not go
through FastAPI at all: ``NodeApp`` (a FastAPI subclass) answers exactly that method and path as
a bare ASGI handler before Starlette's middleware and routing (about 40 % of a 1-event request's
CPU), and hands every other request, other methods on /score included, to FastAPI, whose /score
route stays registered (it answers 405 for other methods, and serves POST /score should the app
be mounted under a prefix). Both paths run ``Node.handle_score``: same statuses, bodies, metrics.
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
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable, NamedTuple

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from ebmops.core.errors import ConfigError
from ebmops.core.settings import REGION_NAME_PATTERN, Settings
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
from serving.state import NodeState, Reconciler, ReconcileResult, Serving, is_refusal_of_bundle

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


class Node:
    """Everything one node holds: state, reconciler, batcher, metrics. The app's routes are thin
    wrappers around it, which keeps it usable without HTTP in tests."""

    def __init__(self, settings: Settings, region: str, store: ObjectStore, key: SigningKey):
        self.settings = settings
        self.cfg = settings.serving
        self.region = region
        self.state = NodeState(region, settings.registry.model_name)
        self.metrics = NodeMetrics(region, settings.registry.model_name)
        self.stats = RecentStats(self.cfg.stats_window)
        self.recent = RecentEvents(self.cfg.recent_events, self.cfg.recent_keep_every) \
            if self.cfg.recent_events else None
        self.metrics.registry.register(EnergyShift(self.energy_shifts))
        self.reconciler = Reconciler(self.state, store, key, install_dir=settings.node_install_dir(region),
                                     cache_dir=settings.blob_cache_dir, metrics=self.metrics)
        self.batcher = MicroBatcher(max_events=self.cfg.micro_batch_max_events, wait_ms=self.cfg.micro_batch_wait_ms,
                                    inline_max_events=INLINE_MAX_EVENTS,
                                    on_batch=lambda _v, n: self.metrics.batch_events.observe(n))
        self._reconcile_pool: ThreadPoolExecutor | None = None
        self._poll_task: asyncio.Task | None = None
        self._rng = np.random.default_rng()
        self._requests_by_status: dict[int, Any] = {}  # labelled children, looked up once
        self._events_by_version: dict[str, Any] = {}
        self.guard = TokenGuard(self.cfg.auth, self.metrics, region)
        self.bodies = BodyDeadlines(self.cfg.body_timeout_s)
        self._tokens_task: asyncio.Task | None = None

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

    async def reconcile(self) -> ReconcileResult:
        """One reconcile in the reconcile thread (verification and model loading block)."""
        assert self._reconcile_pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._reconcile_pool, self.reconciler.reconcile)

    async def _poll(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the poll loop must survive anything
                log.exception("%s: reconcile failed unexpectedly", self.region)
                self.metrics.errors.labels(kind="reconcile").inc()
            await asyncio.sleep(self.cfg.poll_interval_s)

    async def _watch_tokens(self) -> None:
        """Re-read the tokens file when it changes: rotation without a restart."""
        while True:
            await asyncio.sleep(self.cfg.auth.reload_s)
            try:
                if self.guard.reload():
                    note(log, logging.INFO, "tokens reloaded", region=self.region, model=self.state.model_name)
            except Exception:  # noqa: BLE001 - a bad file keeps the current tokens
                log.exception("%s: token reload failed", self.region)

    # ---- scoring --------------------------------------------------------------------------
    async def handle_score(self, read_body: Callable[[], Awaitable[bytes]], content_type: str | None = None,
                           accept: str | None = None, admit: Client | None = None,
                           request_id: str | None = None) -> Reply:
        """One POST /score, whatever serves it: the reply, counted by status; never raises.
        ``admit``: the client whose event bucket is charged once the request's events are counted."""
        t0 = time.perf_counter()
        try:
            reply = await self.score(await read_body(), content_type, accept, admit)
        except InputError as e:  # the body itself was refused (too large, too slow): close, leave the rest unread
            self.metrics.errors.labels(kind="too-large" if e.status == 413 else "body-timeout").inc()
            note(log, logging.WARNING, f"/score body refused: {e.reason}", region=self.region,
                 model=self.state.model_name, request_id=request_id, status=e.status)
            reply = Reply.json(e.body(), e.status, headers=(("Connection", "close"),))
        except Exception as e:  # noqa: BLE001 - counted and answered here, never a dropped connection
            serving = self.state.serving
            note(log, logging.ERROR, "/score failed", exc_info=True, region=self.region, model=self.state.model_name,
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
        """Score a /score body (JSON, or float32 rows when ``content_type`` is ``F32``)."""
        serving = self.state.serving  # captured once: this request is served by this snapshot throughout
        if serving is None:
            self.metrics.errors.labels(kind="no-model").inc()
            err = self.state.last_error
            return Reply.json({"error": "no model loaded", "field": None,
                               "reason": "the node has not loaded a verified model yet"
                                         + (f"; latest refusal: {err.message}" if err else ""),
                               "region": self.region}, 503, headers=(("Retry-After", "1"),))
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
            self.recent.offer(tuple(schema), req.x, energies)
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
        return route(keys, serving.canary_weight, salt=self.state.model_name, rng=self._rng)

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
        counter = self._events_by_version.get(model.version)
        if counter is None:
            if len(self._events_by_version) > 64:  # bounded: versions come and go over a node's life
                self._events_by_version.clear()
            counter = self._events_by_version[model.version] = self.metrics.events.labels(version=model.version)
        counter.inc(len(e))
        bad = self.metrics.energies.observe(model.version, e)
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
        return {"region": self.region, "model": self.state.model_name, "ready": serving is not None,
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
            if scope["method"] == "POST" and scope["path"] == SCORE_PATH:
                return await self._score(scope, receive, send)
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

    async def _score(self, scope, receive, send) -> None:
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
            node.metrics.errors.labels(kind="too-large").inc()
            note(log, logging.WARNING, "/score body refused from its Content-Length", region=node.region,
                 model=node.state.model_name, request_id=request_id, status=413)
            return await _send(send, Reply.json(
                {"error": "body too large", "field": None,
                 "reason": f"Content-Length {length.decode('latin-1')} is over this node's limit of {cap} bytes "
                           "(serving.max_body_bytes); split the events over several requests"}, 413,
                (("Connection", "close"),)))
        async def read_body() -> bytes:
            return await node.bodies.read(_read_capped(receive, cap))

        reply = await node.handle_score(read_body, content_type, accept, admit, request_id)
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
        node.metrics.errors.labels(kind="internal").inc()
        return json_response({"error": "internal error", "field": None,
                              "reason": f"{type(exc).__name__}; the node keeps serving, see its log"}, 500)

    @app.post(SCORE_PATH)
    async def score(request: Request) -> Response:
        """Reached only when NodeApp's ASGI handler does not see the request (a mounted app)."""
        return (await node.handle_score(request.body, request.headers.get("content-type"),
                                        request.headers.get("accept"))).response()

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "alive", "region": node.region})

    @app.get("/readyz")
    async def readyz() -> Response:
        body = node.describe()
        return json_response(body, 200 if body["ready"] else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(node.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stats")
    async def stats() -> Response:
        return json_response({**node.describe(), "stats_window": node.stats.window,
                              "micro_batches": node.batcher.batches, "by_version": node.stats.as_dict()})

    @app.get("/recent")
    async def recent(n: int = 5000) -> Response:
        """The newest ``n`` kept events (features in the served schema's order) and their energies."""
        if n < 1:
            return json_response({"error": "invalid query", "field": "n", "reason": "n must be at least 1"}, 422)
        if node.recent is None:
            return json_response({"features": [], "events": [], "energies": [], "region": node.region})
        features, x, e = await asyncio.get_running_loop().run_in_executor(None, node.recent.latest, n)
        return Response(orjson.dumps({"region": node.region, "features": features, "events": x, "energies": e},
                                     option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    @app.get("/v1/models")
    async def models() -> Response:
        """What this node serves, one entry per loaded version (for clients and the read scope)."""
        serving = node.state.serving
        data = [{"id": f"{node.state.model_name}/{v}", "model": node.state.model_name, "version": v, "role": r,
                 "generation": serving.generation} for v, r in (serving.roles() if serving else {}).items()]
        return json_response({"object": "list", "region": node.region, "data": data})

    @app.post("/admin/reload")
    async def reload() -> Response:
        result = await node.reconcile()
        body = {**result.as_dict(), **node.describe()}
        if result.outcome == "refused":
            return json_response(body, 502 if is_refusal_of_bundle(result.refusal) else 409)
        if result.outcome == "no-desired-state":
            body["reason"] = (f"no desired state for {node.state.model_name} in this region's store; publish a "
                              "version with set_stable")
            return json_response(body, 409)
        return json_response(body)
