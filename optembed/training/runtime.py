"""Who this process is in a run: rank, world size, device, and the few collectives training needs.

One :class:`Runtime` is built per process by :func:`runtime_from_env` - from the variables
``torchrun`` (or ``--nproc``, which launches through ``torch.distributed``'s own launcher) sets:
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``. Without them the run is a single process and every
collective does nothing. With them the default process group is initialised once (gloo on the
CPU, NCCL on CUDA; rank ``r`` computes on ``cuda:LOCAL_RANK``).

Data parallelism is plain: every rank sees the same global batch order (same seed), takes its
:meth:`Runtime.part` of every global batch, and the gradients are summed across ranks
(:meth:`Runtime.all_reduce_grads`, dense gradients in one flat bucket, sparse row gradients
gathered) before every optimizer step - so the step equals the one-process step on the whole
global batch, up to float rounding.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from optembed.errors import ConfigError
from optembed.training.device import resolve_device

BUCKET_MAX = 1 << 22  # dense gradients up to this many values share one flat all-reduce


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- partitioning -------------------------------------------------------------------------
    def part(self, n: int) -> tuple[int, int]:
        """The rows ``[lo, hi)`` of an ``n``-row block this rank takes (contiguous, in rank order)."""
        return part_bounds(n, self.rank, self.world_size)

    # -- collectives (no-ops in a single process) ----------------------------------------------
    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over ranks (in place); itself in a single process."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_cat(self, tensor: Tensor) -> Tensor:
        """Every rank's ``tensor`` concatenated along dim 0 in rank order (sizes may differ)."""
        if not self.distributed:
            return tensor
        size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        counts = [int(s) for s in sizes]
        longest = max(counts)
        padded = tensor
        if tensor.shape[0] < longest:
            pad = torch.zeros((longest - tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
            padded = torch.cat([tensor, pad])
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable plain data only: numbers, strings, dicts)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module``."""
        if not self.distributed:
            return
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)

    def average_buffers(self, module: nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running statistics) over ranks: each rank
        normalises over its own part of a batch, so they drift apart between validations."""
        if not self.distributed:
            return
        with torch.no_grad():
            for b in module.buffers():
                if b.is_floating_point():
                    dist.all_reduce(b, op=dist.ReduceOp.SUM)
                    b.div_(self.world_size)

    def all_reduce_grads(self, dense: list[nn.Parameter], sparse: list[nn.Parameter]) -> None:
        """Sum the gradients over ranks. ``dense``: parameters with dense gradients; ``sparse``:
        embedding tables with sparse row gradients (gathered, so their optimizer still sees only
        the touched rows). A parameter without a gradient on any rank keeps none (its optimizer
        skips it, as in one process); one with a gradient somewhere gets the sum everywhere."""
        if not self.distributed:
            return
        params = [*dense, *sparse]
        if not params:
            return
        dev = params[0].device
        flags = torch.tensor([float(p.grad is not None) for p in params], device=dev)
        small = [p for p in dense if p.numel() <= BUCKET_MAX]
        big = [p for p in dense if p.numel() > BUCKET_MAX]
        flat = torch.cat([*(_dense_grad(p).reshape(-1) for p in small), flags])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        has = flat[-len(params):].tolist()
        present = {id(p): h > 0 for p, h in zip(params, has, strict=True)}
        offset = 0
        for p in small:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone() if present[id(p)] else None
            offset += n
        for p in big:
            if not present[id(p)]:
                p.grad = None
                continue
            g = _dense_grad(p)
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            p.grad = g
        for p in sparse:
            if not present[id(p)]:
                p.grad = None
                continue
            g = p.grad
            if g is not None and g.is_sparse:
                rows, values = g._indices()[0], g._values()
            elif g is not None:  # a dense gradient on a sparse table: every row
                rows, values = torch.arange(p.shape[0], device=dev), g
            else:
                rows = torch.empty(0, dtype=torch.long, device=dev)
                values = torch.empty((0, *p.shape[1:]), dtype=p.dtype, device=dev)
            rows, values = self.gather_cat(rows), self.gather_cat(values)
            p.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, p.shape)


def _dense_grad(p: nn.Parameter) -> Tensor:
    if p.grad is None:
        return torch.zeros_like(p)
    return p.grad.to_dense() if p.grad.is_sparse else p.grad


def part_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` that rank ``rank`` of ``world_size`` takes."""
    return rank * n // world_size, (rank + 1) * n // world_size


def single(device: torch.device) -> Runtime:
    """The one-process runtime on ``device`` (every collective a no-op)."""
    return Runtime(device=device)


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the launcher's variables; ``(0, 1, 0)`` without."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return rank, world, local


def runtime_from_env(device: str = "auto") -> Runtime:
    """The runtime of this process: a single process unless ``WORLD_SIZE`` > 1, when the default
    process group is joined (once) and CUDA ranks take ``cuda:LOCAL_RANK``."""
    rank, world, local = env_world()
    dev = resolve_device(device)
    if world == 1:
        return Runtime(device=dev)
    if dev.type == "cuda":
        if dev.index not in (None, local):
            raise ConfigError(f"--device {device} under {world} processes: each rank uses cuda:LOCAL_RANK; pass --device cuda")
        if local >= torch.cuda.device_count():
            raise ConfigError(f"rank {rank} needs cuda:{local}, but only {torch.cuda.device_count()} GPU(s) are visible")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        atexit.register(_leave)
    elif dist.get_world_size() != world:
        raise ConfigError(f"the process group has {dist.get_world_size()} ranks, WORLD_SIZE says {world}")
    return Runtime(device=dev, rank=rank, world_size=world, local_rank=local)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
