"""Product quantization core: round trip, padding, code dtypes, byte counts, popularity weighting."""

from __future__ import annotations

import pytest
import torch

from optembed.errors import ConfigError
from optembed.quantization import ProductQuantizer, QuantizerConfig, code_dtype, fit_quantizer, popularity_weights
from optembed.quantization.plan import plan_field
from optembed.quantization.rank_remap import RankRemap, popcount32


def test_codes_decode_to_the_quantized_rows_and_nearest_entries() -> None:
    torch.manual_seed(0)
    pq = ProductQuantizer(dim=6, groups=4, codebook=5)  # 4 does not divide 6: rows are zero-padded to 8
    assert (pq.groups, pq.sub_dim, pq.padded) == (4, 2, 8)
    with torch.no_grad():
        pq.codebooks.normal_()
    x = torch.randn(50, 6, requires_grad=True)
    codes, q = pq.quantize(x)
    assert torch.equal(pq.decode(codes), q.detach())
    # brute force: each sub-vector's code is its nearest entry
    parts = torch.nn.functional.pad(x.detach(), (0, 2)).view(50, 4, 2)
    for g in range(4):
        d = ((parts[:, g, None, :] - pq.codebooks[g].detach()[None]) ** 2).sum(-1)
        assert torch.equal(codes[:, g], d.argmin(1))
    # straight-through: the gradient of q reaches both the input and the codebooks
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x)) and pq.codebooks.grad is not None
    narrow = ProductQuantizer(dim=2, groups=4, codebook=3)
    assert narrow.groups == 2 and narrow.sub_dim == 1


def test_code_dtype_and_bytes() -> None:
    assert code_dtype(256) == torch.uint8 and code_dtype(257) == torch.uint16
    pq = ProductQuantizer(dim=16, groups=4, codebook=256)
    assert pq.code_bytes(1000) == 1000 * 4 * 1
    assert pq.codebook_bytes() == 4 * 256 * 4 * 4
    big = ProductQuantizer(dim=16, groups=4, codebook=1024)
    assert big.code_bytes(1000) == 1000 * 4 * 2


def test_fit_round_trip_and_uint16_codes() -> None:
    table = torch.randn(600, 8, generator=torch.Generator().manual_seed(1))
    cfg = QuantizerConfig(groups=2, codebook=300, steps=5, batch_size=256)
    pq, codes, stats = fit_quantizer(table, None, cfg)
    assert codes.dtype == torch.uint16 and codes.shape == (600, 2)
    assert torch.equal(codes.long(), pq.encode(table))
    err = ((table - pq.decode(codes).detach()) ** 2).sum(1).mean() / (table**2).sum(1).mean()
    assert stats.mse == pytest.approx(float(err), rel=1e-5)
    assert 1 <= stats.codes_used <= 300 and 1 <= stats.perplexity <= stats.codes_used


def test_popularity_weighting_favours_frequent_rows() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(2000, 8, generator=g)
    counts = torch.ones(2000)
    counts[:100] = 1e6
    errors = {}
    for mode in ("none", "log"):
        cfg = QuantizerConfig(
            groups=2, codebook=16, steps=150, batch_size=512, max_epochs=100, popularity=mode, balance_weight=0, contrastive_weight=0
        )
        pq, codes, _ = fit_quantizer(table, counts, cfg)
        with torch.no_grad():
            err = ((table - pq.decode(codes)) ** 2).sum(1)
        errors[mode] = float(err[:100].mean())
    assert errors["log"] < 0.95 * errors["none"], errors
    w = popularity_weights(torch.tensor([0.0, 1.0, 3.0]), "log", 3)
    assert torch.allclose(w, torch.tensor([1e-3, 1.0, 2.0]))


@pytest.mark.parametrize(
    "kwargs",
    [{"codebook": 70000}, {"codebook": 1}, {"groups": 0}, {"popularity": "sqrt"}, {"temperature": 0.0}, {"sub_dim": 0},
     {"codebook_share": 0.0}],
)
def test_bad_quantizer_configs(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        QuantizerConfig(**kwargs).validate()


@pytest.mark.parametrize(
    "rows, width, kwargs, expected",
    [
        # groups 4 x 16 columns, uint8: codebooks 4 x K x 16 x 4 = 256 K bytes <= 0.25 x rows x 4 -> K <= rows / 256
        (100_000, 64, {}, (4, 16, 256, "uint8")),
        (12_517, 64, {}, (4, 16, 32, "uint8")),  # K <= 48.9
        (1_460, 64, {}, (4, 16, 4, "uint8")),  # K <= 5.7
        (583, 64, {}, (4, 16, 2, "uint8")),
        (305, 64, {}, (4, 16, 0, "")),  # K <= 1.2: stays float
        # groups from a sub-vector width: width 8 -> 1 group of 8; 32 K <= 2,500 -> K = 64
        (10_000, 8, {"sub_dim": 16}, (1, 8, 64, "uint8")),
        (10_000, 40, {"sub_dim": 16}, (3, 14, 32, "uint8")),  # 3 groups of 14 columns; 168 K <= 7,500
        # K up to 1,024 (uint16): 4 x 1024 x 16 x 4 = 262,144 <= 0.25 x 300,000 x 8
        (300_000, 64, {"codebook": 1024}, (4, 16, 1024, "uint16")),
        # 20,000 rows: 512 entries (uint16) are too dear; 256 (uint8) too; 128 too; 64 fits 16,384 <= 20,000
        (20_000, 64, {"codebook": 1024}, (4, 16, 64, "uint8")),
        (1_000_000, 64, {"codebook": 300}, (4, 16, 300, "uint16")),  # not a power of two: kept as given
        (30_000, 64, {"code_dtype": "uint16"}, (4, 16, 128, "uint16")),  # 256 K <= 0.25 x 30,000 x 8 = 60,000
        (50, 4, {"codebook": 256, "codebook_share": 100.0}, (4, 1, 50, "uint8")),  # never more entries than rows
    ],
)
def test_plan_field_sizes_each_codebook_from_its_rows(rows: int, width: int, kwargs: dict, expected: tuple) -> None:
    plan = plan_field(rows, width, QuantizerConfig(**kwargs))
    assert (plan.groups, plan.sub_dim, plan.codebook, plan.code_dtype) == expected
    if plan.codebook:
        size = 1 if plan.code_dtype == "uint8" else 2
        assert plan.code_bytes == rows * plan.groups * size
        assert plan.codebook_bytes == plan.groups * plan.codebook * plan.sub_dim * 4


def test_popcount_against_python() -> None:
    values = torch.randint(0, 2**32, (1000,), dtype=torch.long, generator=torch.Generator().manual_seed(0))
    values[:3] = torch.tensor([0, 2**32 - 1, 2**31])
    assert popcount32(values).tolist() == [bin(v).count("1") for v in values.tolist()]


def test_rank_remap_equals_the_int32_remap_on_random_ids() -> None:
    g = torch.Generator().manual_seed(3)
    cards = [1, 2, 31, 257, 5000, 64, 1000]
    remaps = []
    for card, p in zip(cards, [0.5, 0.0, 0.9, 0.3, 0.05, 1.0, 0.5]):
        keep = torch.rand(card, generator=g) < p
        keep[0] = True
        remap = torch.zeros(card, dtype=torch.int32)
        remap[keep] = torch.arange(int(keep.sum()), dtype=torch.int32)
        remaps.append(remap)
    bitmap = RankRemap.from_remaps(remaps)
    x = torch.stack([torch.randint(0, c, (4000,), generator=g) for c in cards], dim=1)
    x[:len(cards)] = torch.tensor([c - 1 for c in cards])  # every field's last id
    expected = torch.stack([remaps[f][x[:, f]].long() for f in range(len(cards))], dim=1)
    assert torch.equal(bitmap(x), expected)
    for f, remap in enumerate(remaps):
        assert torch.equal(bitmap.field_rows(f, cards[f]), remap.long())
    # 6,355 ids padded to 6,400 (25 blocks of 256): 200 int32 words + 25 int32 ranks + 7 x (base + offset) int64
    assert bitmap.nbytes() == 200 * 4 + 25 * 4 + 7 * 16
    with pytest.raises(ValueError):
        RankRemap.from_remaps([torch.tensor([0, 2, 1])])  # kept ids out of order


def test_weighted_kmeans_moves_entries_to_weighted_means() -> None:
    from optembed.quantization.fit import weighted_kmeans
    from optembed.quantization.pq import ProductQuantizer

    # One group of one column: rows 0, 1, 10 and 12 with weights 1, 3, 1, 1; entries start at 0 and 10.
    pq = ProductQuantizer(1, 1, 2)
    with torch.no_grad():
        pq.codebooks.copy_(torch.tensor([[[0.0], [10.0]]]))
    table = torch.tensor([[0.0], [1.0], [10.0], [12.0]])
    weights = torch.tensor([1.0, 3.0, 1.0, 1.0])
    weighted_kmeans(pq, table, weights, iters=3, chunk=3)  # chunks split the rows: sums must still add up
    assert torch.allclose(pq.codebooks.detach().flatten(), torch.tensor([0.75, 11.0]))


def test_weighted_kmeans_keeps_unused_entries_and_spans_groups() -> None:
    from optembed.quantization.fit import weighted_kmeans
    from optembed.quantization.pq import ProductQuantizer

    # Two groups of one column; group 1's second entry (100) is nearest to no row and stays put.
    pq = ProductQuantizer(2, 2, 2)
    with torch.no_grad():
        pq.codebooks.copy_(torch.tensor([[[0.0], [5.0]], [[0.0], [100.0]]]))
    table = torch.tensor([[1.0, 2.0], [6.0, 4.0]])
    weighted_kmeans(pq, table, torch.tensor([1.0, 1.0]), iters=1)
    assert torch.allclose(pq.codebooks.detach().flatten(), torch.tensor([1.0, 6.0, 3.0, 100.0]))


def test_kmeans_start_lowers_the_error_of_popular_rows() -> None:
    from optembed.quantization import fit_quantizer

    g = torch.Generator().manual_seed(0)
    rows = 4000
    table = torch.randn(rows, 8, generator=g)
    counts = torch.ones(rows, dtype=torch.long)
    counts[:40] = 10_000  # 1% of the rows carry most of the traffic
    errors = {}
    for iters in (0, 10):
        cfg = QuantizerConfig(groups=2, codebook=16, steps=0, kmeans_iters=iters, popularity="linear",
                              balance_weight=0.0, contrastive_weight=0.0)
        pq, codes, _ = fit_quantizer(table, counts, cfg)
        errors[iters] = float(((table[:40] - pq.decode(codes[:40]).detach()) ** 2).sum(1).mean())
    assert errors[10] < 0.5 * errors[0], errors


def test_kmeans_sample_draws_rows_by_weight_and_keeps_small_tables_whole() -> None:
    from optembed.quantization.fit import kmeans_rows

    g = torch.Generator().manual_seed(0)
    table = torch.arange(1000, dtype=torch.float32)[:, None]
    weights = torch.ones(1000)
    weights[:10] = 99.0  # 1% of the rows hold 990 / 1980 = half of the weight
    rows, w = kmeans_rows(table, weights, per_entry=32, codebook=16, generator=g)
    assert rows.shape == (512, 1) and torch.equal(w, torch.ones(512))
    heavy = float((rows[:, 0] < 10).float().mean())
    assert 0.40 < heavy < 0.60, heavy  # expected 0.5; binomial sd ~0.022
    same, same_w = kmeans_rows(table, weights, per_entry=64, codebook=16, generator=g)  # 1,024 > 1,000 rows
    assert same is table and same_w is weights
    every, _ = kmeans_rows(table, weights, per_entry=0, codebook=16, generator=g)
    assert every is table


def test_sampled_kmeans_reaches_the_error_of_the_full_one() -> None:
    from optembed.quantization import fit_quantizer

    g = torch.Generator().manual_seed(1)
    centres = torch.randn(64, 8, generator=g) * 3
    table = centres[torch.randint(0, 64, (20_000,), generator=g)] + 0.1 * torch.randn(20_000, 8, generator=g)
    errors = {}
    for sample in (0, 64):  # 64 x 16 = 1,024 of the 20,000 rows per iteration
        cfg = QuantizerConfig(groups=1, codebook=16, steps=0, kmeans_iters=15, kmeans_sample=sample,
                              popularity="none", balance_weight=0.0, contrastive_weight=0.0)
        pq, codes, stats = fit_quantizer(table, None, cfg)
        errors[sample] = stats.mse
    assert errors[64] < 1.15 * errors[0], errors


def test_faiss_backend_matches_the_torch_fit() -> None:
    pytest.importorskip("faiss")
    from optembed.quantization import fit_quantizer

    g = torch.Generator().manual_seed(2)
    centres = torch.randn(32, 6, generator=g) * 3
    table = centres[torch.randint(0, 32, (5000,), generator=g)] + 0.1 * torch.randn(5000, 6, generator=g)
    counts = torch.randint(1, 50, (5000,), generator=g)
    fits = {}
    for backend in ("torch", "faiss"):
        cfg = QuantizerConfig(groups=2, codebook=16, steps=0, kmeans_iters=10, popularity="linear",
                              balance_weight=0.0, contrastive_weight=0.0, kmeans_backend=backend)
        fits[backend] = fit_quantizer(table, counts, cfg)
    pq, codes, stats = fits["faiss"]
    assert torch.equal(codes.long(), pq.encode(table))  # faiss's codes are the nearest entries
    assert stats.weighted_mse == pytest.approx(fits["torch"][2].weighted_mse, rel=0.02)


def test_faiss_backend_needs_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    with pytest.raises(ConfigError, match="faiss-cpu"):
        QuantizerConfig(kmeans_backend="faiss").validate()
    with pytest.raises(ConfigError, match="kmeans-backend"):
        QuantizerConfig(kmeans_backend="gpu").validate()
