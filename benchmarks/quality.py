"""Benchmark: do OptEmbed's smaller tables keep the Original model's AUC, across data sets and seeds?

For every data set the whole chain (``pipelines.chain``: preprocess, supernets, searches,
re-training, evaluation) runs once per seed; the seed sets the supernet's and the re-training's
``TrainConfig.seed`` and the search's evolution seed, while the data split stays fixed per data
set. Per data set it reports, over the seeds:

- every variant's test AUC, its change against the Original of the same seed (paired), test
  logloss, sparsity and embedding bytes: mean, standard deviation and min..max;
- on planted data (``optembed synth``, ``_criteo_scale`` or any file with a ``<file>.truth.json``
  beside it) the variant's final row mask and widths against the planted truth: (a) the fraction
  of the noise fields' rows kept, (b) the fraction of each informative field's training traffic
  (counts of the kept ids / the field's count) kept, (c) the Spearman correlation of the searched
  widths with the planted widths of the informative fields;
- the issue's targets as PASS/FAIL lines: on planted data of 200,000+ rows noise fields keep at
  most 5% of their rows and no informative field loses more than half of its traffic; OptEmbed's
  paired mean test AUC at least the Original's - 0.0005 and its logloss at most the Original's +
  0.002, at sparsity >= 0.5 (noted as indicative when the seeds' spread cannot resolve 0.0005);
  every Original's test logloss below the base rate's; with the peer, the Original within 0.001 of
  its AUC and no worse in logloss; with the alternatives, each dominated by an OptEmbed variant;
- an AUC against embedding bytes plot per data set (``quality_<data set>.png`` in the work folder).

The final row mask of a variant is its search artifact's ``row_mask`` output when the search
wrote one, else its supernet's; its widths are the search's ``best.json`` widths (full width
without a search). The paper's baselines (``--variants ...,qr,pep,autofield,autodim``, trained by
the chain's baseline stage with the re-training options) are read from their model files: PEP
keeps the rows with a kept element, AutoField the rows of its kept fields (a dropped field has
width 0), QR and AutoDim every row; AutoDim's widths are its chosen ones.

Data sets: ``../shared/data/criteo_10k.txt`` (skipped when absent), ``optembed synth`` planted
data (``--rows``), optionally the Criteo-scale planted set of ``_criteo_scale.py``
(``--criteo-scale ROWS``, slow on CPU) and any ``--data FILE --format FMT`` (repeatable).

Usage::

    python benchmarks/quality.py --work /tmp/quality            # ~30 minutes on 2 CPU cores
    python benchmarks/quality.py --quick --work /tmp/quality-q  # smoke test, a few minutes
    python benchmarks/quality.py --criteo-scale 1000000 --device cuda --work /tmp/quality
    python benchmarks/quality.py --data my.txt --format criteo --compress --out report.md

The work folder keeps the data, the artifact store (a rerun reuses every finished stage), the
plots, the markdown report (``--out``, default ``quality.md``) and all raw numbers
(``--json``, default ``quality.json``). ``--results`` also writes the report as the
``## quality`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, now, write_section  # noqa: E402
import _alternatives  # noqa: E402
import _criteo_scale  # noqa: E402

from optembed.data.formats import FORMATS  # noqa: E402
from optembed.data.preprocess import PreprocessConfig  # noqa: E402
from optembed.data.synth import generate  # noqa: E402
from optembed.embedders.autofield import AutoFieldEmbedder  # noqa: E402
from optembed.embedders.pep import PEPEmbedder  # noqa: E402
from optembed.errors import ArtifactError  # noqa: E402
from optembed.models.checkpoint import load_model  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.safe_load import FIX, expect_dict, load_tensor_file  # noqa: E402
from optembed.training.config import TrainConfig  # noqa: E402
from optembed.training.device import resolve_device  # noqa: E402
from pipelines import baseline, chain  # noqa: E402
from pipelines.calibration import base_rates  # noqa: E402
from pipelines.data import read_id_counts, read_schema  # noqa: E402
from pipelines.store import Manifest, Store  # noqa: E402
from pipelines.readers import ROW_MASK_KEYS, load_row_mask, resolve_chain  # noqa: E402

CRITEO_10K = Path(__file__).resolve().parents[2] / "shared/data/criteo_10k.txt"
PLANTED_MIN_ROWS = 200_000  # the row checks hold from this size on
NOISE_KEEP_MAX = 0.05
TRAFFIC_KEEP_MIN = 0.5
AUC_TOLERANCE = 0.0005
SPARSITY_MIN = 0.5
SYNTH_SEED = 0
BASELINE = "original"
BASELINES = baseline.METHODS  # the paper's baselines: variants trained by the baseline stage
TARGET = "optembed"
COMPRESSIBLE = ("original", "optembed")
PQ = "+pq"
METRICS = ("test_auc", "delta_auc", "test_logloss", "delta_logloss", "sparsity", "embedding_bytes", "val_auc",
           "val_gap", "excess_val_gap", "search_climb")
TRUTH_METRICS = ("noise_rows_kept", "min_traffic_kept", "spearman_widths")

# Knobs with a full and a --quick value (None on the command line = the preset's).
PRESETS: dict[str, dict[str, Any]] = {
    # the full preset trains with the CLI's defaults (None: the core's default; batch size and embedding L2 sized
    # from the data) and searches as `optembed run` does
    "full": dict(rows=200_000, seeds="0,1,2", supernet_epochs=None, epochs=None, patience=None, batch_size=None,
                 population=40, generations=30, topk=15, mlp=None, embed_dim=None),
    "quick": dict(rows=20_000, seeds="0", supernet_epochs=2, epochs=2, patience=1, batch_size=None,
                  population=8, generations=2, topk=4, mlp="64,32", embed_dim=8),
}
LOGLOSS_TOLERANCE = 0.002  # OptEmbed's paired mean test logloss may exceed the Original's by this much
PEER_TOLERANCE = 0.001  # the Original's mean test AUC within this of the peer's (or better)
CHEAP = ("original-d", "original-mc", "qr", "original+int8")  # prefixes of the alternatives a practitioner tries first
OPTEMBED_FAMILY = ("optembed", "optembed+int8", "optembed+pq")


# --------------------------------------------------------------------------- statistics


@dataclass
class Stat:
    """Mean, sample standard deviation and range of the finite values among ``n``."""

    mean: float
    std: float
    min: float
    max: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max, "n": self.n}


def summarize(values: list[float]) -> Stat:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Stat(math.nan, math.nan, math.nan, math.nan, 0)
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return Stat(float(np.mean(finite)), std, min(finite), max(finite), len(finite))


def average_ranks(values: list[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (Pearson of the average ranks); NaN when a side is constant."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return math.nan
    rx, ry = average_ranks(x) - (len(x) + 1) / 2, average_ranks(y) - (len(y) + 1) / 2
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else math.nan


def field_bounds(rows_per_field: list[int]) -> list[tuple[int, int]]:
    ends = np.cumsum(rows_per_field).tolist()
    return [(int(e - r), int(e)) for r, e in zip(rows_per_field, ends)]


def rows_kept(mask: torch.Tensor, rows_per_field: list[int]) -> list[float]:
    """Fraction of each field's table rows the mask keeps."""
    return [float(mask[a:b].sum()) / max(b - a, 1) for a, b in field_bounds(rows_per_field)]


def traffic_kept(mask: torch.Tensor, counts: torch.Tensor, rows_per_field: list[int]) -> list[float]:
    """Per field: training count of the kept ids / training count of all the field's ids (NaN if none)."""
    out = []
    for a, b in field_bounds(rows_per_field):
        total = float(counts[a:b].sum())
        out.append(float(counts[a:b][mask[a:b]].sum()) / total if total > 0 else math.nan)
    return out


def pooled_rows_kept(mask: torch.Tensor, rows_per_field: list[int], fields: list[int]) -> float:
    """Kept rows of the given fields together / their rows together."""
    bounds = field_bounds(rows_per_field)
    kept = sum(int(mask[bounds[f][0] : bounds[f][1]].sum()) for f in fields)
    total = sum(rows_per_field[f] for f in fields)
    return kept / total if total else math.nan


def _val_gap(row: dict[str, Any]) -> float:
    return row.get("val_auc", math.nan) - row.get("test_auc", math.nan)


# metrics computed from a run's row and its baseline's row of the same seed
DERIVED: dict[str, Callable[[dict[str, Any], dict[str, Any]], float]] = {
    "val_gap": lambda row, base: _val_gap(row),  # validation AUC of the kept epoch - test AUC
    "excess_val_gap": lambda row, base: _val_gap(row) - _val_gap(base),  # what the choices fit beyond the Original's
    "search_climb": lambda row, base: row.get("search_val_auc", math.nan) - row.get("supernet_val_auc", math.nan),
}


def aggregate(runs: list[dict[str, Any]], metrics: tuple[str, ...], baseline: str = BASELINE) -> dict[str, dict[str, Stat]]:
    """Per variant and metric, the :class:`Stat` over seeds. ``runs``: ``[{"seed", "models":
    {variant: {metric: value}}}]``; ``delta_auc`` (``delta_logloss``) is the test AUC (logloss) minus the
    baseline's of the same seed."""
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        base = run["models"].get(baseline, {})
        for variant, row in run["models"].items():
            per = values.setdefault(variant, {m: [] for m in metrics})
            for m in metrics:
                if m in DERIVED:
                    per[m].append(DERIVED[m](row, base))
                elif m.startswith("delta_"):
                    key = "test_" + m.removeprefix("delta_")
                    per[m].append(row.get(key, math.nan) - base.get(key, math.nan))
                else:
                    per[m].append(row.get(m, math.nan))
    return {v: {m: summarize(vals) for m, vals in per.items()} for v, per in values.items()}


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Labels of the ``(label, bytes, auc)`` points no other point beats (fewer or equal bytes and
    higher AUC, or fewer bytes and equal AUC), from the smallest to the largest."""
    front, best = [], -math.inf
    for label, _, auc in sorted(points, key=lambda p: (p[1], -p[2])):
        if auc > best:
            front.append(label)
            best = auc
    return front


# --------------------------------------------------------------------------- data sets


@dataclass
class DataSet:
    name: str
    path: Path
    preprocess: PreprocessConfig
    tolerance: float = AUC_TOLERANCE
    truth: dict[str, Any] | None = None
    note: str = ""


def read_truth(path: Path) -> dict[str, Any] | None:
    file = Path(str(path) + ".truth.json")
    return json.loads(file.read_text()) if file.is_file() else None


def synth_set(work: Path, rows: int) -> DataSet:
    path = work / "data" / f"synth_criteo_{rows}_seed{SYNTH_SEED}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or read_truth(path) is None:  # an existing file keeps its identity: cached stages stay valid
        generate(path, rows, fmt="criteo", seed=SYNTH_SEED)
    return DataSet(f"synth_{_short(rows)}", path, PreprocessConfig(fmt="criteo"), truth=read_truth(path),
                   note=f"`optembed synth --format criteo --rows {rows} --seed {SYNTH_SEED}` (default dictionaries)")


def criteo_scale_set(work: Path, rows: int) -> DataSet:
    path = work / "data" / f"criteo_scale_{rows}_seed{SYNTH_SEED}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        _criteo_scale.write(path, rows, seed=SYNTH_SEED)
    noise = [n for f, n in enumerate(_criteo_scale.NAMES) if f % 3 == 0]
    truth = {
        "format": "parquet", "rows": rows, "seed": SYNTH_SEED, "fields": list(_criteo_scale.NAMES), "noise_fields": noise,
        "signal_rank": {n: 0 if n in noise else _criteo_scale.RANK for n in _criteo_scale.NAMES},
    }
    return DataSet(f"criteo_scale_{_short(rows)}", path, PreprocessConfig(fmt="parquet", label="label", min_count=1),
                   truth=truth, note=f"`benchmarks/_criteo_scale.py` ({rows:,} rows, Criteo dictionary sizes, min-count 1; "
                   f"every informative field has planted width {_criteo_scale.RANK})")


def frappe_set(work: Path, source: Path) -> DataSet:
    """Real Frappe (the public split's validation and test libFM files, read from a local folder:
    its licence forbids redistribution) as one CSV; optembed splits it 80/10/10."""
    import frappe

    out = work / "data" / "frappe"
    csv = out / "frappe.csv"
    if not csv.is_file():  # an existing file keeps its identity: cached stages stay valid
        csv = frappe.convert(Path(source), out)["csv"]
    return DataSet("frappe", csv, PreprocessConfig(fmt="csv", label="label", min_count=2),
                   note="real Frappe app-usage data (the validation + test files of the public Frappe split), min-count 2")


def user_set(path: Path, fmt: str) -> DataSet:
    label = "label" if fmt in ("csv", "parquet") else None
    return DataSet(path.stem, path.resolve(), PreprocessConfig(fmt=fmt, label=label), truth=read_truth(path),
                   note=f"`{path}` (format {fmt})")


def data_sets(args: argparse.Namespace, work: Path) -> tuple[list[DataSet], list[str]]:
    sets, notes = [], []
    if args.frappe is not None:
        sets.append(frappe_set(work, args.frappe))
    if not args.no_criteo_10k:
        if CRITEO_10K.is_file():
            sets.append(DataSet("criteo_10k", CRITEO_10K, PreprocessConfig(fmt="criteo"),
                                note="the first 9,999 rows of Criteo (small data: a 1,000-row test split)"))
        else:
            notes.append(f"criteo_10k skipped: {CRITEO_10K} is absent")
    if args.rows:
        sets.append(synth_set(work, args.rows))
    if args.criteo_scale:
        sets.append(criteo_scale_set(work, args.criteo_scale))
    formats = args.format or []
    for i, file in enumerate(args.data or []):
        fmt = formats[i] if i < len(formats) else (formats[-1] if formats else "criteo")
        sets.append(user_set(Path(file), fmt))
    return sets, notes


def _short(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


# --------------------------------------------------------------------------- one chain run


class Log:
    """A reporter that prints each stage message with the elapsed time."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Log:
        return self

    def message(self, text: str) -> None:
        print(f"  [{time.perf_counter() - self.started:6.0f} s] {text}", flush=True)

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        return None

    def advance(self, amount: float = 1.0) -> None:
        return None

    def close(self) -> None:
        return None


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The benchmark's model: the core's defaults where the preset leaves a knob at None."""
    given: dict[str, Any] = {}
    if args.embed_dim is not None:
        given["embed_dim"] = args.embed_dim
    if args.mlp is not None:
        given["mlp_dims"] = tuple(int(v) for v in args.mlp.split(","))
    return ModelConfig(args.model, **given)


def train_options(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The re-training options the preset sets (the rest: TrainConfig's defaults, auto sizing included)."""
    train: dict[str, Any] = {"seed": seed}
    for key in ("patience", "batch_size"):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    return train


def chain_config(ds: DataSet, args: argparse.Namespace, seed: int, rows: int) -> chain.ChainConfig:
    train = train_options(args, seed)
    if args.alpha is not None:
        train["alpha"] = args.alpha
    super_train = dict(train)
    if args.threshold_optimizer is not None:
        super_train["threshold_optimizer"] = args.threshold_optimizer
    if args.threshold_lr is not None:
        super_train["threshold_lr"] = args.threshold_lr
    if args.full_width_share is not None:
        super_train["full_width_share"] = args.full_width_share
    search: dict[str, Any] = {"population": args.population, "generations": args.generations, "topk": args.topk, "seed": seed}
    if args.max_auc:
        search["max_auc"] = True
    elif args.max_auc_drop is not None:
        search["max_auc_drop"] = args.max_auc_drop
    if args.row_rank is not None:
        search["row_rank"] = args.row_rank
    if args.min_traffic is not None:
        search["min_traffic"] = args.min_traffic
    if args.noise_z is not None:
        search["noise_z"] = args.noise_z
    compress: dict[str, Any] = {}
    if args.compress_variants:
        compress = {"variants": list(args.compress_variants), "min_rows": args.compress_min_rows}
    return chain.ChainConfig(
        data=ds.path, preprocess=ds.preprocess, selection=args.selection, distill_supernet=args.distill_supernet,
        model=model_config(args),
        supernet=TrainConfig(**_epochs(args.supernet_epochs), **super_train),
        retrain=TrainConfig(**_epochs(args.epochs), **train),
        search=search, retrain_init=args.retrain_init, distill=args.distill,
        compress=compress, variants=tuple(args.variant_list), device=args.device, latency=False,
    )


def _epochs(value: int | None) -> dict[str, int]:
    return {} if value is None else {"epochs": value}


def artifact_labels(done: dict[str, Manifest], variants: list[str], compressed: list[str]) -> dict[str, str]:
    """Evaluated artifact fingerprint -> variant label (``<variant>+pq`` for a compressed one)."""
    labels = {}
    for v in variants:
        key = "search optembed" if v == "optembed-noretrain" else f"baseline {v}" if v in BASELINES else f"retrain {v}"
        labels[done[key].fingerprint] = v
        if v in compressed:
            labels[done[f"compress {v}"].fingerprint] = v + PQ
    return labels


def read_search_row_mask(manifest: Manifest) -> dict[str, Any]:
    """A search artifact's own ``row_mask`` output (the supernet's dict format)."""
    path = manifest.output("row_mask")
    info = expect_dict(load_tensor_file(path, "row mask file"), path, "row mask file", ROW_MASK_KEYS)
    if not isinstance(info["mask"], torch.Tensor) or info["mask"].dtype != torch.bool:
        raise ArtifactError(f"row mask file {path} holds no boolean mask; {FIX}")
    return info


def baseline_selection(manifest: Manifest) -> tuple[torch.Tensor | None, list[int]]:
    """The rows a baseline keeps (None: every row) and its widths, from its model file: PEP's rows
    with a kept element, AutoField's kept fields' rows; QR and AutoDim keep every row."""
    model, _ = load_model(manifest.output("model"))
    emb = model.embedder
    widths = [int(w) for w in emb.field_widths()]
    if isinstance(emb, PEPEmbedder):
        return emb.current_mask().any(dim=1).cpu(), widths
    if isinstance(emb, AutoFieldEmbedder) and emb.keep is not None:
        kept = torch.tensor(emb.keep, dtype=torch.bool)
        return kept.repeat_interleave(torch.tensor(emb.cardinalities)), widths
    return None, widths


def final_selection(store: Store, manifest: Manifest, names: list[str], dim: int) -> tuple[torch.Tensor | None, list[int]]:
    """The row mask (None: every row kept) and widths behind an evaluated artifact."""
    if manifest.stage == "baseline":
        return baseline_selection(manifest)
    ancestry = resolve_chain(store, manifest)
    search, sn = ancestry.get("search"), ancestry.get("supernet")
    widths = [dim] * len(names)
    if search is not None:
        best = json.loads(search.output("best").read_text())["widths"]
        widths = [int(best[n]) for n in names] if isinstance(best, dict) else [int(w) for w in best]
        info = read_search_row_mask(search) if "row_mask" in search.outputs else load_row_mask(ancestry["supernet"])
    elif sn is not None:
        info = load_row_mask(sn)
    else:
        return None, widths
    return (info["mask"].bool() if info["pruned"] else None), widths


def truth_stats(mask: torch.Tensor | None, widths: list[int], counts: torch.Tensor, cards: list[int], names: list[str],
                truth: dict[str, Any]) -> dict[str, Any]:
    """The planted-truth measures of one variant's final mask and widths."""
    mask = torch.ones(sum(cards), dtype=torch.bool) if mask is None else mask
    if mask.numel() != sum(cards):
        raise ArtifactError(f"a row mask of {mask.numel():,} rows for tables of {sum(cards):,} rows")
    noise = [i for i, n in enumerate(names) if n in truth["noise_fields"]]
    informative = [i for i, n in enumerate(names) if truth["signal_rank"].get(n, 0) > 0]
    kept, traffic = rows_kept(mask, cards), traffic_kept(mask, counts, cards)
    worst_noise = max(noise, key=lambda i: kept[i]) if noise else None
    worst_info = min(informative, key=lambda i: traffic[i] if math.isfinite(traffic[i]) else math.inf) if informative else None
    return {
        "noise_rows_kept": pooled_rows_kept(mask, cards, noise),
        "worst_noise_field": names[worst_noise] if worst_noise is not None else None,
        "worst_noise_rows_kept": kept[worst_noise] if worst_noise is not None else math.nan,
        "min_traffic_kept": traffic[worst_info] if worst_info is not None else math.nan,
        "worst_traffic_field": names[worst_info] if worst_info is not None else None,
        "spearman_widths": spearman([widths[i] for i in informative], [truth["signal_rank"][names[i]] for i in informative]),
        "rows_kept_per_field": dict(zip(names, kept)),
        "traffic_kept_per_field": dict(zip(names, traffic)),
        "widths": dict(zip(names, widths)),
    }


def selection_scores(store: Store, manifest: Manifest) -> dict[str, float]:
    """What the chain's choices saw of an evaluated model: the validation AUC of its kept epoch
    (``val_auc``; its gap to the test AUC, paired against the Original's, is how much the choices
    fit the validation split) and, behind a search, the searched candidate's validation AUC on the
    supernet (``search_val_auc``) against the supernet's own (``supernet_val_auc``)."""
    out = {"val_auc": float(manifest.metrics.get("val_auc", math.nan))}
    ancestry = resolve_chain(store, manifest)
    search, sn = ancestry.get("search"), ancestry.get("supernet")
    if search is not None and sn is not None:
        out["search_val_auc"] = float(search.metrics.get("best_val_auc", math.nan))
        out["supernet_val_auc"] = float(sn.metrics.get("val_auc", math.nan))
    return out


def run_seed(ds: DataSet, args: argparse.Namespace, store: Store, seed: int, rows: int, log: Log) -> dict[str, Any]:
    started = time.perf_counter()
    done = chain.run(chain_config(ds, args, seed, rows), store, log)
    pre, evaluated = done["preprocess"], done["evaluate"]
    labels = artifact_labels(done, args.variant_list, args.compress_variants)
    rows_out = json.loads(evaluated.output("metrics").read_text())["models"]
    names = [f["name"] for f in read_schema(pre)["fields"]]
    cards = [int(f["cardinality"]) for f in read_schema(pre)["fields"]]
    counts = read_id_counts(pre, purpose="the traffic check") if ds.truth else None
    models: dict[str, dict[str, Any]] = {}
    for row in rows_out:
        label = labels[row["id"]]
        entry = {k: row[k] for k in ("id", "stage", "test_auc", "test_logloss", "sparsity", "embedding_params",
                                     "embedding_bytes", "ratio_vs_original")}
        manifest = store.lookup(row["stage"], row["id"])
        if manifest is not None:
            entry.update(selection_scores(store, manifest))
        if ds.truth is not None and counts is not None:
            assert manifest is not None
            mask, widths = final_selection(store, manifest, names, args.embed_dim)
            entry.update(truth_stats(mask, widths, counts, cards, names, ds.truth))
        models[label] = entry
    skipped: list[str] = []
    if args.alternatives or args.peer:
        extra, skipped = alternatives(ds, args, store, seed, pre, models, log)
        models.update(extra)
    order = {v: i for i, v in enumerate(variant_order(args))}
    models = dict(sorted(models.items(), key=lambda kv: order.get(kv[0], len(order))))
    return {"seed": seed, "evaluate": evaluated.fingerprint, "seconds": round(time.perf_counter() - started, 1),
            "models": models, "skipped": skipped, "base_logloss": base_rate_logloss(pre)}


def alternatives(ds: DataSet, args: argparse.Namespace, store: Store, seed: int, pre: Manifest,
                 models: dict[str, dict[str, Any]], log: Log) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The cheap alternatives and the peer for one seed (see ``_alternatives``), and what was skipped."""
    out: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    model, train = model_config(args), TrainConfig(**_epochs(args.epochs), **train_options(args, seed))
    if args.alternatives:
        widths = sorted({max(1, model.embed_dim // 2), max(1, model.embed_dim // 4)}, reverse=True)
        teacher = models["original"]["id"] if args.distill > 0 and models.get("original", {}).get("stage") == "retrain" else None
        if teacher is not None:  # what distillation alone buys: the Original taught by itself, as the others are
            widths = [model.embed_dim, *widths]
        out.update(_alternatives.smaller_widths(store, pre, model, train, widths, args.device, log, teacher, args.distill))
        out.update(_alternatives.higher_min_count(store, ds.path, ds.preprocess, model, train, args.min_count_alt,
                                                  args.device, log))
        retrained = {v: models[v]["id"] for v in ("original", TARGET) if v in models and models[v]["stage"] == "retrain"}
        try:
            out.update(_alternatives.int8_tables(store, retrained, args.device, log))
        except Exception as exc:  # noqa: BLE001 (an older core without the int8 method: say so, go on)
            skipped.append(f"int8 skipped: {exc}")
    if args.peer:
        row, why = _alternatives.peer(pre, seed, args.device)
        out.update(row)
        if why:
            skipped.append(why)
    return out, skipped


def base_rate_logloss(pre: Manifest) -> float:
    """The test logloss of the constant predictor at the training split's positive rate (nan when
    the schema lacks the ratios)."""
    return base_rates(pre).get("test_base_rate_logloss", math.nan)


def variant_order(args: argparse.Namespace) -> list[str]:
    out = []
    for v in args.variant_list:
        out.append(v)
        if v in args.compress_variants:
            out.append(v + PQ)
    return out


def data_rows(ds: DataSet, store: Store) -> int:
    """Rows of a data set, from its preprocess artifact (run once, cached for the chain)."""
    from pipelines import preprocess

    return int(preprocess.run(preprocess.PreprocessStage(ds.path, ds.preprocess), store).metrics["rows"])


def run_dataset(ds: DataSet, args: argparse.Namespace, store: Store, log: Log) -> dict[str, Any]:
    rows = data_rows(ds, store)
    runs = []
    for seed in args.seed_list:
        print(f"{ds.name}: seed {seed}", flush=True)
        runs.append(run_seed(ds, args, store, seed, rows, log))
    metrics = METRICS + (TRUTH_METRICS if ds.truth else ())
    stats = aggregate(runs, metrics)
    result = {"name": ds.name, "path": str(ds.path), "format": ds.preprocess.fmt, "rows": rows, "note": ds.note,
              "tolerance": ds.tolerance, "planted": ds.truth is not None, "runs": runs,
              "aggregate": {v: {m: s.to_dict() for m, s in per.items()} for v, per in stats.items()}}
    result["pareto"] = pareto_front([(v, per["embedding_bytes"].mean, per["test_auc"].mean) for v, per in stats.items()])
    result["checks"] = checks(result, stats)
    return result


# --------------------------------------------------------------------------- checks


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not measured
    detail: str
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "SKIP" if self.ok is None else "PASS" if self.ok else "FAIL"
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"- **{verdict}** — {self.name}: {self.detail}{extra}"


def _worst(runs: list[dict[str, Any]], variant: str, key: str, field_key: str, highest: bool) -> tuple[float, str, int]:
    rows = [(r["models"][variant][key], r["models"][variant][field_key], r["seed"]) for r in runs if variant in r["models"]]
    finite = [x for x in rows if x[0] is not None and math.isfinite(x[0])]
    if not finite:
        return math.nan, "?", -1
    return max(finite, key=lambda x: x[0]) if highest else min(finite, key=lambda x: x[0])


def _noise_note(delta: Stat, tol: float) -> list[str]:
    """A note when the seeds' spread cannot resolve the AUC bound: the standard error of the mean
    paired change (its std over the seeds / sqrt(seeds)) above the tolerance."""
    if delta.n < 2 or not math.isfinite(delta.std):
        return [f"{delta.n} seed: no spread to judge the bound by"] if delta.n == 1 else []
    se = delta.std / math.sqrt(delta.n)
    if se <= tol:
        return []
    return [f"the mean paired change's standard error over the seeds is {se:.5f}, above the bound's {tol:g}: "
            "indicative only; more seeds or a larger test split decide it"]


def checks(result: dict[str, Any], stats: dict[str, dict[str, Stat]]) -> list[dict[str, Any]]:
    out: list[Check] = []
    runs = result["runs"]
    small = [f"{result['rows']:,} rows, below {PLANTED_MIN_ROWS:,}: indicative only"] if result["rows"] < PLANTED_MIN_ROWS else []
    if result["planted"]:
        if TARGET in stats:
            noise = stats[TARGET]["noise_rows_kept"]
            value, fname, seed = _worst(runs, TARGET, "worst_noise_rows_kept", "worst_noise_field", highest=True)
            out.append(Check(
                f"{TARGET}: noise fields keep <= {NOISE_KEEP_MAX:.0%} of their rows", noise.mean <= NOISE_KEEP_MAX,
                f"{_pct(noise.mean)} of the noise fields' rows kept (mean over seeds; {_pct(noise.min)}..{_pct(noise.max)}); "
                f"most kept single noise field {fname} {_pct(value)} (seed {seed})", small))
            value, fname, seed = _worst(runs, TARGET, "min_traffic_kept", "worst_traffic_field", highest=False)
            out.append(Check(
                f"{TARGET}: no informative field loses more than {1 - TRAFFIC_KEEP_MIN:.0%} of its traffic",
                value >= TRAFFIC_KEEP_MIN if math.isfinite(value) else None,
                f"lowest kept traffic {_pct(value)} ({fname}, seed {seed}; mean over seeds of the per-seed lowest "
                f"{_pct(stats[TARGET]['min_traffic_kept'].mean)})", small))
        else:
            out.append(Check("planted-truth row checks", None, f"variant {TARGET} not run"))
    if TARGET in stats and BASELINE in stats:
        delta, sparsity = stats[TARGET]["delta_auc"], stats[TARGET]["sparsity"]
        dloss = stats[TARGET]["delta_logloss"]
        tol = result["tolerance"]
        out.append(Check(
            f"{TARGET}: paired mean test AUC >= the Original's - {tol:g}, logloss <= the Original's + "
            f"{LOGLOSS_TOLERANCE:g}, at sparsity >= {SPARSITY_MIN}",
            delta.mean >= -tol and dloss.mean <= LOGLOSS_TOLERANCE and sparsity.mean >= SPARSITY_MIN,
            f"{TARGET} {stats[TARGET]['test_auc'].mean:.5f} vs original {stats[BASELINE]['test_auc'].mean:.5f}, "
            f"paired change {delta.mean:+.5f} (seeds {delta.min:+.5f}..{delta.max:+.5f}), logloss "
            f"{dloss.mean:+.5f} (seeds {dloss.min:+.5f}..{dloss.max:+.5f}), sparsity {sparsity.mean:.3f} "
            f"over {delta.n} seed(s)", _noise_note(delta, tol)))
    else:
        out.append(Check("AUC against the Original", None, f"needs variants {BASELINE} and {TARGET}"))
    if BASELINE in stats:
        base = [r.get("base_logloss", math.nan) for r in runs]
        worst = [(r["models"][BASELINE]["test_logloss"] - b, r["seed"]) for r, b in zip(runs, base, strict=True)
                 if BASELINE in r["models"]]
        gap, seed = max(worst) if worst else (math.nan, -1)
        out.append(Check(
            "every Original's test logloss below the base rate's", gap < 0 if math.isfinite(gap) else None,
            f"base-rate logloss {np.nanmean(base):.5f}; the Original's {stats[BASELINE]['test_logloss'].mean:.5f} "
            f"(worst seed {seed}: {gap:+.5f} against the base rate)"))
    if "peer" in stats and BASELINE in stats:
        gap = stats[BASELINE]["test_auc"].mean - stats["peer"]["test_auc"].mean
        lgap = stats[BASELINE]["test_logloss"].mean - stats["peer"]["test_logloss"].mean
        out.append(Check(
            f"the Original within {PEER_TOLERANCE:g} test AUC of the peer (or better) and no worse in logloss",
            gap >= -PEER_TOLERANCE and lgap <= 0,
            f"original {_fmt(stats[BASELINE]['test_auc'])} / logloss {stats[BASELINE]['test_logloss'].mean:.5f}; peer "
            f"{_fmt(stats['peer']['test_auc'])} / logloss {stats['peer']['test_logloss'].mean:.5f}: AUC {gap:+.5f}, "
            f"logloss {lgap:+.5f}"))
    cheap = [v for v in stats if v.startswith(CHEAP)]
    family = [v for v in stats if v in OPTEMBED_FAMILY]
    if cheap and family:
        verdicts = [dominated(runs, stats, v, family) for v in cheap]
        beaten = [f"{v}: {why}" for v, (ok, why) in zip(cheap, verdicts, strict=True)]
        front = result.get("pareto", [])
        out.append(Check(
            "every cheap alternative dominated by an OptEmbed variant no larger (or within its paired noise)",
            all(ok for ok, _ in verdicts), "; ".join(beaten) + f"; Pareto front: {', '.join(front)}"))
    return [{"name": c.name, "ok": c.ok, "detail": c.detail, "line": c.line()} for c in out]


def dominated(runs: list[dict[str, Any]], stats: dict[str, dict[str, Stat]], cheap: str,
              family: list[str]) -> tuple[bool, str]:
    """Whether an OptEmbed variant with no more mean bytes than ``cheap`` has a mean test AUC at
    least ``cheap``'s, or within the paired noise (two standard errors of the per-seed AUC
    difference); the variant that does it, or why none does."""
    size = stats[cheap]["embedding_bytes"].mean
    best: tuple[float, str] | None = None
    for v in family:
        if stats[v]["embedding_bytes"].mean > size:
            continue
        diffs = [r["models"][v]["test_auc"] - r["models"][cheap]["test_auc"] for r in runs
                 if v in r["models"] and cheap in r["models"]]
        if not diffs:
            continue
        mean = float(np.mean(diffs))
        se = float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
        if mean >= 0 or mean >= -2 * se:
            return True, f"{v} ({stats[v]['embedding_bytes'].mean:,.0f} B) {mean:+.5f} AUC"
        if best is None or mean > best[0]:
            best = (mean, v)
    if best is None:
        return False, f"no OptEmbed variant as small ({size:,.0f} B)"
    return False, f"best no larger: {best[1]} {best[0]:+.5f} AUC"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "n/a"


# --------------------------------------------------------------------------- output


def _fmt(s: dict[str, float], spec: str = ".5f", spread: bool = True) -> str:
    if s["n"] == 0:
        return "n/a"
    mean = format(s["mean"], spec)
    if not spread or s["n"] < 2:
        return mean
    return f"{mean} ± {format(s['std'], spec.lstrip('+'))} [{format(s['min'], spec)}..{format(s['max'], spec)}]"


def _bytes(s: dict[str, float]) -> str:
    if s["n"] == 0:
        return "n/a"
    if s["min"] == s["max"]:
        return f"{s['mean']:,.0f}"
    return f"{s['mean']:,.0f} [{s['min']:,.0f}..{s['max']:,.0f}]"


def selection_markdown(agg: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """The validation-vs-test table: how much the chain's choices (search, early stopping) fit the
    validation split, per variant, against the Original's own gap on the same seeds."""
    rows = [(v, s) for v, s in agg.items() if s.get("val_gap", {}).get("n", 0)]
    if not rows:
        return []
    lines = ["", "Validation against test (the kept epoch's validation AUC; the search's climb: its chosen "
             "candidate's validation AUC on the supernet less the supernet's own):", "",
             "| variant | val AUC | val - test | that less the Original's (paired) | search climb |",
             "|---|---|---|---|---|"]
    for v, s in rows:
        climb = _fmt(s["search_climb"], "+.4f") if s.get("search_climb", {}).get("n", 0) else ""
        lines.append(f"| {v} | {_fmt(s['val_auc'], '.4f', spread=False)} | {_fmt(s['val_gap'], '+.4f')} | "
                     f"{_fmt(s['excess_val_gap'], '+.4f')} | {climb} |")
    return lines


def dataset_markdown(result: dict[str, Any], plot: str | None, compress_note: str) -> str:
    agg = result["aggregate"]
    seeds = ",".join(str(r["seed"]) for r in result["runs"])
    minutes = sum(r["seconds"] for r in result["runs"]) / 60
    lines = [
        f"### {result['name']}", "",
        f"{result['note']}; {result['rows']:,} rows, split 80/10/10 (fixed); seeds {seeds}; {minutes:.1f} min.", "",
        "| variant | test AUC (mean ± std [min..max]) | AUC change vs Original (paired) | test logloss | "
        "logloss change (paired) | sparsity | embedding bytes | Original bytes / bytes |",
        "|---|---|---|---|---|---|---|---:|",
    ]
    for v, s in agg.items():
        ratio = agg.get(BASELINE, s)["embedding_bytes"]["mean"] / max(s["embedding_bytes"]["mean"], 1)
        lines.append(f"| {v}{' *' if v in result['pareto'] else ''} | {_fmt(s['test_auc'])} | {_fmt(s['delta_auc'], '+.5f')} | "
                     f"{_fmt(s['test_logloss'])} | {_fmt(s['delta_logloss'], '+.5f')} | {_fmt(s['sparsity'], '.3f')} | "
                     f"{_bytes(s['embedding_bytes'])} | {ratio:.1f} |")
    base = [r["base_logloss"] for r in result["runs"] if "base_logloss" in r]
    if base:
        lines += ["", f"Base-rate test logloss (the constant predictor at the training positive rate): {np.mean(base):.5f}."]
    skipped = sorted({w for r in result["runs"] for w in r.get("skipped", [])})
    lines += [f"- {w}" for w in skipped]
    lines += ["", "\\* on the Pareto front of mean embedding bytes against mean test AUC." + compress_note]
    lines += selection_markdown(agg)
    if result["planted"]:
        lines += ["", "Planted truth (final row mask and widths of each variant):", "",
                  "| variant | noise fields' rows kept | most kept noise field | lowest informative traffic kept | "
                  "Spearman(widths, planted) |", "|---|---|---|---|---|"]
        for v, s in agg.items():
            noise_w = _worst(result["runs"], v, "worst_noise_rows_kept", "worst_noise_field", highest=True)
            info_w = _worst(result["runs"], v, "min_traffic_kept", "worst_traffic_field", highest=False)
            lines.append(f"| {v} | {_fmt(s['noise_rows_kept'], '.3f')} | {noise_w[1]} {_pct(noise_w[0])} | "
                         f"{_fmt(s['min_traffic_kept'], '.3f')} (worst {info_w[1]} {_pct(info_w[0])}) | "
                         f"{_fmt(s['spearman_widths'], '.3f')} |")
        lines += ["", "Rows kept: pooled over the noise fields (special ids included). Traffic: training counts of the "
                  "kept ids / the field's training count, lowest informative field per seed. Spearman over the "
                  "informative fields (n/a when the widths or the planted widths are all equal)."]
    lines += ["", "Targets:", "", *(c["line"] for c in result["checks"])]
    if plot:
        lines += ["", f"Plot: `{plot}` (test AUC against embedding bytes, log scale; small points: seeds, large: means)."]
    return "\n".join(lines)


def knobs_text(args: argparse.Namespace, device: torch.device) -> str:
    defaults = TrainConfig()
    alpha = args.alpha if args.alpha is not None else defaults.alpha
    t_opt = args.threshold_optimizer or defaults.threshold_optimizer
    t_lr = args.threshold_lr if args.threshold_lr is not None else defaults.threshold_lr
    search = "paper max-AUC search" if args.max_auc else (
        f"accuracy-bounded search (max AUC drop {args.max_auc_drop if args.max_auc_drop is not None else 0.001:g})")
    model, train = model_config(args), TrainConfig(**train_options(args, 0))
    sn_epochs = args.supernet_epochs if args.supernet_epochs is not None else defaults.epochs
    epochs = args.epochs if args.epochs is not None else defaults.epochs
    batch = f"batch {train.batch_size:,}" if train.batch_size else "batch size and embedding L2 sized from the data"
    text = (f"{model.name} D = {model.embed_dim}, MLP {','.join(map(str, model.mlp_dims))} (dropout {model.dropout:g}, "
            f"batch norm {'on' if model.batch_norm else 'off'}); supernet up to {sn_epochs} epochs, retrain up to {epochs} "
            f"epochs (kept and stopped by validation {train.monitor}, patience {train.patience}, lr x {train.lr_decay:g} on "
            f"a plateau); {batch}; threshold regulariser alpha {alpha:g}, thresholds {t_opt} lr {t_lr:g}; {search}, "
            f"re-training init {args.retrain_init}, "
            f"{f'distilled from the Original (weight {args.distill:g})' if args.distill > 0 else 'no distillation'}"
            f"{', supernets distilled too' if args.distill_supernet and args.distill > 0 else ''}"
            f"{f', selection split {args.selection:g} of the training rows' if args.selection else ''}"
            f"{f', noise z {args.noise_z:g}' if args.noise_z is not None else ''}; search population {args.population}, {args.generations} generations, "
            f"top-k {args.topk}; seeds {args.seeds} (supernet, retrain and search seeds); variants "
            f"{', '.join(variant_order(args))}; alternatives {'on' if args.alternatives else 'off'}, peer "
            f"{'on' if args.peer else 'off'}; device `{device}`{'; preset --quick' if args.quick else ''}.")
    return text


def pq_note(args: argparse.Namespace) -> str:
    if not args.compress_variants:
        return ""
    return (f" `+pq`: the re-trained model compressed (`compress`, product quantization) with `min_rows` "
            f"{args.compress_min_rows:,}, i.e. only fields of more than {args.compress_min_rows:,} table rows are coded.")


def report_markdown(args: argparse.Namespace, device: torch.device, results: list[dict[str, Any]], notes: list[str],
                    plots: dict[str, str], seconds: float) -> str:
    compress_note = pq_note(args)
    lines = [
        "Does OptEmbed keep the Original model's test AUC with smaller tables? Every variant of the chain "
        "(`pipelines.chain`) once per seed, the data split fixed per data set.", "",
        f"- Knobs: {knobs_text(args, device)}",
        f"- Machine: {machine()}. Date: {now()}. Whole run: {seconds / 60:.1f} min.",
        f"- Command: `python benchmarks/quality.py {' '.join(sys.argv[1:])}`",
        *(f"- {n}" for n in notes), "",
    ]
    for r in results:
        lines += [dataset_markdown(r, plots.get(r["name"]), compress_note), ""]
    return "\n".join(lines)


def plot_pareto(path: Path, result: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", flush=True)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^vP*Xhp"
    agg = result["aggregate"]
    for i, v in enumerate(agg):
        color, marker = f"C{i % 10}", markers[i % len(markers)]
        pts = [(r["models"][v]["embedding_bytes"], r["models"][v]["test_auc"]) for r in result["runs"] if v in r["models"]]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=color, marker=marker, alpha=0.5)
        ax.scatter([agg[v]["embedding_bytes"]["mean"]], [agg[v]["test_auc"]["mean"]], s=90, color=color, marker=marker,
                   edgecolor="black", label=v)
    front = [(agg[v]["embedding_bytes"]["mean"], agg[v]["test_auc"]["mean"]) for v in result["pareto"]]
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", lw=1, ls="--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes (log scale)")
    ax.set_ylabel("test AUC")
    ax.set_title(f"{result['name']}: {len(result['runs'])} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    full, quick = PRESETS["full"], PRESETS["quick"]

    def preset(name: str, kind: type, text: str) -> None:
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                        help=f"{text} (default {full[name]}; --quick {quick[name]})")

    ap.add_argument("--quick", action="store_true", help="a tiny preset: a smoke test of a few minutes")
    preset("rows", int, "rows of the planted `optembed synth` set (0: skip it)")
    preset("seeds", str, "comma-separated seeds")
    preset("supernet_epochs", int, "supernet epochs at most")
    preset("epochs", int, "re-training epochs at most")
    preset("patience", int, "early-stopping patience (epochs)")
    preset("batch_size", int, "training batch size (None/0: auto, from the training rows)")
    preset("population", int, "search population")
    preset("generations", int, "search generations")
    preset("topk", int, "search elites per generation")
    preset("mlp", str, "MLP layer widths")
    preset("embed_dim", int, "embedding width D")
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--alpha", type=float, default=None, help="threshold regulariser weight (default: TrainConfig's)")
    ap.add_argument("--threshold-optimizer", choices=("sgd", "adam"), default=None, help="(default: TrainConfig's)")
    ap.add_argument("--threshold-lr", type=float, default=None, help="(default: TrainConfig's)")
    ap.add_argument("--full-width-share", type=float, default=None,
                    help="supernet: share of samples trained at full width (default: TrainConfig's)")
    ap.add_argument("--max-auc-drop", type=float, default=None, help="search tolerance (default: the search's)")
    ap.add_argument("--min-traffic", type=float, default=None, help="traffic share a positive row level keeps (default: the search's)")
    ap.add_argument("--distill-supernet", action="store_true",
                    help="the supernets learn from the Original too (with --distill's weight)")
    ap.add_argument("--selection", type=float, default=0.0,
                    help="training rows the supernets hold out for the search to score on (0: it scores on validation)")
    ap.add_argument("--noise-z", type=float, default=None,
                    help="standard errors the search subtracts before its tolerance test (default: the search's)")
    ap.add_argument("--row-rank", choices=("impact", "norm"), default=None, help="rows a row level keeps (default: the search's)")
    ap.add_argument("--max-auc", action="store_true", help="the paper's max-AUC search instead of the accuracy-bounded one")
    ap.add_argument("--retrain-init", choices=("auto", "fresh", "rewind", "supernet"), default="auto",
                    help="start of the searched variants' re-training")
    ap.add_argument("--distill", type=float, default=chain.DEFAULT_DISTILL, metavar="W",
                    help="weight of the Original's probabilities in the compressed variants' training, and in the "
                    "smaller-D alternatives' (0: labels alone; default: run's)")
    ap.add_argument("--criteo-scale", type=int, default=0, metavar="ROWS",
                    help="also the Criteo-scale planted set of _criteo_scale.py with ROWS rows (e.g. 1000000; slow on CPU)")
    ap.add_argument("--no-criteo-10k", action="store_true", help="skip ../shared/data/criteo_10k.txt")
    ap.add_argument("--frappe", type=Path, default=None, metavar="DIR",
                    help="real Frappe: a local folder with frappe.validation.libfm and frappe.test.libfm (never downloaded)")
    ap.add_argument("--alternatives", action=argparse.BooleanOptionalAction, default=None,
                    help="also the cheap alternatives at matching bytes: smaller D, higher --min-count, int8 tables "
                    "(default: on, off with --quick)")
    ap.add_argument("--peer", action=argparse.BooleanOptionalAction, default=None,
                    help="also FuxiCTR's DeepFM on the same splits when installed (default: on, off with --quick)")
    ap.add_argument("--min-count-alt", type=int, default=10, help="the --min-count of the original-mc alternative")
    ap.add_argument("--data", action="append", metavar="FILE", help="another data set (repeatable)")
    ap.add_argument("--format", action="append", choices=FORMATS,
                    help="format of the matching --data (repeatable, in order; default criteo; csv/parquet: label column 'label')")
    ap.add_argument("--variants", default=",".join(chain.VARIANTS),
                    help=f"comma-separated chain variants, also the baselines {','.join(BASELINES)}")
    ap.add_argument("--compress", nargs="?", const=",".join(COMPRESSIBLE), default=None, metavar="VARIANTS",
                    help="also compress these re-trained variants (default when given: original,optembed)")
    ap.add_argument("--compress-min-rows", type=int, default=1000, help="compress only fields with more table rows")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", type=Path, default=None, help="data, store, plots and reports (default: a new temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="markdown report (default <work>/quality.md)")
    ap.add_argument("--json", type=Path, default=None, help="raw numbers (default <work>/quality.json)")
    ap.add_argument("--results", action="store_true", help="also write the '## quality' section of RESULTS.md")
    args = ap.parse_args(argv)
    for key, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("alternatives", "peer"):
        if getattr(args, key) is None:
            setattr(args, key, not args.quick)
    args.seed_list = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.compress_variants = [v.strip() for v in (args.compress or "").split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in chain.ALL_VARIANTS]
    if unknown or not args.variant_list:
        ap.error(f"--variants: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(chain.ALL_VARIANTS)}")
    wrong = [v for v in args.compress_variants
             if v not in args.variant_list or v == "optembed-noretrain" or v in BASELINES]
    if wrong:
        ap.error(f"--compress: {', '.join(wrong)} is not a re-trained variant of --variants")
    if len(args.format or []) > max(len(args.data or []), 1):
        ap.error("more --format than --data options")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    work = (args.work or Path(tempfile.mkdtemp(prefix="optembed-quality-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}\nknobs: {knobs_text(args, device)}", flush=True)
    started = time.perf_counter()
    store, log = Store(work / "artifacts"), Log()
    sets, notes = data_sets(args, work)
    for n in notes:
        print(n, flush=True)
    results, plots = [], {}
    for ds in sets:
        print(f"== {ds.name}: {ds.path}", flush=True)
        result = run_dataset(ds, args, store, log)
        results.append(result)
        png = work / f"quality_{ds.name}.png"
        if plot_pareto(png, result):
            plots[ds.name] = png.name
        print("\n" + dataset_markdown(result, plots.get(ds.name), pq_note(args)) + "\n", flush=True)
    seconds = time.perf_counter() - started
    report = report_markdown(args, device, results, notes, plots, seconds)
    out = args.out or work / "quality.md"
    out.write_text(report)
    raw = {"knobs": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, list, bool, type(None)))},
           "machine": machine(), "date": now(), "seconds": round(seconds, 1), "notes": notes, "datasets": results}
    raw["knobs"]["work"] = str(work)
    (args.json or work / "quality.json").write_text(json.dumps(_json_safe(raw), indent=2, default=str) + "\n")
    print("\n".join(f"{r['name']}: {c['line'].removeprefix('- ')}" for r in results for c in r["checks"]))
    print(f"report: {out}; raw numbers: {args.json or work / 'quality.json'}; plots in {work}; {seconds / 60:.1f} min")
    if args.results:
        write_section("quality", report)
        print("wrote the '## quality' section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
