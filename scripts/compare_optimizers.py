"""Compare the embedding training options on synthetic data, over a few epochs.

Dense Adam vs ``sparse-adam`` vs ``rowwise-adagrad``, each plain, with ``--freq-lr`` and with
``--reinit-embeddings-each-epoch``: synthetic Criteo-format data (``optembed synth``) is
preprocessed, then one ``supernet`` artifact is trained per variant (early stopping off, so
every epoch is recorded). Prints a Markdown table: validation AUC after every epoch, the best
epoch, its test AUC, seconds per epoch, embedding and total optimizer state, row sparsity.

With ``--tasks 2`` the data has a click and a sparse conversion label (``synth --tasks 2``) and
one model learns both: the table then has one row per task and remedy, the validation AUC of that
task after every epoch (mean over ``--seeds``), the epoch where it peaks and how much it has lost by
the last epoch (how badly the task overfits when trained on for more epochs).

Usage::

    python scripts/compare_optimizers.py                                # small, a few minutes on CPU
    python scripts/compare_optimizers.py --rows 1000000 --epochs 5 --device cuda --out table.md
    python scripts/compare_optimizers.py --tasks 2 --optimizers adam --seeds 0,1,2 --epochs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from optembed.data.preprocess import PreprocessConfig  # noqa: E402
from optembed.data.synth import generate  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.training.config import EMBEDDING_OPTIMIZERS, TrainConfig  # noqa: E402
from pipelines import preprocess, supernet  # noqa: E402
from pipelines.store import Store  # noqa: E402

REMEDIES = ("plain", "freq-lr", "reinit")


def human(n: float) -> str:
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:.0f} B"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="synthetic rows (split 8:1:1)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--mode", default="none", help="supernet mode: none (the original model), prune-only, ...")
    ap.add_argument("--embed-dim", type=int, default=16)
    ap.add_argument("--mlp", default="64,32")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3, help="network (and Adam/SparseAdam embedding) learning rate")
    ap.add_argument("--adagrad-lr", type=float, default=1e-2, help="embedding learning rate of rowwise-adagrad")
    ap.add_argument("--weight-decay", type=float, default=1e-5)
    ap.add_argument("--freq-lr", default="clip")
    ap.add_argument("--freq-lr-c0", type=float, default=100.0)
    ap.add_argument("--freq-lr-power", type=float, default=0.5)
    ap.add_argument("--optimizers", default=",".join(EMBEDDING_OPTIMIZERS))
    ap.add_argument("--remedies", default=",".join(REMEDIES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="comma list of seeds (data and training); overrides --seed")
    ap.add_argument("--tasks", type=int, default=1, help="labels: 1, or 2 (a click and a sparse conversion)")
    ap.add_argument("--workdir", type=Path, default=None, help="data and artifacts (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    ap.add_argument("--plot", type=Path, default=None, help="also draw validation AUC per epoch into this PNG (matplotlib)")
    args = ap.parse_args(argv)

    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    runs: dict[tuple[str, str], list[tuple[dict, list[dict]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        store = Store(work / "artifacts")
        model = ModelConfig(args.model, embed_dim=args.embed_dim, mlp_dims=tuple(int(v) for v in args.mlp.split(",")))
        for seed in seeds:
            pre = prepared(work, store, args.rows, seed, args.tasks)
            for opt in args.optimizers.split(","):
                for remedy in args.remedies.split(","):
                    cfg = TrainConfig(
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.epochs,
                        weight_decay=0.0 if opt == "sparse-adam" else args.weight_decay, seed=seed,
                        embedding_optimizer=opt, embedding_lr=args.adagrad_lr if opt == "rowwise-adagrad" else None,
                        freq_lr=args.freq_lr if remedy == "freq-lr" else "none",
                        freq_lr_c0=args.freq_lr_c0, freq_lr_power=args.freq_lr_power,
                        reinit_embeddings_each_epoch=remedy == "reinit", lr_decay=1.0,
                    )
                    m = supernet.run(
                        supernet.SupernetStage(model=model, mode=args.mode, train=cfg, source=pre.fingerprint,
                                               device=args.device),
                        store,
                    )
                    curves = [c for c in pq.read_table(m.output("curves")).to_pylist() if c.get("epoch")]
                    runs.setdefault((opt, remedy), []).append((m.metrics, curves))
                    aucs = " ".join(f"{c['val_auc']:.4f}" for c in curves)
                    print(f"seed {seed} {opt:<16} {remedy:<8} val AUC by epoch {aucs}", file=sys.stderr)
        tasks = task_list(pre) if args.tasks > 1 else []
    setup = (
        f"{args.rows:,} synthetic Criteo rows ({args.tasks} label{'s' if args.tasks > 1 else ''}), "
        f"{pre.metrics['total_cardinality']:,} table rows; {args.model} D={args.embed_dim} "
        f"MLP {args.mlp}, mode {args.mode}, batch {args.batch_size}, lr {args.lr:g} (rowwise-adagrad embeddings "
        f"{args.adagrad_lr:g}), weight decay {args.weight_decay:g} (0 for sparse-adam); freq-lr {args.freq_lr} "
        f"c0={args.freq_lr_c0:g} p={args.freq_lr_power:g}; {args.epochs} epochs, no early stopping, no decay; "
        f"seeds {','.join(map(str, seeds))}."
    )
    table = setup + "\n\n" + (task_table(runs, tasks, args.epochs) if tasks else optimizer_table(runs, args.epochs)) + "\n"
    print(table)
    if args.out is not None:
        args.out.write_text(table)
    if args.plot is not None:
        plot_curves([(o, r, None, ms[0][1]) for (o, r), ms in runs.items()], args.plot, setup)
    return 0


def prepared(work: Path, store: Store, rows: int, seed: int, tasks: int):  # noqa: ANN201 - a Manifest
    """The preprocess artifact of the synthetic data of ``seed`` (written once into ``work``)."""
    data = work / f"synth-{rows}-{seed}-{tasks}.{'csv' if tasks > 1 else 'txt'}"
    if not data.exists():
        generate(data, rows, fmt="criteo", seed=seed, tasks=tasks)
    config = PreprocessConfig(fmt="csv", label="click,convert") if tasks > 1 else PreprocessConfig()
    return preprocess.run(preprocess.PreprocessStage(data, config), store)


def task_list(pre) -> list[str]:  # noqa: ANN001 - a Manifest
    import json

    from optembed.data.labels import task_names

    return task_names(json.loads(pre.output("schema").read_text()))


def optimizer_table(runs: dict, epochs: int) -> str:
    """One row per optimizer and remedy: the primary task's validation AUC by epoch (mean over seeds)."""
    head = ["embedding optimizer", "remedy"] + [f"val AUC e{e}" for e in range(1, epochs + 1)]
    head += ["best epoch", "test AUC (best)", "s/epoch", "embedding opt. state", "all opt. state", "sparsity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    for (opt, remedy), done in runs.items():
        aucs = [_mean([c[e]["val_auc"] for _, c in done if len(c) > e]) for e in range(epochs)]
        secs = _mean([sum(r["train_seconds"] for r in c) / len(c) for _, c in done])
        metrics = [m for m, _ in done]
        cells = [opt, remedy, *(f"{a:.4f}" if a == a else "" for a in aucs),
                 "/".join(str(m["best_epoch"]) for m in metrics), f"{_mean([m['test_auc'] for m in metrics]):.4f}",
                 f"{secs:.2f}", human(metrics[0]["embedding_optimizer_state_bytes"]),
                 human(metrics[0]["optimizer_state_bytes"]), f"{_mean([m['sparsity'] for m in metrics]):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_table(runs: dict, tasks: list[str], epochs: int) -> str:
    """One row per remedy and task: that task's validation AUC by epoch (mean ± std over seeds),
    the epoch it peaks at (per seed), and its loss from the peak to the last epoch."""
    head = ["optimizer", "remedy", "task"] + [f"val AUC e{e}" for e in range(1, epochs + 1)]
    head += ["peak epoch", "peak - last"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(head))) + "|"]
    for (opt, remedy), done in runs.items():
        for task in tasks:
            key = f"val_auc_{task}"
            per_seed = [[r[key] for r in c] for _, c in done]
            cells = [opt, remedy, task]
            for e in range(epochs):
                vals = [v[e] for v in per_seed if len(v) > e]
                cells.append(f"{_mean(vals):.4f} ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else f"{_mean(vals):.4f}")
            peaks = [max(range(len(v)), key=v.__getitem__) + 1 for v in per_seed]
            drops = [max(v) - v[-1] for v in per_seed]
            cells += ["/".join(map(str, peaks)), f"{_mean(drops):.4f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def plot_curves(rows: list, path: Path, title: str) -> None:
    """One panel per embedding optimizer, one line per remedy: validation AUC by epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimizers = list(dict.fromkeys(opt for opt, *_ in rows))
    fig, axes = plt.subplots(1, len(optimizers), figsize=(4.2 * len(optimizers), 3.6), sharey=True, squeeze=False)
    for ax, opt in zip(axes[0], optimizers, strict=True):
        for o, remedy, _, curves in rows:
            if o == opt:
                ax.plot([c["epoch"] for c in curves], [c["val_auc"] for c in curves], marker="o", label=remedy)
        ax.set_title(opt)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation AUC")
    axes[0][-1].legend()
    fig.suptitle(title[:110] + ("..." if len(title) > 110 else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
