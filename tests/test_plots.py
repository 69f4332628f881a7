"""evaluate --plot: the Pareto front, the per-field matrices and the figures written."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest

from optembed.plots import candidate_bytes, field_matrices, pareto_front

PNG = b"\x89PNG\r\n\x1a\n"
N_FIELDS = 39
DIM = 16


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_pareto_front_hand_computed() -> None:
    points = [
        (100.0, 0.80),  # 0: cheapest: on the front
        (200.0, 0.79),  # 1: dominated by 0 (more bytes, lower AUC)
        (200.0, 0.82),  # 2: on the front
        (200.0, 0.82),  # 3: equal to 2: neither dominates the other, both on the front
        (300.0, 0.82),  # 4: dominated by 2 (more bytes, equal AUC)
        (400.0, 0.85),  # 5: on the front
        (100.0, 0.78),  # 6: dominated by 0 (equal bytes, lower AUC)
        (50.0, 0.70),  # 7: cheapest of all: on the front
    ]
    assert pareto_front(points) == [7, 0, 2, 3, 5]


def test_pareto_front_edge_cases() -> None:
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.5)]) == [0]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]
    # a non-finite point is not on the front and does not hide another one
    assert pareto_front([(10.0, math.nan), (20.0, 0.6), (math.inf, 0.9)]) == [1]
    # strictly better in both: only the better point stays
    assert pareto_front([(2.0, 0.6), (1.0, 0.7)]) == [1]


def test_field_matrices_fraction_and_width() -> None:
    rows = [{"kept": [5, 0, 12], "widths": [8, 0, 16]}, {"kept": [10, 4, 10], "widths": [16, 16, 16]}]
    fractions, widths = field_matrices(rows, [10, 8, 10])
    assert fractions == [[0.5, 0.0, 1.0], [1.0, 0.5, 1.0]]  # 12 / 10 clipped to 1
    assert widths == [[8, 0, 16], [16, 16, 16]]


def test_candidate_bytes_are_dense_float32() -> None:
    assert candidate_bytes({"params": 1000}) == 4000


def synthetic_rows(n_models: int = 4) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    assert len(names) == N_FIELDS
    cards = [10 + 37 * f for f in range(N_FIELDS)]
    rows = []
    for m in range(n_models):
        kept = [max(1, c * (m + 1) // (n_models + 1)) for c in cards]
        widths = [DIM if m == n_models - 1 else (f * (m + 1)) % (DIM + 1) for f in range(N_FIELDS)]
        params = sum(k * w for k, w in zip(kept, widths))
        rows.append({"variant": f"model-{m}", "test_auc": 0.70 + 0.01 * m - (0.02 if m == 1 else 0.0),
                     "embedding_bytes": params * 4, "kept": kept, "widths": widths, "dim": DIM})
    return rows, names, cards


def synthetic_candidates() -> list[dict[str, Any]]:
    return [{"generation": g, "params": 1000 * (1 + i), "val_auc": 0.69 + 0.001 * g + 0.002 * i, "search": "s"}
            for g in range(3) for i in range(5)]


def synthetic_history(epochs: int, phased: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"epoch": 0, "train_loss": None, "val_auc": 0.6, "val_logloss": 0.6}]
    out += [{"epoch": e, "train_loss": 0.5 - 0.01 * e, "val_auc": 0.7 + 0.01 * e, "val_logloss": 0.45 - 0.005 * e}
            for e in range(1, epochs + 1)]
    if phased:
        out = [{**r, "phase": "search"} for r in out] + [{**r, "phase": "train"} for r in out[1:]]
    return out


def test_write_plots_39_fields(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from optembed.plots import write_plots

    rows, names, cards = synthetic_rows()
    curves = [("model-0", synthetic_history(3)), ("model-2", synthetic_history(2, phased=True))]
    files = write_plots(tmp_path, rows, names, synthetic_candidates(), cards, curves)
    assert files == {"plot_tradeoff": "tradeoff.png", "plot_curves": "curves.png",
                     "plot_convergence": "convergence.png", "plot_fields": "fields.png"}
    for file in files.values():
        assert (tmp_path / file).stat().st_size > 1000
    width, height = png_size(tmp_path / "fields.png")
    assert width >= 0.34 * N_FIELDS * 120  # room for 39 field columns at the figure's dpi
    assert height > width / 8


def test_write_plots_without_curves_or_candidates(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from optembed.plots import write_plots

    rows, names, cards = synthetic_rows(2)
    files = write_plots(tmp_path, rows, names, [], cards, [("model-0", [{"epoch": 1}])])
    assert set(files) == {"plot_tradeoff", "plot_fields"}
    assert not (tmp_path / "curves.png").exists() and not (tmp_path / "convergence.png").exists()


def test_tradeoff_figure_labels_every_model_and_draws_the_front() -> None:
    pytest.importorskip("matplotlib")
    from optembed.plots import _pyplot, tradeoff_figure

    plt = _pyplot()
    rows, _, _ = synthetic_rows()
    fig = tradeoff_figure(plt, rows, synthetic_candidates())
    try:
        ax = fig.axes[0]
        assert ax.get_xscale() == "log"
        assert sorted(t.get_text() for t in ax.texts) == sorted(r["variant"] for r in rows)
        front_line = next(line for line in ax.get_lines() if line.get_label().startswith("Pareto front"))
        expected = pareto_front([(r["embedding_bytes"], r["test_auc"]) for r in rows])
        assert list(front_line.get_xdata()) == [rows[i]["embedding_bytes"] for i in expected]
        assert len(expected) < len(rows)  # model-1 is dominated in the synthetic rows
    finally:
        plt.close(fig)


def test_fields_figure_annotates_small_grids_only() -> None:
    pytest.importorskip("matplotlib")
    from optembed.plots import _pyplot, fields_figure

    plt = _pyplot()
    rows, names, cards = synthetic_rows(4)
    fig = fields_figure(plt, rows, names, cards)
    try:
        top, bottom = fig.axes[0], fig.axes[1]
        assert len(top.texts) == len(bottom.texts) == 4 * N_FIELDS
        assert [t.get_text() for t in bottom.get_yticklabels()] == [r["variant"] for r in rows]
        assert [t.get_text() for t in bottom.get_xticklabels()] == names
        assert top.images[0].get_clim() == (0.0, 1.0) and bottom.images[0].get_clim() == (0.0, float(DIM))
    finally:
        plt.close(fig)
    many, _, _ = synthetic_rows(9)
    fig = fields_figure(plt, many, names, cards)
    try:
        assert not fig.axes[0].texts and not fig.axes[1].texts
    finally:
        plt.close(fig)
