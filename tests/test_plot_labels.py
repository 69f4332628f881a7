"""The plots' legibility, checked on the plot objects (not pixels): trade-off labels kept apart,
readable font sizes, and the training curves' epoch 0 (the starting weights) drawn and marked."""

from __future__ import annotations

import itertools

import pytest

from optembed.plots import START_LABEL, START_MARKER, curves_figure, fields_figure, label_size, place_labels, tradeoff_figure
from pipelines.stage import curve_records
from optembed.training.trainer import FitResult

plt = pytest.importorskip("matplotlib.pyplot")
from optembed.plots import _pyplot  # noqa: E402  (after the skip: matplotlib is there)

_pyplot()


def _boxes(anchors, sizes, offsets):
    return [(x + dx, y + dy, x + dx + w, y + dy + h) for (x, y), (w, h), (dx, dy) in zip(anchors, sizes, offsets)]


def _overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_place_labels_keeps_a_cluster_apart() -> None:
    # six points within a few points of each other, as near-equal models are
    anchors = [(100.0 + 3 * i, 200.0 + 2 * (i % 2)) for i in range(6)]
    sizes = [label_size(f"optembed-{i}", 9) for i in range(6)]
    offsets = place_labels(anchors, sizes)
    boxes = _boxes(anchors, sizes, offsets)
    assert not any(_overlaps(a, b) for a, b in itertools.combinations(boxes, 2)), boxes
    # a lone point keeps its label right beside it
    assert place_labels([(0.0, 0.0)], [(40.0, 14.0)]) == [(5.0, -7.0)]


def _row(variant: str, nbytes: float, auc: float) -> dict:
    return {"variant": variant, "embedding_bytes": nbytes, "test_auc": auc}


def test_tradeoff_labels_do_not_overlap_and_are_legible() -> None:
    rows = [_row("original", 4.0e6, 0.7900), _row("optembed-e", 3.9e6, 0.7899), _row("optembed-d", 3.8e6, 0.7901),
            _row("optembed", 3.7e6, 0.7900), _row("qr", 1.0e6, 0.7800)]
    fig = tradeoff_figure(plt, rows, [])
    ax = fig.axes[0]
    notes = [t for t in ax.texts if t.get_text() in {r["variant"] for r in rows}]
    assert len(notes) == len(rows) and all(t.get_fontsize() >= 8 for t in notes)
    fig.canvas.draw()
    boxes = [t.get_bbox_patch().get_window_extent() for t in notes]  # the label boxes, arrows aside
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    plt.close(fig)


def test_heatmap_cell_values_are_legible() -> None:
    rows = [{"variant": v, "kept": [3, 9, 1], "widths": [4, 16, 8], "dim": 16} for v in ("original", "optembed")]
    fig = fields_figure(plt, rows, ["a", "b", "c"], [10, 10, 10])
    cells = [t for ax in fig.axes for t in ax.texts]
    assert len(cells) == 2 * 2 * 3 and min(t.get_fontsize() for t in cells) >= 8
    plt.close(fig)


def test_curves_draw_and_mark_epoch_0() -> None:
    history = [{"epoch": 0, "val_auc": 0.75, "val_logloss": 0.5},
               {"epoch": 1, "train_loss": 0.6, "val_auc": 0.74, "val_logloss": 0.51},
               {"epoch": 2, "train_loss": 0.55, "val_auc": 0.73, "val_logloss": 0.52}]
    fig = curves_figure(plt, [("optembed", history)])
    auc_ax = next(ax for ax in fig.axes if ax.get_title() == "validation AUC")
    curve = next(line for line in auc_ax.lines if line.get_marker() == "o")
    assert list(curve.get_xdata()) == [0.0, 1.0, 2.0]
    (start,) = [line for line in auc_ax.lines if line.get_marker() == START_MARKER]
    assert list(start.get_xdata()) == [0.0] and list(start.get_ydata()) == [0.75]
    assert START_LABEL in [t.get_text() for t in fig.legends[0].get_texts()]
    loss_ax = next(ax for ax in fig.axes if ax.get_title() == "training loss")  # no loss before training
    assert not [line for line in loss_ax.lines if line.get_marker() == START_MARKER]
    plt.close(fig)


def test_curve_records_start_with_the_starting_weights() -> None:
    result = FitResult(best_state={}, best_epoch=0, best_val_auc=0.75,
                       history=[{"epoch": 1, "train_loss": 0.6, "val_auc": 0.74}])
    result.start_record = {"epoch": 0, "val_auc": 0.75, "test_auc": 0.7}
    records = curve_records(result)
    assert records == [{"epoch": 0, "val_auc": 0.75, "train_loss": None},
                       {"epoch": 1, "train_loss": 0.6, "val_auc": 0.74}]
    result.start_record = {}
    assert curve_records(result) == [{"epoch": 1, "train_loss": 0.6, "val_auc": 0.74}]
