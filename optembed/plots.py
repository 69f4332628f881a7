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
ANNOTATE_MAX_FIELDS = 40  # values written in the heatmap cells up to this many fields ...
ANNOTATE_MAX_MODELS = 8  # ... and this many models
CURVE_METRICS = (("train_loss", "training loss"), ("val_logloss", "validation logloss"), ("val_auc", "validation AUC"))
SEARCH_COLORS = ("grey", "tan", "lightblue", "pink")


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


def tradeoff_figure(plt: Any, rows: Sequence[dict[str, Any]], candidates: Sequence[dict[str, Any]]) -> Any:
    """Test AUC vs embedding bytes (log scale) of the evaluated models, their Pareto front drawn
    and every point labelled; the search candidates (validation AUC) behind them."""
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
    # labels alternate above and below the points, by size, so neighbours do not overlap
    for rank, i in enumerate(sorted(range(len(points)), key=lambda i: points[i])):
        if not (_finite(points[i][0]) and _finite(points[i][1])):
            continue
        dy = 7 if rank % 2 == 0 else -12
        ax.annotate(str(rows[i]["variant"]), points[i], xytext=(6, dy), textcoords="offset points", fontsize=7,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.7},
                    zorder=4)
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.12)
    ax.set_xlabel("embedding bytes (log scale)")
    ax.set_ylabel("AUC (test for models, validation for search candidates)")
    ax.set_title("accuracy vs embedding bytes")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
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
    the panels; ``None`` when no history has any of them."""
    metrics = [(key, title) for key, title in CURVE_METRICS
               if any(_finite(r.get(key)) for _, history in curves for r in history)]
    if not metrics:
        return None
    drawn = [(label, history) for label, history in curves
             if any(_finite(r.get(key)) for r in history for key, _ in metrics)]
    ncol = min(len(drawn), 2)
    legend_rows = -(-len(drawn) // ncol)
    height = 4.0 + 0.22 * legend_rows
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), height), squeeze=False)
    any_phased = False
    handles: list[Any] = []
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
                ax.text(f, m, text(v), ha="center", va="center", fontsize=5.5, color=colour)


def fields_figure(
    plt: Any, rows: Sequence[dict[str, Any]], field_names: Sequence[str], cardinalities: Sequence[int]
) -> Any:
    """Two heatmaps, fields across and models down: the kept fraction of each field's rows (0..1)
    and each field's width (0..D); cell values written when the grid is small enough to read."""
    fractions, widths = field_matrices(rows, cardinalities)
    dim = max([int(r.get("dim", 0)) for r in rows] + [w for line in widths for w in line] + [1])
    n_fields, n_models = len(field_names), len(rows)
    annotate = n_fields <= ANNOTATE_MAX_FIELDS and n_models <= ANNOTATE_MAX_MODELS
    panel = 0.42 * max(n_models, 1) + 1.0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8.0, 0.34 * n_fields + 3.0), 2 * panel + 1.6), sharex=True)
    _heatmap(plt, fig, ax1, fractions, 1.0, "viridis", lambda v: f"{v:.2f}", annotate, "kept / cardinality")
    _heatmap(plt, fig, ax2, widths, float(dim), "magma", lambda v: f"{int(v)}", annotate, f"width (D = {dim})")
    labels = [str(r["variant"]) for r in rows]
    for ax, title in ((ax1, "kept fraction of each field's rows"), (ax2, "embedding width of each field")):
        ax.set_yticks(range(n_models), labels, fontsize=7)
        ax.set_title(title, fontsize=10)
    ax2.set_xticks(range(n_fields), list(field_names), rotation=90, fontsize=7)
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
