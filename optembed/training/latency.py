"""Inference latency and throughput of any ``ids -> logits`` module."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_latency(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    device: torch.device,
    single_runs: int = 200,
    batch_size: int = 4096,
    batch_runs: int = 10,
    warmup: int = 20,
    trials: int = 5,
) -> dict[str, float]:
    """p50/p99 milliseconds at batch 1 and samples/s at ``batch_size`` (rows of ``x`` reused).

    After ``warmup`` calls (and two batch calls), the ``single_runs`` single-row calls and the
    ``batch_runs`` batch calls are split into ``trials`` trials; the reported p50 and throughput
    are the medians over the trials and ``*_min`` / ``*_max`` give their spread (a large spread
    means a busy machine: compare such numbers with care).
    """
    x = x.to(device)
    trials = max(1, min(trials, single_runs, batch_runs))
    singles = [x[i % x.shape[0]].unsqueeze(0) for i in range(single_runs)]
    for i in range(warmup):
        model(singles[i % len(singles)])
    reps = -(-batch_size // x.shape[0])
    big = x.repeat(reps, 1)[:batch_size]
    for _ in range(2):
        model(big)
    times: list[float] = []
    trial_p50: list[float] = []
    trial_rate: list[float] = []
    per_trial, batches = single_runs // trials, max(1, batch_runs // trials)
    for t in range(trials):
        chunk = singles[t * per_trial:(t + 1) * per_trial] if t < trials - 1 else singles[t * per_trial:]
        mine = []
        for xb in chunk:
            _sync(device)
            start = time.perf_counter()
            model(xb)
            _sync(device)
            mine.append((time.perf_counter() - start) * 1e3)
        times += mine
        trial_p50.append(float(torch.tensor(mine).quantile(0.5)))
        _sync(device)
        start = time.perf_counter()
        for _ in range(batches):
            model(big)
        _sync(device)
        trial_rate.append(batch_size * batches / max(time.perf_counter() - start, 1e-9))
    ordered = torch.tensor(times)
    return {
        "latency_p50_ms": float(torch.tensor(trial_p50).median()),
        "latency_p50_ms_min": min(trial_p50),
        "latency_p50_ms_max": max(trial_p50),
        "latency_p99_ms": float(ordered.quantile(0.99)),
        "throughput_samples_per_s": float(torch.tensor(trial_rate).median()),
        "throughput_min": min(trial_rate),
        "throughput_max": max(trial_rate),
        "latency_trials": float(trials),
    }


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of all parameters and buffers."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
