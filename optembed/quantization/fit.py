"""Training a product quantizer on one table: weighted reconstruction, balance, contrast."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from optembed.quantization.config import QuantizerConfig
from optembed.quantization.faiss_backend import faiss_encode, faiss_kmeans
from optembed.quantization.pq import ProductQuantizer

CONTRAST_ROWS = 512  # rows of the batch used as each other's negatives


def popularity_weights(counts: Tensor | None, mode: str, rows: int) -> Tensor:
    """Per-row loss weights: ``log2(1 + count)`` (``log``), ``count`` (``linear``) or 1 (``none``).

    Rows never counted keep a small weight so that every row still gets a sensible code.
    """
    if mode == "none" or counts is None:
        return torch.ones(rows)
    c = counts.double().clamp(min=0)
    w = torch.log2(1 + c) if mode == "log" else c
    return w.clamp(min=1e-3).float()


@dataclass
class FitStats:
    rows: int
    groups: int
    codebook: int
    mse: float  # mean squared error per row, relative to the mean squared row norm
    weighted_mse: float  # the same, popularity-weighted
    codes_used: float  # distinct codes used per group, averaged over groups
    perplexity: float  # exp(entropy) of the code histogram per group, averaged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _losses(pq: ProductQuantizer, x: Tensor, w: Tensor, cfg: QuantizerConfig) -> Tensor:
    d = pq.distances(x)
    hard = d.argmin(dim=-1)
    q = pq.decode(hard)
    scale = (x * x).sum(1).mean().clamp(min=1e-12)
    loss = (w * ((x - q) ** 2).sum(1)).sum() / w.sum() / scale
    if cfg.balance_weight > 0 and pq.codebook > 1:
        # Entropy of the batch's code histogram: its value counts the hard assignments (what the
        # stored codes will use), its gradient flows through the soft assignments (straight
        # through), so rarely used entries are pulled towards the rows and overused ones pushed off.
        soft = torch.softmax(-d / (cfg.soft_temperature * scale / pq.groups), dim=-1)
        assign = F.one_hot(hard, pq.codebook).to(soft.dtype) + soft - soft.detach()
        usage = assign.mean(0)  # (groups, K)
        entropy = -(usage * torch.log(usage.clamp(min=1e-6))).sum(-1) / math.log(pq.codebook)
        loss = loss - cfg.balance_weight * entropy.mean()
    if cfg.contrastive_weight > 0 and x.shape[0] > 1:
        xs, qs = x[:CONTRAST_ROWS], q[:CONTRAST_ROWS]
        logits = -torch.cdist(xs, qs).pow(2) / (cfg.temperature * scale)
        loss = loss + cfg.contrastive_weight * F.cross_entropy(logits, torch.arange(xs.shape[0], device=x.device))
    return loss


@torch.no_grad()
def weighted_kmeans(
    pq: ProductQuantizer, table: Tensor, weights: Tensor, iters: int, chunk: int = 65536
) -> None:
    """Lloyd iterations on every group at once: each entry moves to the weighted mean of the
    sub-vectors assigned to it (weights = popularity), so codes are spent where traffic is.
    An entry that no row chose keeps its place."""
    g, k, s = pq.groups, pq.codebook, pq.sub_dim
    offsets = torch.arange(g, device=table.device) * k
    for _ in range(iters):
        sums = torch.zeros(g * k, s, device=table.device)
        mass = torch.zeros(g * k, device=table.device)
        for i in range(0, table.shape[0], chunk):
            rows = table[i : i + chunk]
            parts = pq.split(rows)  # (n, g, s)
            w = weights[i : i + chunk]
            slot = (pq.encode(rows, chunk=chunk) + offsets).flatten()  # (n * g,)
            sums.index_add_(0, slot, (parts * w[:, None, None]).reshape(-1, s))
            mass.index_add_(0, slot, w.repeat_interleave(g))
        filled = mass > 0
        flat = pq.codebooks.data.view(g * k, s)
        flat[filled] = sums[filled] / mass[filled, None]


def kmeans_rows(table: Tensor, weights: Tensor, per_entry: int, codebook: int,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The rows k-means trains on and their weights.

    With ``per_entry`` > 0 and more than ``per_entry * codebook`` rows, a sample of that many rows
    drawn with replacement in proportion to ``weights``, each then weighing 1: the sample's
    unweighted k-means objective estimates the full table's weighted one without bias, at a
    fixed cost per iteration however large the table. Otherwise every row with its weight.
    """
    n = table.shape[0]
    size = per_entry * codebook
    if per_entry <= 0 or n <= size:
        return table, weights
    pick = torch.multinomial(weights.double().cpu(), size, replacement=True, generator=generator)
    return table[pick.to(table.device)], torch.ones(size, device=table.device)


def weighted_init(pq: ProductQuantizer, table: Tensor, weights: Tensor, generator: torch.Generator) -> None:
    """Start the codebooks from distinct rows drawn with probability proportional to ``weights``."""
    n = table.shape[0]
    if n < pq.codebook:
        pq.init_from(table.cpu(), generator)
        return
    pick = torch.multinomial(weights.double().cpu(), pq.codebook, replacement=False, generator=generator)
    with torch.no_grad():
        pq.codebooks.copy_(pq.split(table[pick.to(table.device)]).transpose(0, 1))


@torch.no_grad()
def fit_stats(pq: ProductQuantizer, table: Tensor, codes: Tensor, weights: Tensor) -> FitStats:
    err = ((table - pq.decode(codes)) ** 2).sum(1)
    scale = float((table * table).sum(1).mean().clamp(min=1e-12))
    used, perp = [], []
    for g in range(pq.groups):
        hist = torch.bincount(codes[:, g].long(), minlength=pq.codebook).double()
        p = hist / hist.sum()
        used.append(int((hist > 0).sum()))
        perp.append(float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum())))
    w = weights.to(err.device)
    return FitStats(
        rows=table.shape[0], groups=pq.groups, codebook=pq.codebook,
        mse=float(err.mean()) / scale, weighted_mse=float((w * err).sum() / w.sum()) / scale,
        codes_used=sum(used) / len(used), perplexity=sum(perp) / len(perp),
    )


def fit_quantizer(
    table: Tensor, counts: Tensor | None, cfg: QuantizerConfig, device: torch.device | str = "cpu"
) -> tuple[ProductQuantizer, Tensor, FitStats]:
    """Learn a quantizer of ``table``'s rows; returns it, the codes (uint8/uint16) and statistics."""
    cfg.validate()
    device = torch.device(device)
    table = table.detach().float().to(device)
    n, dim = table.shape
    weights = popularity_weights(counts, cfg.popularity, n).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    pq = ProductQuantizer(dim, cfg.groups, cfg.codebook).to(device)
    if cfg.kmeans_iters > 0:
        weighted_init(pq, table, weights, gen)  # distinct rows of the whole table
        rows, w = kmeans_rows(table, weights, cfg.kmeans_sample, pq.codebook, gen)
        if cfg.kmeans_backend == "faiss":
            faiss_kmeans(pq, rows, w, cfg.kmeans_iters, cfg.seed)
        else:
            weighted_kmeans(pq, rows, w, cfg.kmeans_iters)
    else:
        pq.init_from(table.cpu(), gen)
    opt = torch.optim.Adam(pq.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps_for(n)):
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen).to(device)
        loss = _losses(pq, table[idx], weights[idx], cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    nearest = faiss_encode(pq, table) if cfg.kmeans_backend == "faiss" else pq.encode(table)  # in chunks
    codes = nearest.to(cfg.torch_code_dtype())
    return pq, codes, fit_stats(pq, table, codes, weights)
