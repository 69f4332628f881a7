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
    warmup: int = 5,
) -> dict[str, float]:
    """p50/p99 milliseconds at batch 1 and samples/s at ``batch_size`` (rows of ``x`` reused)."""
    x = x.to(device)
    singles = [x[i % x.shape[0]].unsqueeze(0) for i in range(single_runs)]
    for i in range(warmup):
        model(singles[i % len(singles)])
    times = []
    for xb in singles:
        _sync(device)
        start = time.perf_counter()
        model(xb)
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    reps = -(-batch_size // x.shape[0])
    big = x.repeat(reps, 1)[:batch_size]
    for _ in range(2):
        model(big)
    _sync(device)
    start = time.perf_counter()
    for _ in range(batch_runs):
        model(big)
    _sync(device)
    elapsed = time.perf_counter() - start
    ordered = torch.tensor(times)
    return {
        "latency_p50_ms": float(ordered.quantile(0.5)),
        "latency_p99_ms": float(ordered.quantile(0.99)),
        "throughput_samples_per_s": batch_size * batch_runs / elapsed,
    }


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of all parameters and buffers."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
