"""PNG plots of an evaluation: trade-off, training curves, search convergence, per-field heatmaps.

``write_plots`` writes them into an artifact folder. The figures are built by small functions
(``tradeoff_figure``, ``curves_figure``, ``fields_figure``, ``convergence_figure``) and the pure
parts (``pareto_front``, ``field_matrices``) are plain functions, so each can be checked alone.
"""

from __future__ import annotations

import math
from itertools import groupby
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optembed.embedders.base import FLOAT_BYTES
from optembed.errors import ConfigError

DPI = 120
LABEL_FONT = 9  # the trade-off plot's point labels
CELL_FONT = 8  # the values written in the heatmap cells
TICK_FONT = 9
ANNOTATE_MAX_FIELDS = 40  # values written in the heatmap cells up to this many fields ...
ANNOTATE_MAX_MODELS = 8  # ... and this many models
CURVE_METRICS = (("train_loss", "training loss"), ("val_logloss", "validation logloss"), ("val_auc", "validation AUC"))
SEARCH_COLORS = ("grey", "tan", "lightblue", "pink")
START_MARKER = "*"  # the starting weights' point (epoch 0) of a training curve
START_LABEL = "epoch 0: the starting weights"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'optembed[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(cost, value)`` points no other point dominates, by cost.

    A point dominates another when its cost is lower or equal and its value higher or equal,
    strictly better in one of the two: equal points do not dominate each other, so both stay
    on the front. Points with a non-finite coordinate are never on it.
    """
    order = sorted((i for i, (c, v) in enumerate(points) if _finite(c) and _finite(v)),
                   key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_cheaper = float("-inf")  # the best value among strictly cheaper points
    for _, same_cost in groupby(order, key=lambda i: points[i][0]):
        group = list(same_cost)
        top = points[group[0]][1]  # highest first within a cost
        if top > best_cheaper:  # not dominated by a cheaper point; its equals at this cost neither
            front.extend(i for i in group if points[i][1] == top)
            best_cheaper = top
    return front


def field_matrices(
    rows: Sequence[dict[str, Any]], cardinalities: Sequence[int]
) -> tuple[list[list[float]], list[list[int]]]:
    """Per model (one list per row) and field: the kept fraction of the field's rows, clipped to
    0..1, and the width."""
    fractions = [[min(max(k / c, 0.0), 1.0) if c > 0 else 0.0 for k, c in zip(r["kept"], cardinalities)] for r in rows]
    widths = [[int(w) for w in r["widths"]] for r in rows]
    return fractions, widths


def _by_search(candidates: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Candidates grouped by the search they come from (key ``search``; one group without it)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in candidates:
        groups.setdefault(str(c.get("search", "search")), []).append(c)
    return groups


def candidate_bytes(candidate: dict[str, Any]) -> int:
    """A search candidate's embedding bytes: its kept parameters as dense float32 values, as a
    retrained compact table stores them."""
    return int(candidate["params"]) * FLOAT_BYTES


def label_size(text: str, fontsize: float) -> tuple[float, float]:
    """A label's box in points, estimated from its length (a character is about 0.6 em wide)."""
    return 0.62 * fontsize * max(len(text), 1) + 4.0, 1.6 * fontsize + 2.0


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two ``(x0, y0, x1, y1)`` boxes share."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(
    anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]], gap: float = 5.0,
    marker: float = 5.0, rings: int = 6,
) -> list[tuple[float, float]]:
    """Offsets (points, of each label box's lower-left corner from its anchor) that keep the labels
    of ``anchors`` (points) off each other and off the other anchors' markers (``marker`` points
    around each): the labels are placed in order, each at the first free place among right/left
    of its point, above/below, then further up and down (``rings`` steps); where none is free,
    the place that overlaps least."""
    dots = [(x - marker, y - marker, x + marker, y + marker) for x, y in anchors]
    placed: list[tuple[float, float, float, float]] = []
    offsets: list[tuple[float, float]] = []
    for n, ((x, y), (w, h)) in enumerate(zip(anchors, sizes, strict=True)):
        candidates = [(dx, -h / 2) for dx in (gap, -gap - w)]  # level with the point
        for k in range(rings + 1):
            lift = k * (h + 2.0)
            for dx in (gap, -gap - w):
                candidates += [(dx, gap + lift), (dx, -gap - h - lift)]
        best, best_cost = candidates[0], float("inf")
        for dx, dy in candidates:
            box = (x + dx, y + dy, x + dx + w, y + dy + h)
            cost = sum(_overlap(box, b) for b in placed) + sum(_overlap(box, d) for j, d in enumerate(dots) if j != n)
            if cost < best_cost:
                best, best_cost = (dx, dy), cost
            if cost == 0.0:
                break
        placed.append((x + best[0], y + best[1], x + best[0] + w, y + best[1] + h))
        offsets.append(best)
    return offsets


def tradeoff_figure(plt: Any, rows: Sequence[dict[str, Any]], candidates: Sequence[dict[str, Any]]) -> Any:
    """Test AUC vs embedding bytes (log scale) of the evaluated models, their Pareto front drawn
    and every point labelled (:func:`place_labels` keeps the labels apart); the search candidates
    (validation AUC) behind them."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for (name, group), color in zip(_by_search(candidates).items(), SEARCH_COLORS * 8):
        xs = [candidate_bytes(c) for c in group]
        ys = [float(c["val_auc"]) for c in group]
        ax.scatter(xs, ys, s=8, alpha=0.35, color=color, zorder=1, label=f"candidates of {name} (validation AUC)")
        front = pareto_front(list(zip(xs, ys)))
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color=color, linewidth=1,
                linestyle="--", zorder=1, label=f"front of {name} (validation AUC)")

    points = [(float(r["embedding_bytes"]), float(r["test_auc"])) for r in rows]
    front = pareto_front(points)
    on_front = set(front)
    if front:
        ax.step([points[i][0] for i in front], [points[i][1] for i in front], where="post", color="black",
                linewidth=1.5, zorder=2, label="Pareto front of the models (test AUC)")
    ax.scatter([points[i][0] for i in on_front], [points[i][1] for i in on_front], s=60, color="tab:red",
               edgecolor="black", zorder=3, label="model on the front")
    off = [i for i in range(len(points)) if i not in on_front]
    ax.scatter([points[i][0] for i in off], [points[i][1] for i in off], s=45, color="tab:blue",
               edgecolor="black", zorder=3, label="model off the front")
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.12)
    # each label beside its point, moved to the first place where it covers no other label nor point
    shown = [i for i in sorted(range(len(points)), key=lambda i: points[i]) if _finite(points[i][0]) and _finite(points[i][1])]
    ax.set_xlabel("embedding bytes (log scale)")
    ax.set_ylabel("AUC (test for models, validation for search candidates)")
    ax.set_title("accuracy vs embedding bytes")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()  # the axes' final place, so the points' positions are those drawn
    ax.get_xlim(), ax.get_ylim()  # the limits the margins give
    to_points = 72.0 / fig.dpi
    anchors = [tuple(float(v) * to_points for v in ax.transData.transform(points[i])) for i in shown]
    texts = [str(rows[i]["variant"]) for i in shown]
    offsets = place_labels(anchors, [label_size(t, LABEL_FONT) for t in texts])  # type: ignore[arg-type]
    for i, text, (dx, dy) in zip(shown, texts, offsets):
        ax.annotate(text, points[i], xytext=(dx, dy), textcoords="offset points", fontsize=LABEL_FONT,
                    ha="left", va="bottom", zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
                    arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 3})
    return fig


def _epoch_axis(history: Sequence[dict[str, Any]]) -> tuple[list[float], bool]:
    """The x values of a history's records: their epochs, or 1..n in order when the history has
    several phases or epochs that do not increase (a search phase, then training); the flag
    says which."""
    epochs = [r.get("epoch") for r in history]
    phases = {r.get("phase") for r in history} - {None}
    if len(phases) <= 1 and all(_finite(e) for e in epochs) and all(a < b for a, b in zip(epochs, epochs[1:])):
        return [float(e) for e in epochs], False  # type: ignore[arg-type]
    return [float(i + 1) for i in range(len(history))], True


def curves_figure(plt: Any, curves: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Any | None:
    """Training loss and validation logloss/AUC per epoch, one line per model, one legend under
    the panels; a record of epoch 0 (the starting weights' validation, before any training) is
    drawn at 0 and marked with a star; ``None`` when no history has any of them."""
    metrics = [(key, title) for key, title in CURVE_METRICS
               if any(_finite(r.get(key)) for _, history in curves for r in history)]
    if not metrics:
        return None
    drawn = [(label, history) for label, history in curves
             if any(_finite(r.get(key)) for r in history for key, _ in metrics)]
    starts = any(r.get("epoch") == 0 for _, history in drawn for r in history)
    ncol = min(len(drawn) + starts, 2)
    legend_rows = -(-(len(drawn) + starts) // ncol)
    height = 4.0 + 0.22 * legend_rows
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), height), squeeze=False)
    any_phased = False
    handles: list[Any] = []
    start_handle: Any = None
    for label, history in drawn:
        xs, phased = _epoch_axis(history)
        any_phased = any_phased or phased
        colour = None
        for ax, (key, _) in zip(axes[0], metrics):
            pts = [(x, float(r[key])) for x, r in zip(xs, history) if _finite(r.get(key))]
            if pts:
                line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, linewidth=1.2,
                               color=colour, label=label + (" (records in order)" if phased else ""))[0]
                if colour is None:
                    colour = line.get_color()
                    handles.append(line)
                starts = [p for p, r in zip(pts, (r for r in history if _finite(r.get(key))))
                          if not phased and r.get("epoch") == 0]
                if starts:  # the starting weights' validation (a warm start's epoch 0): marked apart
                    start_handle = ax.plot([p[0] for p in starts], [p[1] for p in starts], linestyle="none",
                                           marker=START_MARKER, markersize=9, color=colour, markeredgecolor="black",
                                           zorder=3, label=START_LABEL)[0]
    if start_handle is not None:
        handles.append(start_handle)
    for ax, (_, title) in zip(axes[0], metrics):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch" + (" (records in order for runs with phases)" if any_phased else ""), fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.suptitle("training curves of the evaluated models", fontsize=11)
    fig.tight_layout(rect=(0.0, (0.22 * legend_rows + 0.1) / height, 1.0, 1.0))
    return fig


def _heatmap(
    plt: Any, fig: Any, ax: Any, values: Sequence[Sequence[float]], vmax: float, cmap: str, text: Any,
    annotate: bool, colorbar: str,
) -> None:
    image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01).set_label(colorbar, fontsize=8)
    if annotate:
        norm = plt.Normalize(0.0, vmax)
        for m, line in enumerate(values):
            for f, v in enumerate(line):
                colour = "white" if norm(v) < 0.5 else "black"
                ax.text(f, m, text(v), ha="center", va="center", fontsize=CELL_FONT, color=colour)


def fields_figure(
    plt: Any, rows: Sequence[dict[str, Any]], field_names: Sequence[str], cardinalities: Sequence[int]
) -> Any:
    """Two heatmaps, fields across and models down: the kept fraction of each field's rows (0..1)
    and each field's width (0..D); cell values written when the grid is small enough to read."""
    fractions, widths = field_matrices(rows, cardinalities)
    dim = max([int(r.get("dim", 0)) for r in rows] + [w for line in widths for w in line] + [1])
    n_fields, n_models = len(field_names), len(rows)
    annotate = n_fields <= ANNOTATE_MAX_FIELDS and n_models <= ANNOTATE_MAX_MODELS
    panel = 0.45 * max(n_models, 1) + 1.0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8.0, 0.42 * n_fields + 3.0), 2 * panel + 1.6), sharex=True)
    _heatmap(plt, fig, ax1, fractions, 1.0, "viridis", lambda v: f"{v:.2f}", annotate, "kept / cardinality")
    _heatmap(plt, fig, ax2, widths, float(dim), "magma", lambda v: f"{int(v)}", annotate, f"width (D = {dim})")
    labels = [str(r["variant"]) for r in rows]
    for ax, title in ((ax1, "kept fraction of each field's rows"), (ax2, "embedding width of each field")):
        ax.set_yticks(range(n_models), labels, fontsize=TICK_FONT)
        ax.set_title(title, fontsize=10)
    ax2.set_xticks(range(n_fields), list(field_names), rotation=90, fontsize=TICK_FONT)
    ax2.set_xlabel("field")
    fig.tight_layout()
    return fig


def convergence_figure(plt: Any, candidates: Sequence[dict[str, Any]]) -> Any:
    """Best-so-far and mean validation AUC per generation, one pair of lines per search."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, group in _by_search(candidates).items():
        by_gen: dict[int, list[float]] = {}
        for c in group:
            by_gen.setdefault(int(c["generation"]), []).append(float(c["val_auc"]))
        gens = sorted(by_gen)
        best: list[float] = []
        running = float("-inf")
        for g in gens:
            running = max(running, max(by_gen[g]))
            best.append(running)
        line = ax.plot(gens, best, marker="o", label=f"{name}: best so far")[0]
        means = [sum(v) / len(v) for v in (by_gen[g] for g in gens)]
        ax.plot(gens, means, marker=".", linestyle=":", color=line.get_color(), label=f"{name}: generation mean")
    ax.set_xlabel("generation")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("validation AUC")
    ax.set_title("search convergence")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_plots(
    out: Path,
    rows: Sequence[dict[str, Any]],
    field_names: Sequence[str],
    candidates: Sequence[dict[str, Any]],
    cardinalities: Sequence[int] | None = None,
    curves: Sequence[tuple[str, Sequence[dict[str, Any]]]] = (),
) -> dict[str, str]:
    """Write the PNGs into ``out``; returns output name -> file name.

    ``tradeoff.png`` and ``fields.png`` always; ``convergence.png`` with search candidates;
    ``curves.png`` when some ``(label, history)`` in ``curves`` has a loss or a validation
    metric. Without ``cardinalities`` the kept fractions are taken against each field's largest
    kept count among the models.
    """
    plt = _pyplot()
    files: dict[str, str] = {}

    def save(fig: Any, name: str, file: str) -> None:
        fig.savefig(out / file, dpi=DPI)
        plt.close(fig)
        files[name] = file

    save(tradeoff_figure(plt, rows, candidates), "plot_tradeoff", "tradeoff.png")
    fig = curves_figure(plt, curves)
    if fig is not None:
        save(fig, "plot_curves", "curves.png")
    if candidates:
        save(convergence_figure(plt, candidates), "plot_convergence", "convergence.png")
    if cardinalities is None:
        cardinalities = [max([int(r["kept"][f]) for r in rows] + [1]) for f in range(len(field_names))]
    save(fields_figure(plt, rows, field_names, cardinalities), "plot_fields", "fields.png")
    return files
