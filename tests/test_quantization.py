"""Product quantization core: round trip, padding, code dtypes, byte counts, popularity weighting."""

from __future__ import annotations

import pytest
import torch

from optembed.errors import ConfigError
from optembed.quantization import ProductQuantizer, QuantizerConfig, code_dtype, fit_quantizer, popularity_weights


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
    "kwargs", [{"codebook": 70000}, {"codebook": 1}, {"groups": 0}, {"popularity": "sqrt"}, {"temperature": 0.0}]
)
def test_bad_quantizer_configs(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        QuantizerConfig(**kwargs).validate()
