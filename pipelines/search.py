"""The ``search`` stage: per-field row levels and widths on a trained supernet (no training).

Fitness is the validation AUC of the supernet under a row mask and a candidate's prefix widths,
scored as ``retrain`` applies them (pruned ids read as their field's OOV row). A supernet trained
with a selection split (``supernet --selection``) is scored on those held-out training rows
instead, so that the validation split stays out of the search's choices (the ``val_*`` names
then refer to the selection split).

Accuracy-bounded (the default, ``max_auc_drop`` set): on a supernet that prunes rows, each field
first gets the smallest row level (fraction of its top rows by norm) that keeps the validation AUC
within the tolerance of the best seen (:mod:`optembed.evolution.row_levels`); then the evolutionary
width search returns the smallest candidate within what is left of the tolerance: the two phases
share one budget (:func:`width_tolerance`), so the chosen model is within ``max_auc_drop`` of the
best seen in all, not within it twice over. The
paper's search (``max_auc_drop`` None) keeps the supernet's learned row mask m_e* and returns the
candidate of highest AUC.

A supernet of several tasks is searched under every task's accuracy bound: a row level or a width
candidate is acceptable only when each task's validation AUC is within its tolerance
(``--max-auc-drop``: one value for all tasks or one per task, the primary's first) of the
reference candidate's AUC on that task - the candidate whose worst task is nearest that task's
best AUC seen (with one task: the best candidate, as always); the max-AUC search maximises the
mean of the tasks' AUCs (:mod:`optembed.evolution.objectives`). The masks it chooses serve every
task (they act on the shared embedding table), so ``retrain`` applies them as for one task. The
outputs keep the primary task's AUC under the plain names and add every task's: ``val_auc_<task>``
columns in ``candidates.parquet`` and ``front.parquet``, ``best_auc_<task>`` in
``convergence.parquet``, a ``tasks`` table in ``best.json`` and in the manifest's metrics.

Outputs: ``candidates.parquet`` (every member of every generation with its widths, parameters and
AUC), ``convergence.parquet`` (one row per generation), ``front.parquet`` (every scored candidate
no other beats in both size and AUC), ``best.json`` (the chosen widths by field name, read by
``retrain``), and with a row search ``row_mask.pt`` (the chosen row mask, in the supernet's
format) and ``row_levels.parquet`` (per field: its level, rows kept, each level's AUC alone).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from optembed.data.selection import take
from optembed.data.tensors import SplitTensors
from optembed.errors import ArtifactError, ConfigError, TrainingError
from optembed.evolution import EvolutionConfig, evolve
from optembed.evolution.objectives import resolve_tolerances
from optembed.evolution.search import SearchResult, task_columns
from optembed.evolution.fitness import BatchedScorer, PairedScorer
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params
from optembed.evolution.row_levels import DEFAULT_LEVELS, DEFAULT_MIN_TRAFFIC, ROW_RANKS, RowLevelResult, search_row_levels
from optembed.masks.oov import field_offsets, with_oov_rows
from optembed.embedders.table import SupernetMode
from optembed.models.apply import apply_search
from optembed.models.checkpoint import load_model, read_model_payload
from optembed.progress import NULL, Reporter, Task
from optembed.training.runtime import runtime_from_env
from optembed.training.evaluate import evaluate, require_rankable
from optembed.training.tasks import task_names
from optembed.validation import check_search_memory
from pipelines.data import load_dataset
from pipelines.calibration import record_calibration
from pipelines.stage import execute
from pipelines.store import Manifest, Store
from pipelines.readers import load_row_mask, load_selection, training_counts

STAGE = "search"
# 2: masks scored as retrain applies them (pruned ids -> OOV); accuracy-bounded search; 3: folded OOV rows; 4: folded
# with training counts; 5: the row and width phases share one --max-auc-drop budget
VERSION = 5
UPSTREAM = "supernet"
ROW_SEARCH = ("row_levels", "row_rank", "min_traffic")  # fingerprinted only when the row levels are searched


@dataclass
class SearchStage:
    # supernet artifact (fingerprint prefix or folder); None = newest
    source: str | None = field(default=None, metadata=UNFINGERPRINTED)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    device: str = field(default="auto", metadata=UNFINGERPRINTED)
    # rows per backbone call; None: by device (CPUs prefer cache-sized calls)
    rows_per_pass: int | None = field(default=None, metadata=UNFINGERPRINTED)
    # columns per block of the first layer shared by all candidates (0: stack the candidates)
    block: int = field(default=16, metadata=UNFINGERPRINTED)
    amp: str = "none"
    # search per-field row levels (supernets that prune rows, accuracy-bounded search only); whether they
    # are searched enters the fingerprint through the ROW_SEARCH keys
    rows: bool = field(default=True, metadata=UNFINGERPRINTED)
    row_levels: tuple[float, ...] = field(default=DEFAULT_LEVELS, metadata={"resolved_by": "distinct_row_levels"})
    row_rank: str = "impact"  # which rows a level keeps: impact (count x deviation) | norm
    min_traffic: float = DEFAULT_MIN_TRAFFIC  # a positive row level keeps at least this share of its field's traffic
    force: bool = field(default=False, metadata=UNFINGERPRINTED)

    def distinct_row_levels(self) -> list[float]:
        """The row levels as a sorted list without repeats (their order and repeats do not matter)."""
        return sorted(float(q) for q in set(self.row_levels))

    def searches_rows(self, pruned: bool) -> bool:
        return self.rows and pruned and self.evolution.max_auc_drop is not None

    def validate(self) -> None:
        self.evolution.validate()
        if self.rows_per_pass is not None and self.rows_per_pass < 1:
            raise ConfigError("--rows-per-pass must be positive")
        if self.block < 0:
            raise ConfigError(f"--block must be 0 (stack the candidates) or positive, got {self.block}")
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"unknown --amp '{self.amp}'; choose none or bf16")
        if not 0.0 <= self.min_traffic <= 1.0:
            raise ConfigError(f"--min-traffic must be a fraction in [0, 1], got {self.min_traffic}")
        if self.row_rank not in ROW_RANKS:
            raise ConfigError(f"unknown --row-rank '{self.row_rank}'; choose {' or '.join(ROW_RANKS)}")
        if not self.row_levels or any(not 0.0 <= q < 1.0 for q in self.row_levels):
            raise ConfigError(f"--row-levels must be fractions in [0, 1), got {list(self.row_levels)}")


def stage_params(config: SearchStage, rows_phase: bool) -> dict[str, Any]:
    """The fingerprinted parameters; the row search's options only when it runs (``rows_phase``)."""
    return fingerprint_params(config, omit=() if rows_phase else ROW_SEARCH)


def _supernet_for_search(store: Store, source: str | None) -> tuple[Manifest, dict[str, Any], SupernetMode]:
    sn = store.resolve(source, UPSTREAM)
    payload = read_model_payload(sn.output("model"))
    mode = SupernetMode.parse(payload["mode"])
    if not mode.searchable:
        raise ConfigError(
            f"supernet {sn.fingerprint} was trained with --mode {mode.name}: it has neither row thresholds nor random "
            "widths to search; train one with --mode optembed, prune-only or dims-only"
        )
    return sn, payload, mode


def run(config: SearchStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    config.validate()
    evo = config.evolution
    sn, payload, mode = _supernet_for_search(store, config.source)
    tasks = int(payload["model_config"].get("tasks", 1))
    tolerances = resolve_tolerances(evo.max_auc_drop, tasks, f"supernet {sn.fingerprint}")
    pre_fp = payload.get("preprocess") or sn.upstream.get("preprocess")
    pre = store.lookup("preprocess", pre_fp) if pre_fp else None
    if pre is None:
        raise ArtifactError(f"the preprocess artifact {pre_fp} of supernet {sn.fingerprint} is missing from {store.root}")
    mask_info = load_row_mask(sn)
    cards = [int(c) for c in mask_info["rows_per_field"]]
    total_rows = int(sum(cards))
    dim = int(payload["model_config"]["embed_dim"])
    sample_dims = mode.sample_dims
    rows_phase = config.searches_rows(bool(mask_info["pruned"]))
    if not sample_dims and not rows_phase:
        raise ConfigError(
            f"supernet {sn.fingerprint} ({mode.name}) has no random widths, so only its row levels can be "
            "searched, which needs the accuracy-bounded search (--max-auc-drop) with row levels on"
        )
    base = with_oov_rows(mask_info["mask"], field_offsets(cards)) if mask_info["pruned"] else torch.ones(total_rows, dtype=torch.bool)
    field_of_row = torch.repeat_interleave(torch.arange(len(cards)), torch.as_tensor(cards))
    kept = torch.bincount(field_of_row[base], minlength=len(cards)).numpy().astype(np.int64)
    budget = evo.budget(total_rows, dim)
    if budget is not None and not sample_dims:
        raise ConfigError("a parameter budget or target sparsity needs a width search (a dims-only or optembed supernet)")
    if budget is not None and int(kept.sum()) > budget:
        raise ConfigError(
            f"no candidate can meet the budget: width 1 in every field already needs {int(kept.sum()):,} embedding "
            f"parameters under supernet {sn.fingerprint}'s row mask, above the budget of {budget:,}"
        )
    rt = runtime_from_env(config.device)  # under torchrun: rank 0 searches, the others wait for its artifact
    device = rt.device
    held = load_selection(sn)
    val_rows = int(pre.metrics.get("rows_val") or 0) if held is None else held.numel()
    check_search_memory(evo.population, evo.generations, len(kept), val_rows, device, tasks=tasks)
    params = stage_params(config, rows_phase)

    def build(tmp: Path, manifest: Manifest) -> None:
        model, _ = load_model(sn.output("model"), device)
        data, val, scored_on = _scoring_split(pre, sn, held, device)
        require_rankable(val, purpose="rank the candidates")
        reporter.message(f"candidates scored on {scored_on}")
        names = data.field_names
        task_list = task_names(val.tasks, tasks)
        started = time.perf_counter()
        keep, rows = base, None
        if rows_phase:
            rows = _row_phase(model, val, device, base, config, reporter, training_counts(pre))
            keep = rows.keep
            _write_row_outputs(tmp, rows, keep, cards, names, mask_info)
        # the widths are scored as the row levels were: pruned ids read their folded OOV row
        apply_search(model, keep, None, rows.counts if rows is not None else None)
        kept_now = torch.bincount(field_of_row[keep], minlength=len(cards)).numpy().astype(np.int64)
        width_drop: float | list[float] | None = None  # the width phase's tolerance after the row levels
        if sample_dims:
            width_config = config
            if rows is not None and evo.max_auc_drop is not None:
                left = width_tolerance(resolve_tolerances(evo.max_auc_drop, tasks) or (), rows)
                width_config = replace(config, evolution=replace(evo, max_auc_drop=left if tasks > 1 else left[0]))
                width_drop = list(left) if tasks > 1 else left[0]
                reporter.message(
                    "widths: what the row levels left of --max-auc-drop: " + ", ".join(f"{v:.5f}" for v in left)
                )
            result, full_aucs = _width_phase(model, val, device, kept_now, dim, total_rows, width_config, reporter, task_list)
        else:
            assert rows is not None
            result, full_aucs = _rows_only_result(rows, kept_now, dim, total_rows), list(rows.final_aucs)
        full_auc = full_aucs[0]
        seconds = time.perf_counter() - started
        if not np.isfinite(result.best_score):
            raise TrainingError("every candidate scored NaN; the supernet's outputs are not finite")
        widths_t = torch.as_tensor(result.best, dtype=torch.long, device=device) if sample_dims else None
        chosen = evaluate(model, val, device, widths=widths_t, amp=config.amp)  # its logloss beside its AUC
        history = [{**row, "sparsity": 1.0 - row["params"] / (total_rows * dim)} for row in result.history]
        pq.write_table(pa.Table.from_pylist(history), tmp / "candidates.parquet")
        pq.write_table(pa.Table.from_pylist(result.convergence), tmp / "convergence.parquet")
        front = [{**row, "sparsity": 1.0 - row["params"] / (total_rows * dim)} for row in result.front]
        pq.write_table(pa.Table.from_pylist(front), tmp / "front.parquet")
        best = {
            "widths": {n: int(w) for n, w in zip(names, result.best)},
            "val_auc": result.best_score,
            "params": result.best_params,
            "sparsity": 1.0 - result.best_params / (total_rows * dim),
            "full_width_val_auc": full_auc,
            "max_val_auc": result.max_score,
            "max_auc_drop": evo.max_auc_drop,
            "supernet": sn.fingerprint,
        }
        if tasks > 1:
            best["tasks"] = _best_by_task(result, full_aucs, tolerances, rows, task_list)
        (tmp / "best.json").write_text(json.dumps(best, indent=2) + "\n")
        manifest.outputs = {
            "candidates": "candidates.parquet", "convergence": "convergence.parquet", "front": "front.parquet",
            "best": "best.json",
        }
        if rows is not None:
            manifest.outputs.update({"row_mask": "row_mask.pt", "row_levels": "row_levels.parquet"})
        generations = len(result.convergence)
        manifest.metrics = {
            "best_val_auc": result.best_score,
            "max_val_auc": result.max_score,
            "full_width_val_auc": full_auc,
            "best_val_logloss": chosen["logloss"],
            "best_params": result.best_params,
            "sparsity": best["sparsity"],
            "row_sparsity": 1.0 - int(kept_now.sum()) / total_rows,
            "mean_width": float(np.average(result.best, weights=np.maximum(kept_now, 1))),
            "evaluations": result.evaluations,
            "generations": max(generations - 1, 0),
            "seconds": round(seconds, 3),
            "seconds_per_generation": round(seconds / max(generations, 1), 4),
            "val_rows": len(val),
            "scored_on": "selection" if held is not None else "val",
            "device": str(device),
        }
        if rows is not None:
            manifest.metrics.update({
                "rows_base_val_auc": rows.base_auc,
                "rows_val_auc": rows.final_auc,
                "rows_best_val_auc": rows.best_auc,
                "emptied_fields": sum(1 for q in rows.levels if q == 0.0),
                "pruned_fields": sum(1 for q in rows.levels if q < 1.0),
                "row_passes": rows.passes,
                **({"width_max_auc_drop": width_drop} if width_drop is not None else {}),
            })
        if tasks > 1:
            manifest.metrics["tasks"] = _metrics_by_task(result, full_aucs, tolerances, rows, chosen, task_list)
        record_calibration(manifest, pre, {"val_logloss": chosen["logloss"]})

    return execute(store, STAGE, VERSION, params, {UPSTREAM: sn}, build, force=config.force, runtime=rt, collective=False)


def _scoring_split(
    pre: Manifest, sn: Manifest, held: torch.Tensor | None, device: torch.device
) -> tuple[Any, SplitTensors, str]:
    """The loaded data, the split the candidates are scored on and a phrase naming it: the
    supernet's selection rows ``held`` (training rows it did not train on) when it held some out,
    else the validation split."""
    if held is None:
        data = load_dataset(pre, device, splits=("val",))
        return data, data.splits["val"], f"the validation split ({len(data.splits['val']):,} rows)"
    data = load_dataset(pre, device, splits=("train",))
    train = data.splits["train"]
    if not isinstance(train, SplitTensors):
        raise ConfigError(f"supernet {sn.fingerprint} held out selection rows, which the search reads from the training "
                          "split, and that split does not fit in memory here")
    if held.numel() and int(held.max()) >= len(train):
        raise ArtifactError(f"supernet {sn.fingerprint}'s selection rows reach past its preprocess artifact's training split")
    split = take(train, held.to(train.x.device))
    data.splits = {"val": split}
    return data, split, f"the selection split ({held.numel():,} training rows the supernet did not train on)"


def width_tolerance(tolerances: tuple[float, ...], rows: RowLevelResult) -> tuple[float, ...]:
    """Per task, the share of its ``--max-auc-drop`` the width search may still spend: its
    tolerance less what the row levels cost it (their chosen mask's AUC below the best seen, the
    reference of their own test), never below 0."""
    bests = rows.best_aucs or [rows.best_auc]
    finals = rows.final_aucs or [rows.final_auc]
    return tuple(max(0.0, t - max(0.0, b - f)) for t, b, f in zip(tolerances, bests, finals, strict=True))


def _row_phase(
    model: Any, val: Any, device: torch.device, base: torch.Tensor, config: SearchStage, reporter: Reporter,
    counts: torch.Tensor | None = None,
) -> RowLevelResult:
    task = reporter.task("search: row levels", total=1, unit="pass")
    result = search_row_levels(
        model, val, device, base, config.evolution.max_auc_drop or 0.0, config.row_levels,
        amp=config.amp, progress=PhasedProgress(task), z=config.evolution.noise_z, rank_by=config.row_rank,
        rank_counts=None if counts is None else counts.to(device), min_traffic=config.min_traffic,
    )
    task.close()
    reporter.message(
        f"row levels: val AUC {result.base_auc:.5f} -> {result.final_auc:.5f} (best seen {result.best_auc:.5f}), "
        f"{sum(q < 1.0 for q in result.levels)} fields pruned, {sum(q == 0.0 for q in result.levels)} emptied"
    )
    for name, before, after, best in zip(result.tasks, result.base_aucs, result.final_aucs, result.best_aucs, strict=False):
        reporter.message(f"  {name}: val AUC {before:.5f} -> {after:.5f} (reference {best:.5f})")
    return result


class PhasedProgress:
    """A progress hook ``(what, done, total)`` over one task whose work comes in phases (each with
    its own ``total``, ``done`` counting from 0 again): the bar counts the steps of the phases
    so far, its total is theirs plus the current phase's, so it never shows more done than total."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.phase: str | None = None
        self.before = 0  # steps of the finished phases
        self.shown = 0  # steps the task has advanced

    def __call__(self, what: str, done: int, total: int) -> None:
        if what != self.phase:
            self.phase, self.before = what, self.shown
        self.task.update(description=f"search: {what}", total=self.before + total)
        target = self.before + min(done, total)
        if target > self.shown:
            self.task.advance(target - self.shown)
            self.shown = target


def _width_phase(
    model: Any, val: Any, device: torch.device, kept: np.ndarray, dim: int, total_rows: int, config: SearchStage,
    reporter: Reporter, tasks: list[str],
) -> tuple[SearchResult, list[float]]:
    """The evolutionary width search; with it every task's validation AUC at full width."""
    evo = config.evolution
    rows_per_pass = config.rows_per_pass or (262_144 if device.type == "cuda" else 4096)
    scorer = BatchedScorer(model, val, device, rows_per_pass=rows_per_pass, amp=config.amp, block=config.block or None)
    full = np.full((1, model.n_fields), dim, dtype=np.int64)
    full_aucs = [float(v) for v in np.atleast_1d(scorer(full)[0])]
    fitness: Any = scorer if evo.max_auc_drop is None else PairedScorer(scorer, full[0])
    task = reporter.task("search: widths", total=evo.generations + 1, unit="gen")

    def progress(row: dict[str, Any]) -> None:
        task.update(description=f"search: generation {row['generation']}, chosen val AUC {row['best_auc']:.5f}")
        task.advance(1)

    result = evolve(fitness, kept, dim, evo, total_rows=total_rows, on_generation=progress, tasks=tasks)
    task.close()
    return result, full_aucs


def _rows_only_result(rows: RowLevelResult, kept: np.ndarray, dim: int, total_rows: int) -> SearchResult:
    """A prune-only supernet: the row levels' result at full width, as a one-candidate search."""
    widths = np.full(len(kept), dim, dtype=np.int64)
    params = int(kept.sum()) * dim
    score = rows.final_auc
    finals, bests = np.asarray(rows.final_aucs), np.asarray(rows.best_aucs)
    names = rows.tasks
    row = {"generation": 0, "rank": 0, "origin": "rows", "widths": widths.tolist(), "params": params, "val_auc": score,
           **task_columns("val_auc", finals, names)}
    conv = {"generation": 0, "best_auc": score, "mean_auc": score, "best_params": params,
            "best_sparsity": 1.0 - params / (total_rows * dim), "max_auc": rows.best_auc, "evaluated": rows.passes,
            "seconds": 0.0, **task_columns("best_auc", finals, names), **task_columns("max_auc", bests, names)}
    front = {"widths": widths.tolist(), "params": params, "val_auc": score, **task_columns("val_auc", finals, names)}
    several = len(names) > 1
    return SearchResult(widths, score, params, [row], [conv], rows.passes, rows.best_auc, [front],
                        tasks=list(names) if several else [], best_scores=finals.tolist() if several else [],
                        max_scores=bests.tolist() if several else [], reference_scores=bests.tolist() if several else [])


def _best_by_task(
    result: SearchResult, full_aucs: list[float], tolerances: tuple[float, ...] | None, rows: RowLevelResult | None,
    names: list[str],
) -> dict[str, dict[str, Any]]:
    """``best.json``'s ``tasks`` table: per task the chosen candidate's validation AUC, the full
    width's, the best any candidate reached, the reference candidate's (the tolerance is measured
    from it; :mod:`optembed.evolution.objectives`) and the tolerance."""
    out: dict[str, dict[str, Any]] = {}
    for t, name in enumerate(names):
        entry: dict[str, Any] = {
            "val_auc": result.best_scores[t], "full_width_val_auc": full_aucs[t], "max_val_auc": result.max_scores[t],
            "reference_val_auc": result.reference_scores[t] if result.reference_scores else None,
            "max_auc_drop": None if tolerances is None else tolerances[t],
        }
        if rows is not None:
            entry.update({"rows_base_val_auc": rows.base_aucs[t], "rows_val_auc": rows.final_aucs[t]})
        out[name] = entry
    return out


def _metrics_by_task(
    result: SearchResult, full_aucs: list[float], tolerances: tuple[float, ...] | None, rows: RowLevelResult | None,
    chosen: dict[str, float], names: list[str],
) -> dict[str, dict[str, Any]]:
    """The manifest's ``tasks`` metrics: ``best.json``'s table under the manifest's names, with the
    chosen candidate's validation logloss."""
    table = _best_by_task(result, full_aucs, tolerances, rows, names)
    out = {}
    for name, entry in table.items():
        row = {"best_val_auc": entry["val_auc"], "best_val_logloss": chosen[f"logloss_{name}"],
               "max_val_auc": entry["max_val_auc"], "full_width_val_auc": entry["full_width_val_auc"]}
        if entry["max_auc_drop"] is not None:
            row.update({"reference_val_auc": entry["reference_val_auc"], "max_auc_drop": entry["max_auc_drop"]})
        if rows is not None:
            row.update({"rows_base_val_auc": entry["rows_base_val_auc"], "rows_val_auc": entry["rows_val_auc"]})
        out[name] = row
    return out


def _write_row_outputs(
    tmp: Path, rows: RowLevelResult, keep: torch.Tensor, cards: list[int], names: list[str], supernet_mask: dict[str, Any]
) -> None:
    field_of_row = torch.repeat_interleave(torch.arange(len(cards)), torch.as_tensor(cards))
    kept = torch.bincount(field_of_row[keep], minlength=len(cards)).tolist()
    torch.save(
        {"mask": keep.cpu(), "kept_per_field": kept, "rows_per_field": cards,
         "thresholds": list(supernet_mask["thresholds"]), "pruned": True, "levels": list(rows.levels)},
        tmp / "row_mask.pt",
    )
    alone: dict[int, dict[float, float]] = {}
    for r in rows.single:
        alone.setdefault(int(r["field"]), {})[float(r["level"])] = float(r["delta"])
    table = [
        {"field": name, "rows": cards[f], "supernet_kept": int(supernet_mask["kept_per_field"][f]), "kept": kept[f],
         "level": rows.levels[f],
         "alone_deltas": json.dumps({str(q): d for q, d in sorted(alone.get(f, {}).items())})}
        for f, name in enumerate(names)
    ]
    pq.write_table(pa.Table.from_pylist(table), tmp / "row_levels.parquet")


def read_row_levels(manifest: Manifest) -> list[dict[str, Any]]:
    """Per field of a search with row levels: rows, kept rows, level; [] without a row search."""
    if "row_levels" not in manifest.outputs:
        return []
    return pq.read_table(manifest.output("row_levels")).to_pylist()


def read_convergence(manifest: Manifest) -> list[dict[str, Any]]:
    if manifest.stage != STAGE:
        raise ArtifactError(f"artifact {manifest.fingerprint} is a {manifest.stage} artifact, expected search")
    return pq.read_table(manifest.output("convergence")).to_pylist()
