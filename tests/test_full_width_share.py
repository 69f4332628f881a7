"""Supernet width sampling with a share of samples at the full width (``--full-width-share``)."""

from __future__ import annotations

import pytest
import torch

from optembed.masks.dim_mask import sample_widths
from optembed.training.config import TrainConfig


def test_share_zero_is_the_papers_uniform_draw() -> None:
    a = sample_widths(500, 7, 16, torch.Generator().manual_seed(3))
    b = sample_widths(500, 7, 16, torch.Generator().manual_seed(3), full_share=0.0)
    assert torch.equal(a, b) and int(a.min()) >= 1 and int(a.max()) <= 16


def test_share_one_trains_every_sample_at_full_width() -> None:
    w = sample_widths(300, 5, 8, torch.Generator().manual_seed(1), full_share=1.0)
    assert bool((w == 8).all())


def test_a_share_sets_whole_samples_to_full_width() -> None:
    n, fields, dim, share = 20000, 6, 16, 0.5
    w = sample_widths(n, fields, dim, torch.Generator().manual_seed(2), full_share=share)
    full_rows = (w == dim).all(dim=1).float().mean().item()
    # a sample is all-full when chosen (share) or, rarely, when every uniform draw is dim
    expected = share + (1 - share) * (1 / dim) ** fields
    assert full_rows == pytest.approx(expected, abs=0.015)
    partial = w[~(w == dim).all(dim=1)]
    assert partial.float().mean().item() == pytest.approx((dim + 1) / 2, abs=0.2)  # the rest stays uniform


def test_the_share_is_a_fraction_and_absent_from_old_fingerprints() -> None:
    assert "full_width_share" not in TrainConfig().to_params()
    assert TrainConfig(full_width_share=0.5).to_params()["full_width_share"] == 0.5
    with pytest.raises(Exception, match="full-width-share"):
        TrainConfig(full_width_share=1.5).validate()
