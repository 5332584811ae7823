"""A small, fast HTTP/1.1 keep-alive load generator (raw asyncio sockets, no HTTP client library).

Used by bench/serving_bench.py and usable on its own::

    python -m bench.loadgen http://127.0.0.1:8101/score --events 256 --concurrency 8 --duration 5
    python -m bench.loadgen http://127.0.0.1:8101/score --events 1 --rate 500 --duration 10
    python -m bench.loadgen http://127.0.0.1:5001/invocations --format mlflow --events 1 -c 16 -d 5
    python -m bench.loadgen http://127.0.0.1:8101/score --format f32 --events 256 -c 8 -d 5

Why not httpx/aiohttp: on a 2-core machine the client must spend far less CPU per request than
the server, or it measures itself. Requests are encoded once (a small pool of distinct bodies,
rotated), responses are framed by ``Content-Length`` (chunked bodies are handled too) and only the
status code is looked at; any non-2xx status, or a connection error, counts as an error.

Two modes:

* closed loop (``run_closed``): ``concurrency`` connections each send a request, wait for the
  answer, send the next, for ``duration_s`` or until ``requests`` were sent. Reports req/s,
  events/s and latency percentiles.
* open loop (``run_open``): requests leave at a fixed ``rate`` on a schedule, whatever the server
  does; a request that waits for a free connection is still timed from its *scheduled* send
  time, so a stalling server shows up in the percentiles (no coordinated omission).

``workers`` > 1 splits either mode over that many processes (connections or rate divided), and
the latencies are merged before the percentiles are taken.

Bodies: ``node_body`` (``{"events": [[...], ...]}``, the ebmops node) and ``mlflow_body``
(``{"inputs": [[...], ...]}``, what ``mlflow models serve`` accepts for a tensor-signature
model), and ``f32_body`` (the node's binary format: little-endian float32 rows, sent with
``Content-Type: application/x-ebmops-f32``, see ``CONTENT_TYPES``). Events are real kdd99 rows when the ebmops kdd99 cache is on disk (``load_events``),
else uniform [0, 1) synthetic rows of the same width.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np

N_FEATURES = 40
# The open loop's pool does not reuse a connection idle for longer than this: servers close idle
# keep-alive connections (uvicorn after 5 s), and a request written as the server closes is reset
# (ECONNRESET) through no fault of the server; HTTP clients expire idle connections the same way.
MAX_IDLE_S = 2.0
ROOT = Path(__file__).resolve().parent.parent


# ---- events and bodies ------------------------------------------------------------------------------------

def _dumps(obj) -> bytes:
    try:
        import orjson

        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except ImportError:  # pragma: no cover - orjson ships with the project
        return json.dumps(obj, default=lambda a: a.tolist(), separators=(",", ":")).encode()


def _kdd99_cache(home: str | Path | None) -> Path | None:
    candidates = []
    if home:
        candidates.append(Path(home) / "data" / "kdd99.parquet")
    if os.environ.get("EBMOPS_HOME"):
        candidates.append(Path(os.environ["EBMOPS_HOME"]) / "data" / "kdd99.parquet")
    candidates.append(ROOT / ".ebmops" / "data" / "kdd99.parquet")
    return next((p for p in candidates if p.is_file()), None)


def load_events(n: int | None = None, *, home: str | Path | None = None, fetch: bool = False,
                seed: int = 0) -> tuple[np.ndarray, list[str], str]:
    """Events to send: float32 [n, 40], the feature names, and where they came from.

    Real kdd99 rows from the ebmops cache (``<home>/data/kdd99.parquet``, ``$EBMOPS_HOME`` or the
    repo's ``.ebmops``); with ``fetch`` the dataset is downloaded into ``home`` when missing.
    Otherwise uniform synthetic rows named att1..att40.
    """
    rng = np.random.default_rng(seed)
    path = _kdd99_cache(home)
    if path is None and fetch and home is not None:
        try:
            from ebmops.core.data import load_dataset
            from ebmops.core.settings import load_settings

            load_dataset("kdd99", load_settings(home=home))
            path = _kdd99_cache(home)
        except Exception as e:  # noqa: BLE001 - the load generator still works without the data
            print(f"loadgen: kdd99 unavailable ({type(e).__name__}: {e}); using synthetic events", file=sys.stderr)
    if path is not None:
        import pandas as pd

        frame = pd.read_parquet(path)
        features = [c for c in frame.columns if c not in ("event_id", "label", "region")]
        x = np.ascontiguousarray(frame[features].to_numpy(dtype=np.float32))
        if n is not None:
            x = x[rng.choice(len(x), size=n, replace=n > len(x))]
        return x, features, f"kdd99 ({path})"
    n = n or 50_000
    return rng.random((n, N_FEATURES), dtype=np.float32), [f"att{i + 1}" for i in range(N_FEATURES)], "synthetic"


def node_body(events: np.ndarray, keys: Sequence[str | None] | None = None) -> bytes:
    """An ebmops node /score body."""
    body: dict = {"events": np.asarray(events, dtype=np.float32)}
    if keys is not None:
        body["keys"] = list(keys)
    return _dumps(body)


def mlflow_body(events: np.ndarray) -> bytes:
    """A ``mlflow models serve`` /invocations body for a tensor-signature model (``inputs``)."""
    return _dumps({"inputs": np.asarray(events, dtype=np.float32)})


def f32_body(events: np.ndarray) -> bytes:
    """An ebmops node /score binary body: little-endian float32 rows, row-major, in the model's feature order."""
    return np.ascontiguousarray(events, dtype="<f4").tobytes()


F32_CONTENT_TYPE = "application/x-ebmops-f32"  # serving.payload.F32 (not imported: loadgen stands alone)
BODY_BUILDERS = {"ebmops": node_body, "mlflow": mlflow_body, "f32": f32_body}
CONTENT_TYPES = {"ebmops": "application/json", "mlflow": "application/json", "f32": F32_CONTENT_TYPE}


def make_bodies(events: np.ndarray, events_per_request: int, fmt: str = "ebmops", count: int = 32,
                seed: int = 0) -> list[bytes]:
    """``count`` distinct bodies of ``events_per_request`` rows each, drawn from ``events``."""
    rng = np.random.default_rng(seed)
    build = BODY_BUILDERS[fmt]
    out = []
    for _ in range(count):
        idx = rng.integers(0, len(events), size=events_per_request)
        out.append(build(events[idx]))
    return out


def build_requests(url: str, bodies: Sequence[bytes], method: str = "POST",
                   content_type: str = "application/json", headers: dict[str, str] | None = None) -> list[bytes]:
    """Complete HTTP/1.1 keep-alive requests (head + body) for ``url``; ``headers`` are added to each."""
    u = urlsplit(url)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    host = u.netloc
    out = []
    for body in bodies:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{extra}"
                f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        out.append(head.encode("ascii") + body)
    return out


# ---- the connection ---------------------------------------------------------------------------------------

class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.idle_since = 0.0  # open loop: when it went back to the pool

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes):
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        status = self._parse()
        if status is not None:
            self.waiter.set_result(status)

    def _parse(self) -> int | None:
        """The status of one complete response at the head of the buffer (consumed), or None."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buf[:end]).lower()
        status = int(head[9:12])
        i = head.find(b"content-length:")
        if i >= 0:
            j = head.find(b"\r\n", i)
            n = int(head[i + 15:j if j >= 0 else len(head)])
            total = end + 4 + n
            if len(buf) < total:
                return None
            del buf[:total]
            return status
        if b"transfer-encoding: chunked" in head:
            pos = end + 4
            while True:
                j = buf.find(b"\r\n", pos)
                if j < 0:
                    return None
                size = int(bytes(buf[pos:j]).split(b";")[0], 16)
                if size == 0:
                    k = buf.find(b"\r\n\r\n", j)  # trailers (usually none) end with an empty line
                    if k < 0:
                        return None
                    del buf[:k + 4]
                    return status
                pos = j + 2 + size + 2
                if len(buf) < pos:
                    return None
        del buf[:end + 4]  # no body (204, 304)
        return status

    async def request(self, data: bytes) -> int:
        self.waiter = self.loop.create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self):
        if self.transport is not None:
            self.transport.close()


async def _connect(host: str, port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: _Conn(loop), host, port)
    sock = conn.transport.get_extra_info("socket")
    if sock is not None:
        import socket

        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


# ---- results ----------------------------------------------------------------------------------------------

@dataclass
class LoadResult:
    mode: str
    url: str
    events_per_request: int
    concurrency: int
    workers: int
    duration_s: float
    requests: int
    errors: int
    req_per_s: float
    events_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    target_rate: float | None = None
    late_sends: int = 0  # open loop: requests that left more than 1 ms after their scheduled time
    statuses: dict = field(default_factory=dict)
    error_samples: list = field(default_factory=list)
    start_marker: object = field(default=None, repr=False)  # what ``on_start`` returned (e.g. server CPU time)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("start_marker")
        return d


@dataclass
class _Raw:
    lat: np.ndarray
    errors: int
    statuses: dict
    error_samples: list
    t_start: float
    t_end: float
    late: int = 0


def _summarise(mode: str, url: str, epr: int, conc: int, workers: int, raws: list[_Raw],
               rate: float | None = None) -> LoadResult:
    lat = np.concatenate([r.lat for r in raws]) if raws else np.empty(0)
    errors = sum(r.errors for r in raws)
    statuses: dict = {}
    for r in raws:
        for k, v in r.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    dur = max(r.t_end for r in raws) - min(r.t_start for r in raws)
    n = len(lat)
    ok = n - errors
    pct = (lambda q: float(np.percentile(lat, q)) * 1000.0) if n else (lambda q: None)
    return LoadResult(mode=mode, url=url, events_per_request=epr, concurrency=conc, workers=workers,
                      duration_s=dur, requests=n, errors=errors, req_per_s=n / dur if dur > 0 else 0.0,
                      events_per_s=ok * epr / dur if dur > 0 else 0.0, p50_ms=pct(50), p95_ms=pct(95),
                      p99_ms=pct(99), max_ms=float(lat.max()) * 1000.0 if n else None,
                      mean_ms=float(lat.mean()) * 1000.0 if n else None, target_rate=rate,
                      late_sends=sum(r.late for r in raws), statuses=statuses,
                      error_samples=sum((r.error_samples for r in raws), [])[:5])


def _record(status_or_exc, statuses: dict, samples: list) -> bool:
    """Count a response; True when it is an error."""
    if isinstance(status_or_exc, BaseException):
        key = type(status_or_exc).__name__
        statuses[key] = statuses.get(key, 0) + 1
        if len(samples) < 5:
            samples.append(f"{key}: {status_or_exc}")
        return True
    statuses[str(status_or_exc)] = statuses.get(str(status_or_exc), 0) + 1
    return not 200 <= status_or_exc < 300


# ---- closed loop ------------------------------------------------------------------------------------------

async def _closed(url: str, reqs: list[bytes], concurrency: int, duration_s: float | None, requests: int | None,
                  offset: int = 0) -> _Raw:
    u = urlsplit(url)
    host, port = u.hostname, u.port or 80
    lat: list[float] = []
    statuses: dict = {}
    samples: list = []
    errors = 0
    budget = [requests if requests is not None else -1]
    stop_at = [None]
    perf = time.perf_counter

    async def one(ci: int):
        nonlocal errors
        conn = await _connect(host, port)
        i = offset + ci
        nreq = len(reqs)
        try:
            while True:
                if budget[0] == 0 or (stop_at[0] is not None and perf() >= stop_at[0]):
                    return
                if budget[0] > 0:
                    budget[0] -= 1
                data = reqs[i % nreq]
                i += concurrency
                t0 = perf()
                try:
                    if conn.closed:
                        conn = await _connect(host, port)
                    status = await conn.request(data)
                except (OSError, ConnectionError) as e:
                    status = e
                    conn.close()
                    conn = await _connect(host, port)
                lat.append(perf() - t0)
                if _record(status, statuses, samples):
                    errors += 1
        finally:
            conn.close()

    t_start = perf()
    if duration_s is not None:
        stop_at[0] = t_start + duration_s
    await asyncio.gather(*(one(c) for c in range(concurrency)))
    return _Raw(np.asarray(lat), errors, statuses, samples, t_start, perf())


# ---- open loop --------------------------------------------------------------------------------------------

async def _open(url: str, reqs: list[bytes], rate: float, duration_s: float, max_connections: int,
                t0_wall: float | None = None, phase: float = 0.0) -> _Raw:
    u = urlsplit(url)
    host, port = u.hostname, u.port or 80
    perf = time.perf_counter
    n_total = max(1, int(rate * duration_s))
    lat = np.full(n_total, np.nan)
    statuses: dict = {}
    samples: list = []
    errors = 0
    late = 0
    idle: list[_Conn] = []
    n_conns = 0
    free = asyncio.Event()
    pending: set[asyncio.Task] = set()

    async def acquire() -> _Conn:
        nonlocal n_conns
        while True:
            while idle:
                c = idle.pop()
                if not c.closed and perf() - c.idle_since < MAX_IDLE_S:
                    return c
                c.close()  # closed by the server, or about to be: its keep-alive timeout may be near
                n_conns -= 1
            if n_conns < max_connections:
                n_conns += 1
                try:
                    return await _connect(host, port)
                except OSError:
                    n_conns -= 1
                    raise
            free.clear()
            await free.wait()

    def release(c: _Conn):
        c.idle_since = perf()
        idle.append(c)
        free.set()

    async def fire(k: int, scheduled: float):
        nonlocal errors, late, n_conns
        conn = None
        try:
            conn = await acquire()
            if perf() - scheduled > 0.001:
                late += 1
            status = await conn.request(reqs[k % len(reqs)])
        except (OSError, ConnectionError) as e:
            status = e
            if conn is not None:
                conn.close()
                n_conns -= 1
                conn = None
                free.set()
        lat[k] = perf() - scheduled
        if conn is not None:
            release(conn)
        if _record(status, statuses, samples):
            errors += 1

    # Warm the pool with a few connections so the first scheduled requests do not pay the connect.
    for _ in range(min(4, max_connections)):
        idle.append(await _connect(host, port))
        idle[-1].idle_since = perf()
        n_conns += 1
    start = (t0_wall if t0_wall is not None else perf()) + phase
    interval = 1.0 / rate
    for k in range(n_total):
        scheduled = start + k * interval
        delay = scheduled - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        t = asyncio.ensure_future(fire(k, scheduled))
        pending.add(t)
        t.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=60)
    end = perf()
    for c in idle:
        c.close()
    done = lat[~np.isnan(lat)]
    return _Raw(done, errors + (n_total - len(done)), statuses, samples, start, end, late)


# ---- entry points -----------------------------------------------------------------------------------------

def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def _run(coro):
    loop = _new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _worker_closed(args, q):
    q.put(_run(_closed(*args)))


def _worker_open(args, q):
    q.put(_run(_open(*args)))


def _in_processes(target, arg_list: list[tuple]) -> list[_Raw]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(a, q), daemon=True) for a in arg_list]
    for p in procs:
        p.start()
    try:
        return [q.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


def run_closed(url: str, bodies: Sequence[bytes], *, concurrency: int = 8, duration_s: float | None = 5.0,
               requests: int | None = None, events_per_request: int = 1, workers: int = 1,
               warmup_s: float = 0.0, on_start=None, content_type: str = "application/json",
               headers: dict[str, str] | None = None) -> LoadResult:
    """Closed loop: ``concurrency`` connections back to back, for ``duration_s`` or ``requests`` in all.
    ``on_start`` (optional) is called just before the measured run; its value lands in ``start_marker``."""
    if duration_s is None and requests is None:
        raise ValueError("give duration_s or requests")
    reqs = build_requests(url, bodies, content_type=content_type, headers=headers)
    if warmup_s > 0:
        _run(_closed(url, reqs, concurrency, warmup_s, None))
    marker = on_start() if on_start else None
    if workers <= 1:
        raws = [_run(_closed(url, reqs, concurrency, duration_s, requests))]
    else:
        per = [concurrency // workers + (1 if w < concurrency % workers else 0) for w in range(workers)]
        reqn = [None if requests is None else requests // workers + (1 if w < requests % workers else 0)
                for w in range(workers)]
        raws = _in_processes(_worker_closed, [(url, reqs, max(1, per[w]), duration_s, reqn[w], w)
                                              for w in range(workers)])
    res = _summarise("closed", url, events_per_request, concurrency, workers, raws)
    res.start_marker = marker
    return res


def run_open(url: str, bodies: Sequence[bytes], *, rate: float, duration_s: float = 10.0,
             events_per_request: int = 1, max_connections: int = 64, workers: int = 1, on_start=None,
             content_type: str = "application/json", headers: dict[str, str] | None = None) -> LoadResult:
    """Open loop: ``rate`` requests/s on a fixed schedule for ``duration_s``; latency from the scheduled time."""
    reqs = build_requests(url, bodies, content_type=content_type, headers=headers)
    marker = on_start() if on_start else None
    if workers <= 1:
        raws = [_run(_open(url, reqs, rate, duration_s, max_connections))]
    else:
        # Interleave the workers' schedules so the merged stream is still evenly spaced.
        t0 = time.perf_counter() + 0.5  # CLOCK_MONOTONIC is shared across processes
        raws = _in_processes(_worker_open, [(url, reqs, rate / workers, duration_s,
                                             max(1, max_connections // workers), t0, w / rate)
                                            for w in range(workers)])
    res = _summarise("open", url, events_per_request, max_connections, workers, raws, rate=rate)
    res.start_marker = marker
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="e.g. http://127.0.0.1:8101/score or http://127.0.0.1:5001/invocations")
    p.add_argument("--format", choices=sorted(BODY_BUILDERS), default="ebmops",
                   help="body format (f32: the node's binary rows, sent as " + F32_CONTENT_TYPE + ")")
    p.add_argument("--events", type=int, default=1, help="events per request")
    p.add_argument("-c", "--concurrency", type=int, default=8, help="closed loop: connections")
    p.add_argument("-d", "--duration", type=float, default=5.0, help="seconds")
    p.add_argument("-n", "--requests", type=int, default=None, help="closed loop: stop after this many")
    p.add_argument("--rate", type=float, default=None, help="open loop at this many requests/s")
    p.add_argument("--max-connections", type=int, default=64, help="open loop: connection pool size")
    p.add_argument("--workers", type=int, default=1, help="load generator processes")
    p.add_argument("--warmup", type=float, default=1.0, help="closed loop: seconds of unrecorded warm-up")
    p.add_argument("--home", default=None, help="ebmops home holding data/kdd99.parquet")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    events, _names, source = load_events(home=a.home)
    bodies = make_bodies(events, a.events, a.format)
    if a.rate:
        res = run_open(a.url, bodies, rate=a.rate, duration_s=a.duration, events_per_request=a.events,
                       max_connections=a.max_connections, workers=a.workers,
                       content_type=CONTENT_TYPES[a.format])
    else:
        res = run_closed(a.url, bodies, concurrency=a.concurrency, duration_s=None if a.requests else a.duration,
                         requests=a.requests, events_per_request=a.events, workers=a.workers, warmup_s=a.warmup,
                         content_type=CONTENT_TYPES[a.format])
    if a.json:
        print(json.dumps({**res.to_dict(), "events_source": source}, indent=2))
    else:
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{res.mode} loop, {res.events_per_request} events/request, events from {source}")
        print(f"  {res.requests} requests in {res.duration_s:.2f} s: {res.req_per_s:,.0f} req/s, "
              f"{res.events_per_s:,.0f} events/s, {res.errors} errors {res.statuses}")
        print(f"  latency ms: p50 {f(res.p50_ms)}  p95 {f(res.p95_ms)}  p99 {f(res.p99_ms)}  max {f(res.max_ms)}"
              + (f"  (target {res.target_rate:g} req/s, {res.late_sends} sent late)" if res.mode == "open" else ""))
    return 1 if res.errors else 0


if __name__ == "__main__":
    sys.exit(main())
