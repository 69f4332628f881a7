"""The shared-block first layer against a brute-force float64 reference."""

from __future__ import annotations

import pytest
import torch

from optembed.layers.interactions import fm_second_order, fm_second_order_masked
from optembed.layers.prefix_linear import PrefixLinear


def brute_force(emb: torch.Tensor, weight: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Each candidate's masked input times the whole weight, one candidate and field at a time."""
    emb, weight = emb.double(), weight.double()
    n, dim = emb.shape[1], emb.shape[2]
    out = torch.zeros(widths.shape[0], emb.shape[0], weight.shape[0], dtype=torch.float64)
    for c in range(widths.shape[0]):
        for f in range(n):
            w = int(widths[c, f])
            out[c] += emb[:, f, :w] @ weight[:, f * dim : f * dim + w].t()
    return out.reshape(-1, weight.shape[0])


@pytest.mark.parametrize(
    ("n", "dim", "out", "block"),
    [(3, 8, 5, 4), (4, 10, 6, 4), (2, 9, 3, 1), (3, 6, 4, 16), (5, 64, 7, 16), (2, 7, 5, 7), (3, 12, 4, 5)],
)
def test_equals_brute_force(n: int, dim: int, out: int, block: int) -> None:
    g = torch.Generator().manual_seed(n * 100 + dim)
    weight = torch.randn(out, n * dim, generator=g)
    emb = torch.randn(6, n, dim, generator=g)
    # every width once per field (boundaries, just below and above them, 1 and dim), then random ones
    every = torch.arange(1, dim + 1).view(-1, 1).expand(dim, n)
    widths = torch.cat([every, torch.randint(1, dim + 1, (7, n), generator=g)])
    layer = PrefixLinear(weight, n, dim, block)
    got = layer(emb, layer.prepare(widths))
    assert got.shape == (widths.shape[0] * 6, out)
    torch.testing.assert_close(got.double(), brute_force(emb, weight, widths), atol=1e-4, rtol=1e-5)
    # a second batch of another size through the same prepared candidates and work buffers
    emb2 = torch.randn(3, n, dim, generator=g)
    torch.testing.assert_close(layer(emb2, layer.prepare(widths)).double(), brute_force(emb2, weight, widths), atol=1e-4, rtol=1e-5)


def test_leftover_columns_are_at_most_half_a_block() -> None:
    n, dim, block = 2, 16, 8
    layer = PrefixLinear(torch.randn(3, n * dim), n, dim, block)
    prep = layer.prepare(torch.tensor([[1, 16], [4, 12], [5, 7], [8, 9]]))
    # widths 1, 4, 12, 9 add 1, 4, 4, 1 columns after a boundary; 5 and 7 take the whole first
    # block and subtract its last 3 and 1 columns; 8 and 16 are whole blocks
    assert prep.rem_cols.shape[1] == max(1 + 0, 4 + 4, 3 + 1, 0 + 1)
    assert torch.equal(prep.select_t.t(), torch.tensor([[0, 0, 1, 1], [0, 0, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0]]).float())
    signs = torch.sign(prep.rem_weight[:, :, 0] / layer.weight_t[prep.rem_cols, 0])
    assert signs[2, :4].tolist() == [-1.0] * 4 and signs[1].tolist() == [1.0] * 8
    assert prep.rem_cols[2, 4:].eq(n * dim).all()  # padding: the zero column


def test_bad_shapes() -> None:
    with pytest.raises(ValueError):
        PrefixLinear(torch.randn(3, 10), 2, 4, 2)
    with pytest.raises(ValueError):
        PrefixLinear(torch.randn(3, 8), 2, 4, 0)


def test_masked_fm_equals_fm_of_masked_copies() -> None:
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(5, 4, 6, generator=g)
    masks = (torch.arange(6).view(1, 1, 6) < torch.randint(1, 7, (3, 4, 1), generator=g)).float()
    want = torch.stack([fm_second_order(emb * m) for m in masks])
    torch.testing.assert_close(fm_second_order_masked(emb, masks), want, atol=1e-5, rtol=1e-5)
