"""Latency benchmark of exported TorchScript models, run in a fresh single-threaded process.

Why a fresh process: the caller (a Prefect flow, a test run) has already paid imports, allocated
memory and may run torch with several threads; a serving worker does none of that. The benchmark
starts a new Python running ``gates.latency.main`` with one intra-op and one inter-op thread (and
OMP/MKL set to 1), so the numbers describe one single-threaded serving process.

What it measures, per model, all in that one process so candidate and champion see the same machine:

* single-event latency: ``iterations`` calls on one event each, after ``warmup`` untimed calls (the
  TorchScript profiling executor optimises the graph over the first calls). The models are
  *interleaved* call by call, alternating which goes first, so a burst of load from a neighbour hits
  both alike; the garbage collector is off while timing. p50/p95/p99/mean in milliseconds.
* throughput at batch 64 and 1024: ``rounds`` short timed rounds (about 2 ms each) of back-to-back
  calls, interleaved across the models and alternating which goes first (fewer rounds for models
  so big that 150 would take over about 1.5 s); the median round, in events per second. Short
  interleaved rounds matter on a shared machine: with 7 rounds of 40 ms, two models of identical
  shape came out up to 1.85x apart under a neighbour's load; with 150 rounds of 2 ms they stayed
  within about 6 % (mostly within 2 %), well inside a 20 % tolerance.
* the FLOP-bound limit: FLOPs per event are ``sum(2 * out * in)`` over the model's 2-D weights (an
  MLP's Linear layers; activations and biases are a rounding error), and the peak FLOP rate is the
  best of a timed 1024x512x512 float32 matmul in the same process (the best, as it is a bound; under
  load the ratio below therefore errs low). ``flop_bound_eps`` = peak / FLOPs-per-event is the
  throughput no implementation can beat on this core, and ``ratio_to_flop_bound`` = batch-1024
  throughput / that limit says how close the artifact gets.
  ``matmul_bound_eps`` times the model's own layer shapes at batch 1024 (thin layers run below peak).

``benchmark_models`` returns ``LatencyStats`` per model; the checks in ``gates.checks`` only read
those numbers, and compare a candidate with a champion only when both carry the same ``run_id``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ebmops.core.errors import EbmopsError

BATCH_SIZES = (64, 1024)
PEAK_SHAPE = (1024, 512, 512)  # (m, k, n) of the matmul that estimates the core's peak FLOP rate
ROUND_S = 0.002  # target length of one throughput round (rounds are interleaved across models)
THROUGHPUT_BUDGET_S = 1.5  # rough cap on the rounds of one batch size, all models together
MIN_ROUNDS = 5
# The fresh process's entry point (not `-m gates.latency`: the package imports this module first, and
# runpy would warn about executing a module that is already imported).
WORKER = "from gates.latency import main; main()"


class LatencyBenchmarkError(EbmopsError):
    """The benchmark subprocess failed or timed out; the latency check becomes inconclusive."""


@dataclass(frozen=True)
class LatencyStats:
    """Latency and throughput of one model, measured by one benchmark run (``run_id``)."""

    model: str
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    iterations: int
    throughput_b64_eps: float
    throughput_b1024_eps: float
    flops_per_event: float | None = None
    peak_gflops: float | None = None
    flop_bound_eps: float | None = None
    ratio_to_flop_bound: float | None = None
    matmul_bound_eps: float | None = None
    run_id: str | None = None
    threads: int = 1
    throughput_rounds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyStats":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def benchmark_models(paths: dict[str, Path | str], n_features: int | None = None, *, iterations: int = 3000,
                     warmup: int = 200, seed: int = 0, rounds: int = 150,
                     timeout_s: float = 120.0) -> dict[str, LatencyStats]:
    """Benchmark TorchScript files in a fresh single-threaded process; ``{name: LatencyStats}``.

    ``paths`` maps a name (e.g. "candidate", "champion") to a ``torch.jit.save``'d file;
    ``n_features`` is the input width (read from the first 2-D weight when None). Raises
    LatencyBenchmarkError when the subprocess fails or runs past ``timeout_s``.
    """
    if not paths:
        raise ValueError("benchmark_models needs at least one model path")
    for name, p in paths.items():
        if not Path(p).is_file():
            raise FileNotFoundError(f"model {name!r}: no TorchScript file at {p}")
    spec = {"paths": {k: str(Path(v).resolve()) for k, v in paths.items()}, "n_features": n_features,
            "iterations": int(iterations), "warmup": int(warmup), "seed": int(seed), "rounds": int(rounds)}
    root = str(Path(__file__).resolve().parent.parent)  # so `gates` imports there without an install
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    try:
        proc = subprocess.run([sys.executable, "-c", WORKER], input=json.dumps(spec), env=env,
                              capture_output=True, text=True, timeout=timeout_s, cwd=root)
    except subprocess.TimeoutExpired as exc:
        raise LatencyBenchmarkError(f"latency benchmark ran past {timeout_s:.0f} s; lower gate.latency_iterations "
                                    "or raise gate.latency_timeout_s") from exc
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise LatencyBenchmarkError(f"latency benchmark exited {proc.returncode}: " + " | ".join(tail))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: LatencyStats.from_dict(d) for name, d in out["models"].items()}


# ---- the measuring side: runs only inside the fresh process -------------------------------------------

def _best_time(fn, reps: int) -> float:
    import time

    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / 1e9)
    return best


def _peak_flops(a, w) -> float:
    """FLOP/s of one big matmul, best of 15: the machine's bound at this moment."""
    import torch

    return 2.0 * a.shape[0] * a.shape[1] * w.shape[1] / _best_time(lambda: torch.mm(a, w), 15)


def _warm_up(models: dict, rows: list, batches: dict, warmup: int) -> None:
    for m in models.values():
        for k in range(warmup):
            m(rows[k % len(rows)])
        for b in BATCH_SIZES:
            for _ in range(max(3, warmup // 20)):
                m(batches[b])


def _single_event_ns(models: dict, rows: list, iterations: int) -> dict:
    """Nanoseconds per single-event call, the models interleaved (alternating order) so that load
    spikes hit each of them alike."""
    import time

    import numpy as np

    names = list(models)
    single = {n: np.empty(iterations) for n in names}
    clock = time.perf_counter_ns
    for i in range(iterations):
        x = rows[i % len(rows)]
        for n in (names if i % 2 == 0 else reversed(names)):
            m = models[n]
            t0 = clock()
            m(x)
            single[n][i] = clock() - t0
    return single


def _throughput(models: dict, batches: dict, rounds: int) -> tuple[dict, dict]:
    """Events/s per model and batch size over interleaved rounds, and the rounds run per batch size."""
    import time

    names = list(models)
    clock = time.perf_counter_ns
    tput: dict[str, dict[int, list[float]]] = {n: {b: [] for b in BATCH_SIZES} for n in names}
    n_rounds: dict[int, int] = {}
    for b in BATCH_SIZES:
        # Calls per round sized so a round lasts about ROUND_S for the slowest model (from timed calls);
        # fewer rounds for big models, so one batch size takes about THROUGHPUT_BUDGET_S at most.
        per_call = [_best_time(lambda m=m: m(batches[b]), 2) for m in models.values()]
        calls = max(1, int(ROUND_S / max(max(per_call), 1e-6)))
        n_rounds[b] = min(rounds, max(MIN_ROUNDS, int(THROUGHPUT_BUDGET_S / (calls * sum(per_call)))))
        for r in range(n_rounds[b]):
            for n in (names if r % 2 == 0 else reversed(names)):
                m = models[n]
                t0 = clock()
                for _ in range(calls):
                    m(batches[b])
                tput[n][b].append(calls * b / ((clock() - t0) / 1e9))
    return tput, n_rounds


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    import gc
    import uuid

    import numpy as np
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    names = list(spec["paths"])
    models = {n: torch.jit.load(spec["paths"][n], map_location="cpu").eval() for n in names}
    weights = {n: [p.detach() for p in m.parameters() if p.dim() == 2] for n, m in models.items()}
    n_features = spec["n_features"] or int(weights[names[0]][0].shape[1])
    gen = torch.Generator().manual_seed(spec["seed"])
    rows = [r.unsqueeze(0).contiguous() for r in torch.randn(256, n_features, generator=gen)]
    batches = {b: torch.randn(b, n_features, generator=gen) for b in BATCH_SIZES}

    with torch.inference_mode():
        _warm_up(models, rows, batches, spec["warmup"])
        mm, kk, nn = PEAK_SHAPE
        a, w = torch.randn(mm, kk, generator=gen), torch.randn(kk, nn, generator=gen)
        torch.mm(a, w)
        gc.disable()
        try:
            # The peak is a bound, so take the best of two bursts (start and end): load only lowers it.
            peak = _peak_flops(a, w)
            single = _single_event_ns(models, rows, spec["iterations"])
            tput, n_rounds = _throughput(models, batches, spec["rounds"])
            peak = max(peak, _peak_flops(a, w))
            layer_t = {}
            for n in names:
                xs = [(torch.randn(1024, int(wt.shape[1]), generator=gen), wt.t().contiguous()) for wt in weights[n]]
                layer_t[n] = sum(_best_time(lambda x=x, wt=wt: torch.mm(x, wt), 15) for x, wt in xs)
        finally:
            gc.enable()

    run_id = uuid.uuid4().hex
    out = {}
    for n in names:
        ms = single[n] / 1e6
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        flops = float(sum(2 * wt.shape[0] * wt.shape[1] for wt in weights[n])) or None
        t1024 = float(np.median(tput[n][1024]))
        bound = peak / flops if flops else None
        out[n] = LatencyStats(
            model=n, p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99), mean_ms=float(ms.mean()),
            iterations=spec["iterations"], throughput_b64_eps=float(np.median(tput[n][64])),
            throughput_b1024_eps=t1024, flops_per_event=flops, peak_gflops=peak / 1e9, flop_bound_eps=bound,
            ratio_to_flop_bound=(t1024 / bound) if bound else None,
            matmul_bound_eps=(1024 / layer_t[n]) if layer_t[n] > 0 else None,
            run_id=run_id, threads=torch.get_num_threads(), throughput_rounds=min(n_rounds.values())).to_dict()
    return {"run_id": run_id, "torch": torch.__version__, "n_features": n_features, "models": out}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    print(json.dumps(_run(spec)))


if __name__ == "__main__":
    main()
