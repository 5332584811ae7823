"""The latency benchmark in a real fresh subprocess, on two small scripted MLPs."""

from __future__ import annotations

import pytest
import torch

from gates.latency import LatencyBenchmarkError, benchmark_models


def scripted_mlp(n_in: int, hidden: list[int]) -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    layers, d = [], n_in
    for h in hidden:
        layers += [torch.nn.Linear(d, h), torch.nn.SiLU()]
        d = h
    layers.append(torch.nn.Linear(d, 1))
    return torch.jit.script(torch.nn.Sequential(*layers).eval())


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    small, wide = d / "small.pt", d / "wide.pt"
    torch.jit.save(scripted_mlp(16, [32]), str(small))
    torch.jit.save(scripted_mlp(16, [768, 768]), str(wide))
    return {"small": small, "wide": wide}


def test_benchmark_two_models_in_a_fresh_process(two_models):
    stats = benchmark_models(two_models, iterations=300, warmup=30, rounds=3)  # input width read from the weights
    small, wide = stats["small"], stats["wide"]
    for s in (small, wide):
        assert 0 < s.p50_ms <= s.p95_ms <= s.p99_ms
        assert s.iterations == 300 and s.threads == 1
        assert s.throughput_b64_eps > 0 and s.throughput_b1024_eps > 0
        assert s.peak_gflops > 0 and 0 < s.ratio_to_flop_bound < 1.5
    assert small.run_id == wide.run_id  # one run: comparable
    assert small.flops_per_event == 2 * (16 * 32 + 32 * 1)
    assert wide.flops_per_event == 2 * (16 * 768 + 768 * 768 + 768 * 1)
    # ~500x the FLOPs: compare ratios, not absolute times
    assert wide.throughput_b1024_eps * 10 < small.throughput_b1024_eps
    assert wide.p50_ms > 1.5 * small.p50_ms


def test_benchmark_errors_are_typed(tmp_path):
    with pytest.raises(FileNotFoundError):
        benchmark_models({"x": tmp_path / "missing.pt"}, 4)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    with pytest.raises(LatencyBenchmarkError, match="exited"):
        benchmark_models({"x": junk}, 4, iterations=10, warmup=1)
