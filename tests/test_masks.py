"""The long-tail step, the row pruner and the prefix dimension masks."""

from __future__ import annotations

import pytest
import torch

from optembed.errors import ConfigError
from optembed.masks import (
    RowPruner,
    apply_candidates,
    apply_widths,
    long_tail_step,
    prefix_mask,
    sample_widths,
)

# (x, H(x)) chosen by hand from H(x) = 2 - 4|x| (|x| <= 0.4), 0.4 (0.4 < |x| <= 1), 0.
STEP_POINTS = [
    (-1.5, 0.0),
    (-0.7, 0.4),
    (-0.2, 1.2),
    (0.0, 2.0),
    (0.3, 0.8),
    (0.4, 0.4),
    (0.5, 0.4),
    (1.0, 0.4),
    (2.0, 0.0),
]


def test_step_forward_values() -> None:
    x = torch.tensor([p for p, _ in STEP_POINTS])
    expected = torch.tensor([1.0 if p > 0 else 0.0 for p, _ in STEP_POINTS])
    assert torch.equal(long_tail_step(x), expected)  # x == 0 maps to 0


def test_step_gradient_is_long_tail_estimator() -> None:
    x = torch.tensor([p for p, _ in STEP_POINTS], dtype=torch.float64, requires_grad=True)
    upstream = torch.linspace(0.5, 2.0, x.numel(), dtype=torch.float64)
    (long_tail_step(x) * upstream).sum().backward()
    expected = torch.tensor([h for _, h in STEP_POINTS], dtype=torch.float64) * upstream
    assert x.grad is not None
    assert torch.allclose(x.grad, expected, atol=1e-12)


def hand_table() -> tuple[torch.Tensor, torch.Tensor]:
    # field 0 rows 0..2, field 1 rows 3..4; L1 norms 0.3, 1.5, 0.9 | 2.0, 0.5
    weight = torch.tensor(
        [[0.1, -0.2], [1.0, 0.5], [-0.45, 0.45], [1.0, -1.0], [0.25, 0.25]]
    )
    field_of_row = torch.tensor([0, 0, 0, 1, 1])
    return weight, field_of_row


def test_row_mask_zeroes_rows_below_threshold() -> None:
    weight, _ = hand_table()
    pruner = RowPruner(2, "l1")
    with torch.no_grad():
        pruner.threshold.copy_(torch.tensor([1.0, 0.4]))
    rows = torch.stack([weight[[0, 3]], weight[[1, 4]], weight[[2, 3]]])  # (B=3, n=2, D=2)
    masked, m = pruner(rows)
    expected_m = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    assert torch.equal(m, expected_m)
    assert torch.equal(masked, rows * expected_m[..., None])


def test_row_mask_l2_norm() -> None:
    pruner = RowPruner(1, "l2")
    with torch.no_grad():
        pruner.threshold.fill_(0.9)
    rows = torch.tensor([[[0.6, 0.8]], [[0.5, 0.5]]])  # L2 norms 1.0 and 0.707
    _, m = pruner(rows)
    assert m.flatten().tolist() == [1.0, 0.0]


def test_thresholds_get_gradients_from_loss_and_regularizer() -> None:
    weight, _ = hand_table()
    pruner = RowPruner(2)
    with torch.no_grad():
        pruner.threshold.copy_(torch.tensor([1.0, 0.4]))
    rows = weight[[1, 4]].unsqueeze(0)  # norms 1.5 (t=1.0), 0.5 (t=0.4): x = 0.5, 0.1
    masked, _ = pruner(rows)
    masked.sum().backward()
    # d/dt of sum(rows * S(norm - t)) = -sum(row) * H(norm - t)
    row_sums = rows.sum(-1).squeeze(0)
    h = torch.tensor([0.4, 2.0 - 4.0 * 0.1])
    assert pruner.threshold.grad is not None
    assert torch.allclose(pruner.threshold.grad, -row_sums * h, atol=1e-6)

    pruner.threshold.grad = None
    pruner.regularizer().backward()
    assert torch.allclose(pruner.threshold.grad, -torch.exp(-pruner.threshold.detach()))


def test_embedding_rows_get_gradient_through_mask() -> None:
    pruner = RowPruner(1)
    rows = torch.tensor([[[0.3, -0.2]]], requires_grad=True)  # norm 0.5, t = 0, x = 0.5
    masked, _ = pruner(rows)
    masked.sum().backward()
    # d/de (e * S(|e|_1)) summed: S + sum(e) * H * sign(e) = 1 + 0.1 * 0.4 * sign(e)
    expected = torch.tensor([[[1.0 + 0.04, 1.0 - 0.04]]])
    assert rows.grad is not None
    assert torch.allclose(rows.grad, expected, atol=1e-6)


def test_table_mask_agrees_with_lookup_mask() -> None:
    g = torch.Generator().manual_seed(0)
    cards = [4, 6, 3]
    weight = torch.randn(sum(cards), 5, generator=g)
    field_of_row = torch.repeat_interleave(torch.arange(3), torch.tensor(cards))
    offsets = torch.tensor([0, 4, 10])
    pruner = RowPruner(3)
    with torch.no_grad():
        pruner.threshold.copy_(torch.tensor([3.0, 4.0, 2.5]))
    x = torch.stack([torch.arange(6) % c for c in cards], dim=1)  # every row at least once
    _, m = pruner(weight[x + offsets])
    table = pruner.table_mask(weight, field_of_row)
    assert torch.equal(table[x + offsets], m.bool())
    kept = pruner.kept_per_field(weight, field_of_row)
    assert kept.tolist() == [int(table[field_of_row == f].sum()) for f in range(3)]
    assert 0 < int(table.sum()) < table.numel()  # the thresholds actually split the rows


def test_table_mask_hand_table() -> None:
    weight, field_of_row = hand_table()
    pruner = RowPruner(2)
    with torch.no_grad():
        pruner.threshold.copy_(torch.tensor([1.0, 0.4]))
    assert pruner.table_mask(weight, field_of_row).tolist() == [False, True, False, True, True]
    assert pruner.kept_per_field(weight, field_of_row).tolist() == [1, 2]


def test_norm_equal_to_threshold_is_pruned() -> None:
    weight, field_of_row = hand_table()
    pruner = RowPruner(2)
    with torch.no_grad():
        pruner.threshold.copy_(torch.tensor([1.5, 0.5]))  # rows 1 and 4 sit exactly on t
    assert pruner.table_mask(weight, field_of_row).tolist() == [False, False, False, True, False]
    _, m = pruner(torch.stack([weight[[1, 4]], weight[[0, 3]]]))
    assert m.tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_unknown_norm_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        RowPruner(3, "l3")


def test_prefix_mask_by_hand() -> None:
    mask = prefix_mask(torch.tensor([[1, 3], [4, 2]]), 4)
    expected = torch.tensor(
        [
            [[1, 0, 0, 0], [1, 1, 1, 0]],
            [[1, 1, 1, 1], [1, 1, 0, 0]],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(mask, expected)


def test_sampled_widths_cover_one_to_dim() -> None:
    g = torch.Generator().manual_seed(0)
    w = sample_widths(512, 4, 8, generator=g)
    assert w.shape == (512, 4) and w.dtype == torch.long
    assert int(w.min()) == 1 and int(w.max()) == 8
    assert set(w.flatten().tolist()) == set(range(1, 9))


def test_apply_widths_shared_and_per_sample() -> None:
    emb = torch.randn(3, 2, 4)
    shared = apply_widths(emb, torch.tensor([2, 4]))
    assert torch.equal(shared[:, 0, 2:], torch.zeros(3, 2))
    assert torch.equal(shared[:, 0, :2], emb[:, 0, :2])
    assert torch.equal(shared[:, 1], emb[:, 1])
    per = apply_widths(emb, torch.tensor([[2, 4]] * 3))
    assert torch.equal(per, shared)


def test_candidate_stacked_equals_each_candidate() -> None:
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(5, 3, 6, generator=g)
    cands = sample_widths(4, 3, 6, generator=g)
    stacked = apply_candidates(emb, cands, flatten=False)
    flat = apply_candidates(emb, cands, flatten=True)
    assert stacked.shape == (4, 5, 3, 6) and flat.shape == (20, 3, 6)
    for c in range(4):
        one = apply_widths(emb, cands[c])
        assert torch.equal(stacked[c], one)
        assert torch.equal(flat[c * 5 : (c + 1) * 5], one)


def _reference_masked(rows: torch.Tensor, t: torch.Tensor, widths: torch.Tensor | None, norm: str) -> torch.Tensor:
    pruner = RowPruner(rows.shape[1], norm)
    with torch.no_grad():
        pruner.threshold.copy_(t)
    pruner.threshold.requires_grad_(t.requires_grad)
    out, _ = pruner(rows)
    out = out if widths is None else apply_widths(out, widths)
    out._threshold = pruner.threshold  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("width_kind", ["none", "shared", "per-sample"])
def test_fused_masks_equal_the_separate_modules(norm: str, width_kind: str) -> None:
    """One pass (masked_rows) = RowPruner then apply_widths: values, row and threshold gradients.
    The rows straddle the thresholds (some exactly on it, one all zero) so every branch of the
    long-tail gradient and of the mask is exercised."""
    from optembed.masks.fused import masked_rows

    gen = torch.Generator().manual_seed(3)
    B, n, D = 64, 5, 7
    base = torch.randn(B, n, D, generator=gen) * 0.3
    base[0, 0] = 0.0  # a zero row (l2's gradient is 0 there)
    t = torch.tensor([0.2, 0.9, 1.4, 0.0, 2.5])
    base[1, 1] = torch.full((D,), 0.9 / D)  # l1 norm exactly on the threshold: pruned
    widths = {
        "none": None,
        "shared": torch.tensor([1, 7, 3, 0, 5]),
        "per-sample": torch.randint(0, D + 1, (B, n), generator=gen),
    }[width_kind]
    grad = torch.randn(B, n, D, generator=gen)

    rows_a = base.clone().requires_grad_(True)
    t_a = t.clone().requires_grad_(True)
    out_a = masked_rows(rows_a, t_a, widths, norm)
    out_a.backward(grad)

    rows_b = base.clone().requires_grad_(True)
    out_b = _reference_masked(rows_b, t.clone().requires_grad_(True), widths, norm)
    out_b.backward(grad)
    t_b = out_b._threshold  # type: ignore[attr-defined]

    kept = (out_b != 0).any(-1).float().mean().item()
    assert 0.1 < kept < 0.9  # both sides of the thresholds are present
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    torch.testing.assert_close(rows_a.grad, rows_b.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t_a.grad, t_b.grad, rtol=1e-5, atol=1e-6)


def test_supernet_lookup_uses_the_fused_masks_with_the_same_result() -> None:
    from optembed.embedders.table import TableEmbedder

    torch.manual_seed(0)
    emb = TableEmbedder([30, 20, 10], 6, init_std=0.5, prune_rows=True, sample_dims=True)
    with torch.no_grad():
        emb.pruner.threshold.copy_(torch.tensor([2.0, 2.4, 1.5]))
    ids = torch.stack([torch.randint(0, c, (40,)) for c in (30, 20, 10)], 1)
    widths = torch.randint(1, 7, (40, 3))
    got = emb.lookup(ids, widths)
    ref = apply_widths(emb.pruner(emb.embedding(ids))[0], widths)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert 0 < int((got.abs().sum(-1) == 0).sum()) < got.shape[0] * 3
