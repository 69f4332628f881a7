"""Options sized from the data (batch size, embedding L2) and the validation monitor."""

from __future__ import annotations

import math

import pytest

from optembed.errors import ConfigError
from optembed.training import recipe
from optembed.training.config import TrainConfig


@pytest.mark.parametrize(
    ("rows", "batch"),
    [(0, 128), (5_000, 128), (9_000, 128), (12_800, 256), (69_266, 1024), (204_799, 2048), (204_800, 4096), (50_000_000, 4096)],
)
def test_auto_batch_size_by_hand(rows: int, batch: int) -> None:
    """The largest power of two in [128, 4096] with rows >= 50 * batch (128 when none)."""
    assert recipe.auto_batch_size(rows) == batch
    if batch > 128:
        assert rows // batch >= 50 and rows // (2 * batch) < 50 or batch == 4096


def test_auto_embedding_l2_meets_the_published_points_and_is_clipped() -> None:
    assert recipe.auto_embedding_l2(200_000) == pytest.approx(0.05)
    assert recipe.auto_embedding_l2(36_000_000) == pytest.approx(1e-5)
    assert recipe.auto_embedding_l2(500_000_000) == 1e-5  # clipped above the large point
    # below the small point: 0.05 * 200,000 / rows, by hand, at most 1
    assert recipe.auto_embedding_l2(100_000) == pytest.approx(0.1)
    assert recipe.auto_embedding_l2(69_266) == pytest.approx(0.14)  # 0.1444 to two digits
    assert recipe.auto_embedding_l2(16_000) == pytest.approx(0.62)  # 0.625 to two digits
    assert recipe.auto_embedding_l2(10_000) == pytest.approx(1.0)
    assert recipe.auto_embedding_l2(8_000) == 1.0 and recipe.auto_embedding_l2(0) == 1.0
    assert recipe.auto_embedding_l2(199_999) == pytest.approx(0.05)  # continuous at the small point
    # in between: the straight line on log-log axes, by hand at the geometric midpoint
    mid = math.sqrt(200_000 * 36_000_000)
    assert recipe.auto_embedding_l2(int(mid)) == pytest.approx(math.sqrt(0.05 * 1e-5), rel=0.01)
    values = [recipe.auto_embedding_l2(int(r)) for r in (1e4, 3e4, 1e5, 1e6, 1e7, 1e8)]
    assert values == sorted(values, reverse=True)


def test_resolve_fills_only_the_auto_options() -> None:
    cfg, note = recipe.resolve(TrainConfig(), 69_266)
    assert cfg.batch_size == 1024 and cfg.embedding_l2 == 0.14
    assert note == "auto: batch size 1,024, embedding L2 0.14 (sized from 69,266 training rows)"
    given = TrainConfig(batch_size=300, embedding_l2=0.0)
    same, none = recipe.resolve(given, 69_266)
    assert same == given and none is None


def test_monitor_scores_by_hand() -> None:
    rec = {"val_auc": 0.8, "val_logloss": 0.45}
    assert TrainConfig(monitor="auc").score(rec) == 0.8
    assert TrainConfig().monitor == "auc-logloss"
    assert TrainConfig(monitor="auc-logloss").score(rec) == pytest.approx(0.35)
    with pytest.raises(ConfigError, match="--monitor"):
        TrainConfig(monitor="loss").validate()


def test_a_taught_model_takes_at_most_the_small_data_l2() -> None:
    """Under a teacher the auto L2 is capped at 0.05; above 0.2M rows it is the same line."""
    small, note = recipe.resolve(TrainConfig(distill=0.5), 16_000)
    assert small.embedding_l2 == 0.05 and recipe.auto_embedding_l2(16_000) == pytest.approx(0.62)
    assert note == "auto: batch size 256, embedding L2 0.05 (sized from 16,000 training rows, at most 0.05 under a teacher)"
    large, note = recipe.resolve(TrainConfig(distill=0.5), 1_000_000)
    assert large.embedding_l2 == recipe.auto_embedding_l2(1_000_000) < 0.05
    assert note is not None and "under a teacher" not in note  # the cap did not bind
    given, _ = recipe.resolve(TrainConfig(distill=0.5, embedding_l2=0.3), 16_000)
    assert given.embedding_l2 == 0.3  # an explicit value is kept
    alone, _ = recipe.resolve(TrainConfig(), 16_000)
    assert alone.embedding_l2 == pytest.approx(0.62)
