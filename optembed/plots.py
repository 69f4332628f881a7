"""PNG plots of an evaluation: trade-off, search convergence, per-field widths and kept rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optembed.errors import ConfigError


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'optembed[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_search(candidates: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Candidates grouped by the search they come from (key ``search``; one group without it)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in candidates:
        groups.setdefault(str(c.get("search", "search")), []).append(c)
    return groups


def _front(candidates: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidates no other beats with fewer-or-equal parameters and a higher AUC, by size."""
    out: list[dict[str, Any]] = []
    for c in sorted(candidates, key=lambda c: (c["params"], -c["val_auc"])):
        if not out or c["val_auc"] > out[-1]["val_auc"]:
            out.append(c)
    return out


def write_plots(
    out: Path, rows: Sequence[dict[str, Any]], field_names: Sequence[str], candidates: Sequence[dict[str, Any]]
) -> dict[str, str]:
    """Write the PNGs into ``out``; returns output name -> file name."""
    plt = _pyplot()
    files: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    searches = _by_search(candidates)
    for (name, group), color in zip(searches.items(), ("grey", "tan", "lightblue", "pink")):
        ax.scatter(
            [c["params"] for c in group], [c["val_auc"] for c in group],
            s=8, alpha=0.3, color=color, label=f"candidates of {name} (val AUC)",
        )
        front = _front(group)
        ax.step([c["params"] for c in front], [c["val_auc"] for c in front], where="post", color=color,
                linewidth=1, label=f"front of {name}")
    for r in rows:
        ax.scatter([r["embedding_params"]], [r["test_auc"]], s=40, label=f"{r['variant']} (test AUC)")
    ax.set_xscale("log")
    ax.set_xlabel("embedding parameters")
    ax.set_ylabel("AUC")
    ax.set_title("accuracy vs embedding size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)
    plt.close(fig)
    files["plot_tradeoff"] = "tradeoff.png"

    if searches:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, group in searches.items():
            by_gen: dict[int, list[float]] = {}
            for c in group:
                by_gen.setdefault(int(c["generation"]), []).append(float(c["val_auc"]))
            gens = sorted(by_gen)
            best, running = [], float("-inf")
            for g in gens:
                running = max(running, max(by_gen[g]))
                best.append(running)
            line = ax.plot(gens, best, marker="o", label=f"{name}: best so far")[0]
            means = [sum(v) / len(v) for v in (by_gen[g] for g in gens)]
            ax.plot(gens, means, marker=".", linestyle=":", color=line.get_color(), label=f"{name}: generation mean")
        ax.set_xlabel("generation")
        ax.set_ylabel("validation AUC")
        ax.set_title("search convergence")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "convergence.png", dpi=120)
        plt.close(fig)
        files["plot_convergence"] = "convergence.png"

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(7, 0.25 * len(field_names)), 6), sharex=True)
    xs = range(len(field_names))
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        ax1.bar([x + i * width for x in xs], r["widths"], width=width, label=r["variant"])
        ax2.bar([x + i * width for x in xs], r["kept"], width=width, label=r["variant"])
    ax1.set_ylabel("width D_f")
    ax2.set_ylabel("kept rows")
    ax2.set_yscale("log")
    ax2.set_xticks(list(xs), list(field_names), rotation=90, fontsize=7)
    ax1.legend(fontsize=7)
    ax1.set_title("per-field widths and kept rows")
    fig.tight_layout()
    fig.savefig(out / "fields.png", dpi=120)
    plt.close(fig)
    files["plot_fields"] = "fields.png"
    return files
