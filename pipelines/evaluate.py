"""The ``evaluate`` stage: compare models on the test split, size and speed included.

Accepted sources: ``retrain`` (the deployable compact model), ``compress`` (its quantized
form: codes + codebooks, or row-wise int8; labelled ``<variant> + pq`` / ``<variant> + int8``), ``supernet`` (the supernet as trained: learnable row mask, full
width), ``search`` (the supernet under the searched widths and frozen row mask: "OptEmbed
without re-training") and ``baseline`` (QR, PEP, AutoField, AutoDim). All must come from the same preprocess artifact.

Every model states its own sizes (:meth:`CTRModel.size_report`, asked of its embedder):
sparsity by the method's paper (kept rows x widths for OptEmbed, stored parameters for QR,
kept elements for PEP, the kept fields' rows for AutoField, rows x chosen widths for AutoDim), embedding bytes as the tables really need them (float32 values, codes
and codebooks, int8 codes with their scales and biases, a sparse layout's indices); the ratio compares them with the dense float32
Original table (all rows x D x 4 bytes).

A ``compress`` artifact that coded no field (``coded_fields`` 0, made before ``compress`` refused
such runs) is its source model with a fine-tuning epoch, not a compressed variant: it is refused.
Every row of the table has its own label: artifacts that would share one (two compressions of
the same model, two runs of one variant) get their fingerprint's first characters appended.

Beside each test AUC and logloss: the AUC's DeLong 95% interval (``test_auc_ci``), and, against
the Original (the first re-trained ``original`` row), the paired AUC difference and its DeLong
standard error on the same rows. The split's base rate - the logloss of predicting the
training positive rate (``schema.json``) for every test row - is recorded once. ``warnings``
(also shown by the CLI) name every model whose test logloss is worse than the base rate's, and
a test split too small to tell the models apart: too few rows of a class, or the two best
models' paired difference within its interval (:func:`evaluation_warnings`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optembed.errors import ArtifactError, ConfigError
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params
from optembed.metrics import auc, auc_components, auc_se, base_rate_logloss, logloss, normal_interval, paired_auc_se, z_value
from optembed.models.apply import apply_search
from optembed.models.checkpoint import load_model
from optembed.progress import NULL, Reporter
from optembed.training.device import resolve_device
from optembed.training.diagnostics import MIN_CLASS_ROWS, worse_than_base_rate
from optembed.training.evaluate import predict
from optembed.training.latency import measure_latency, module_bytes
from optembed.validation import batch_bytes, check_memory
from pipelines import variants
from pipelines.calibration import trained_variant
from pipelines.data import load_dataset, read_schema
from pipelines.stage import execute
from pipelines.tasks import primary, task_test_metrics
from pipelines.readers import MODEL_OUTPUT, load_row_mask, read_best_widths, resolve_chain, search_fold_counts, search_row_mask
from pipelines.teacher import TEACHER_KEY
from pipelines.store import Manifest, Store

STAGE = "evaluate"
VERSION = 4  # 2: unique variant labels; compress artifacts that coded no field are refused; 3: rows state D, plots of training curves;
# 4: AUC intervals, paired differences against the Original, the base rate's logloss, warnings
LEVEL = 0.95  # of the AUC intervals
SOURCES = ("retrain", "compress", "supernet", "search", "baseline")


@dataclass
class EvaluateStage:
    # empty: every retrain artifact of the newest data; the fingerprints they resolve to are fingerprinted
    sources: list[str] = field(default_factory=list, metadata=UNFINGERPRINTED)
    device: str = field(default="auto", metadata=UNFINGERPRINTED)
    eval_batch_size: int = field(default=32768, metadata=UNFINGERPRINTED)
    latency: bool = True
    plot: bool = False
    force: bool = field(default=False, metadata=UNFINGERPRINTED)


def stage_params(config: EvaluateStage, fingerprints: Sequence[str]) -> dict[str, Any]:
    """The fingerprinted parameters: the sources' fingerprints (sorted) and the stage's options."""
    return {"sources": sorted(fingerprints), **fingerprint_params(config)}


@dataclass
class Candidate:
    label: str
    manifest: Manifest
    model: nn.Module
    size: dict[str, Any]  # the model's size_report()
    file_bytes: int
    info: dict[str, Any] = field(default_factory=dict)


def pick_sources(config: EvaluateStage, store: Store) -> list[Manifest]:
    if config.sources:
        found = [store.resolve(ref, SOURCES) for ref in config.sources]
    else:
        runs = store.list("retrain")
        if not runs:
            raise ArtifactError(f"no retrain artifact in {store.root}; pass --from or run retrain first")
        newest = runs[-1].upstream.get("preprocess")
        found = [m for m in runs if m.upstream.get("preprocess") == newest]
    seen: dict[str, Manifest] = {}
    for m in found:
        seen.setdefault(m.fingerprint, m)
    for m in seen.values():
        if m.stage == "compress" and m.metrics.get("coded_fields", 1) == 0:
            raise ArtifactError(
                f"compress artifact {m.fingerprint[:10]} coded no field: it is its source model "
                f"(retrain {m.upstream.get('retrain', '?')[:10]}) with a fine-tuning epoch, not a compressed variant; "
                "evaluate the retrain artifact instead"
            )
    return list(seen.values())


def unique_labels(rows: list[dict[str, Any]], prefix: int = 8) -> None:
    """Append the fingerprint's first ``prefix`` characters to every ``variant`` shared by rows."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["variant"]] = counts.get(r["variant"], 0) + 1
    for r in rows:
        if counts[r["variant"]] > 1:
            r["variant"] = f"{r['variant']} [{r['id'][:prefix]}]"


def load_candidate(store: Store, manifest: Manifest, device: torch.device) -> Candidate:
    if manifest.stage in MODEL_OUTPUT:
        if manifest.stage == "compress" and store.lookup("retrain", manifest.upstream["retrain"]) is None:
            raise ArtifactError(f"the retrain artifact of compress {manifest.fingerprint} is missing")
        path = manifest.output(MODEL_OUTPUT[manifest.stage])
        model, _ = load_model(path, device)
        return Candidate(trained_variant(manifest), manifest, model, model.size_report(), path.stat().st_size,
                         {"model": model.cfg.name})
    chain = resolve_chain(store, manifest)
    sn = chain["supernet"]
    model, payload = load_model(sn.output("model"), device)
    mask = search_row_mask(manifest, sn) if manifest.stage == "search" else load_row_mask(sn)
    if manifest.stage == "search":  # the model the search scored: its mask, its folds, its widths
        widths = read_best_widths(manifest, payload["field_names"])
        keep = mask["mask"] if mask["pruned"] else None
        apply_search(model, keep, widths, search_fold_counts(store, manifest, model.embedder.cardinalities, device))
        label = variants.of_mode(payload["mode"]) + " (no retrain)"
    else:
        if mask["pruned"]:
            model.embedder.set_row_mask(mask["mask"])  # the saved mask: same rows
        label = f"supernet ({payload['mode']})"
    size = model.size_report()
    if manifest.stage == "supernet":
        model.embedder.set_row_mask(None)  # evaluated as trained: its learnable row mask
    return Candidate(label, manifest, model.eval(), size, sn.output("model").stat().st_size)


def preflight(config: EvaluateStage, store: Store) -> tuple[list[Manifest], Manifest, torch.device]:
    """Every check made before any work: the sources, their common preprocess artifact, the
    device and the memory an evaluation batch needs. Returns ``(sources, preprocess, device)``."""
    if config.eval_batch_size < 1:
        raise ConfigError(f"--eval-batch-size must be at least 1, got {config.eval_batch_size}")
    sources = pick_sources(config, store)
    pres = {m.fingerprint: resolve_chain(store, m)["preprocess"] for m in sources}
    distinct = {p.fingerprint for p in pres.values()}
    if len(distinct) > 1:
        raise ArtifactError(
            f"the artifacts come from {len(distinct)} different preprocess artifacts ({', '.join(sorted(distinct))}); "
            "evaluate models of the same data together"
        )
    pre = next(iter(pres.values()))
    device = resolve_device(config.device)
    n_fields = len(read_schema(pre)["fields"])
    check_memory(
        f"evaluating with --eval-batch-size {config.eval_batch_size:,}",
        batch_bytes(config.eval_batch_size, n_fields, 1, (), training=False),
        device,
        "use a smaller --eval-batch-size",
    )
    return sources, pre, device


def run(config: EvaluateStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    sources, pre, device = preflight(config, store)
    params = stage_params(config, [m.fingerprint for m in sources])
    upstream = {f"{m.stage}#{i}": m for i, m in enumerate(sorted(sources, key=lambda m: m.fingerprint))}

    def build(tmp: Path, manifest: Manifest) -> None:
        data = load_dataset(pre, device, splits=("test",))
        test = data.splits["test"]
        every_label = test.y.to(device)
        labels = primary(every_label)  # every table and comparison: the primary task's
        split = split_summary(labels, float(read_schema(pre)["positive_ratio"]["train"]))
        rows: list[dict[str, Any]] = []
        components: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        task = reporter.task("evaluating", total=len(sources), unit="model")
        for m in sources:
            cand = load_candidate(store, m, device)
            size = cand.size
            every_logit = predict(cand.model, test, device, config.eval_batch_size)
            if every_logit.shape != every_label.shape:
                raise ArtifactError(
                    f"{m.stage} artifact {m.fingerprint} predicts {cand.model.cfg.tasks} task(s); "
                    f"the test split has {len(data.tasks) if every_label.dim() > 1 else 1} label(s)"
                )
            logits = primary(every_logit)
            components[m.fingerprint] = auc_components(labels, logits)
            test_auc = auc(labels, logits)
            se = auc_se(components[m.fingerprint])
            teacher = m.upstream.get(TEACHER_KEY)
            row: dict[str, Any] = {
                "id": m.fingerprint,
                "stage": m.stage,
                "model": cand.info.get("model") or m.params.get("model", {}).get("name") or _model_name(store, m),
                "variant": cand.label,
                "init": m.params.get("init"),  # retrain: where its training started (fresh, rewind, supernet)
                # distilled (retrain, baseline): the teacher's id and weight; None: trained on the labels alone
                "teacher": teacher,
                "distill": m.params.get("train", {}).get("distill") if teacher else None,
                "test_auc": test_auc,
                "test_auc_se": se,
                "test_auc_ci": list(normal_interval(test_auc, se, LEVEL)),
                "test_logloss": logloss(labels, logits),
                "sparsity": size["sparsity"],
                "embedding_params": size["embedding_params"],
                "embedding_bytes": size["embedding_bytes"],
                "dim": size["dim"],
                "ratio_vs_original": size["total_rows"] * size["dim"] * 4 / max(size["embedding_bytes"], 1),
                "total_params": size["total_params"],
                "file_bytes": cand.file_bytes,
                "memory_bytes": module_bytes(cand.model),
                "widths": size["widths"],
                "kept": size["kept"],
            }
            tasks = task_test_metrics(every_label, every_logit, data.tasks)
            if tasks:
                row["tasks"] = tasks
            if config.latency:
                row.update(measure_latency(cand.model, test.x[:4096], device))
            else:
                row["latency_skipped"] = "off"  # why no latency is reported (--no-latency, a CPU's default)
            rows.append(row)
            task.advance(1)
        task.close()
        unique_labels(rows)
        reference = paired_differences(rows, components)
        warnings = evaluation_warnings(rows, split, components)
        result = {"preprocess": pre.fingerprint, "test": split, "paired_reference": reference, "models": rows,
                  "warnings": warnings}
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "report.md").write_text(report_markdown(rows, pre, data.field_names, split, warnings))
        manifest.outputs = {"metrics": "metrics.json", "report": "report.md"}
        if config.plot:
            from optembed.plots import write_plots

            candidates = _search_candidates(store, sources)
            curves = training_curves(store, sources, rows)
            plots = write_plots(tmp, rows, data.field_names, candidates, data.cardinalities, curves)
            for name, file in plots.items():
                manifest.outputs[name] = file
        best = max(rows, key=lambda r: r["test_auc"])
        manifest.metrics = {
            "models": len(rows),
            "best_test_auc": best["test_auc"],
            "best_test_logloss": best["test_logloss"],
            "best_variant": best["variant"],
            "test_base_rate_logloss": split["base_rate_logloss"],
            "results": [
                {k: r.get(k) for k in ("variant", "id", "test_auc", "test_auc_ci", "test_logloss", "delta_auc_vs_original",
                                       "delta_auc_se")}
                for r in rows
            ],
            "warnings": len(warnings),
            "device": str(device),
        }

    if config.eval_batch_size < 1:
        raise ConfigError("--eval-batch-size must be positive")
    return execute(store, STAGE, VERSION, params, upstream, build, force=config.force)


def split_summary(labels: torch.Tensor, train_positive_ratio: float) -> dict[str, Any]:
    """Rows and positives of the test split, and its base rate: the logloss of predicting the
    training positive rate for every row."""
    positives = int((labels > 0.5).sum())
    return {
        "rows": int(labels.numel()),
        "positives": positives,
        "negatives": int(labels.numel()) - positives,
        "train_positive_ratio": train_positive_ratio,
        "base_rate_logloss": base_rate_logloss(labels, train_positive_ratio),
    }


def reference_index(rows: list[dict[str, Any]]) -> int | None:
    """The row the others are compared with: the first re-trained Original, if any."""
    for i, r in enumerate(rows):
        if r["stage"] == "retrain" and r["variant"].split(" ")[0] == "original":
            return i
    return None


def paired_differences(rows: list[dict[str, Any]], components: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str | None:
    """Give every row but the reference ``delta_auc_vs_original`` (its test AUC minus the
    Original's) and ``delta_auc_se`` (DeLong's standard error of that difference, paired on the
    same test rows); returns the reference's id (``None`` without an Original row)."""
    ref = reference_index(rows)
    if ref is None:
        return None
    base = rows[ref]
    for i, r in enumerate(rows):
        if i != ref:
            r["delta_auc_vs_original"] = r["test_auc"] - base["test_auc"]
            r["delta_auc_se"] = paired_auc_se(components[r["id"]], components[base["id"]])
    return str(base["id"])


def evaluation_warnings(
    rows: list[dict[str, Any]],
    split: dict[str, Any],
    components: dict[str, tuple[torch.Tensor, torch.Tensor]],
    level: float = LEVEL,
) -> list[str]:
    """One line per model whose test logloss is worse than the base rate's; one line when the
    test split is too small to tell the models apart: fewer than :data:`MIN_CLASS_ROWS` rows of
    a class, or (two or more models) the two best test AUCs differ by less than the ``level``
    interval of their paired (DeLong) difference - the line names them."""
    base = split["base_rate_logloss"]
    lines = [w for r in rows if (w := worse_than_base_rate(r["variant"], {"test": (r["test_logloss"], base)}))]
    z = z_value(level)
    few = min(split["positives"], split["negatives"])
    widest = max((z * r["test_auc_se"] for r in rows if r["test_auc_se"] == r["test_auc_se"]), default=float("nan"))
    if few < MIN_CLASS_ROWS:
        lines.append(
            f"the test split has only {split['positives']:,} positive and {split['negatives']:,} negative rows "
            f"(fewer than {MIN_CLASS_ROWS} of a class): its AUCs are uncertain"
            + (f" (95% intervals up to ±{widest:.4f})" if widest == widest else "")
            + " and too few to tell close models apart; use more data or a larger test share (--split)"
        )
        return lines
    close = best_two_within_interval(rows, components, z)
    if close is not None:
        first, second, diff, half = close
        lines.append(
            f"the test split ({split['rows']:,} rows) cannot tell the two best models apart: {first['variant']} "
            f"{first['test_auc']:.4f} vs {second['variant']} {second['test_auc']:.4f}, a difference of {diff:+.4f} "
            f"within its {level:.0%} paired DeLong interval (±{half:.4f}); more test rows are needed to rank them"
        )
    return lines


def best_two_within_interval(
    rows: list[dict[str, Any]], components: dict[str, tuple[torch.Tensor, torch.Tensor]], z: float
) -> tuple[dict[str, Any], dict[str, Any], float, float] | None:
    """``(best, runner-up, AUC difference, z x its paired standard error)`` when the two rows of
    highest test AUC differ by no more than that half-width; ``None`` otherwise (also with fewer
    than two rows or an undefined standard error)."""
    ranked = sorted((r for r in rows if r["test_auc"] == r["test_auc"]), key=lambda r: -r["test_auc"])
    if len(ranked) < 2:
        return None
    first, second = ranked[0], ranked[1]
    se = paired_auc_se(components[first["id"]], components[second["id"]])
    diff = first["test_auc"] - second["test_auc"]
    if se != se or abs(diff) > z * se:
        return None
    return first, second, diff, z * se


def _model_name(store: Store, manifest: Manifest) -> str:
    sn = resolve_chain(store, manifest).get("supernet")
    return sn.params["model"]["name"] if sn else "?"


def _search_candidates(store: Store, sources: list[Manifest]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for m in sources:
        chain = resolve_chain(store, m)
        search = chain.get("search")
        if search is not None and "candidates" in search.outputs and search.fingerprint not in seen:
            seen.add(search.fingerprint)
            mode = chain["supernet"].params.get("mode", "?") if "supernet" in chain else "?"
            label = f"search {search.fingerprint[:8]} ({mode})"
            out.extend({**row, "search": label} for row in pq.read_table(search.output("candidates")).to_pylist())
    return out


def curves_source(store: Store, manifest: Manifest) -> Manifest | None:
    """The artifact whose ``curves`` output traces the training of ``manifest``'s model: its own
    (retrain, compress, supernet, baseline), else its retrain or supernet ancestor (a search
    artifact: the supernet it scored); ``None`` when no such artifact has curves."""
    if "curves" in manifest.outputs:
        return manifest
    chain = resolve_chain(store, manifest)
    for stage in ("retrain", "supernet"):
        if stage in chain and "curves" in chain[stage].outputs:
            return chain[stage]
    return None


def training_curves(
    store: Store, sources: list[Manifest], rows: list[dict[str, Any]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(label, per-epoch records)`` of the evaluated models' training, in the order of ``rows``;
    models without curves are left out, and models sharing one training artifact share one entry
    (labels joined; an ancestor's stage is named)."""
    import pyarrow.parquet as pq

    by_id = {m.fingerprint: m for m in sources}
    shared: dict[str, tuple[Manifest, list[str]]] = {}
    for r in rows:
        m = by_id[r["id"]]
        art = curves_source(store, m)
        if art is None:
            continue
        label = r["variant"] if art is m else f"{r['variant']} ({art.stage} {art.fingerprint[:8]})"
        shared.setdefault(art.fingerprint, (art, []))[1].append(label)
    return [(" / ".join(labels), pq.read_table(art.output("curves")).to_pylist()) for art, labels in shared.values()]


def latency_cell(row: dict[str, Any], key: str, spec: str) -> str:
    """A latency or throughput cell of the report: the number, or ``n/a`` (with the one-word
    reason when the row records it, ``n/a (off)``) when it was not measured."""
    value = row.get(key)
    if isinstance(value, int | float) and math.isfinite(value):
        return format(value, spec)
    reason = row.get("latency_skipped")
    return f"n/a ({reason})" if reason else "n/a"


def report_markdown(
    rows: list[dict[str, Any]], pre: Manifest, field_names: list[str], split: dict[str, Any], warnings: Sequence[str] = ()
) -> str:
    lines = [
        "# optembed evaluation",
        "",
        f"Test split of preprocess artifact `{pre.fingerprint}` ({split['rows']:,} rows, {split['positives']:,} positive). "
        f"Base rate: logloss {split['base_rate_logloss']:.5f} when predicting the training positive rate "
        f"({split['train_positive_ratio']:.4f}) for every row.",
        "",
        "| model | variant | id | D | test AUC | 95% interval | vs Original | logloss | sparsity | emb. params | emb. bytes | ratio | total params | file bytes | memory bytes | p50 ms | p99 ms | samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["test_auc_ci"]
        delta = (f"{r['delta_auc_vs_original']:+.5f} ± {z_value(LEVEL) * r['delta_auc_se']:.5f}"
                 if "delta_auc_vs_original" in r else "")
        lines.append(
            f"| {r['model']} | {r['variant']} | `{r['id'][:10]}` | {r.get('dim', '?')} | {r['test_auc']:.5f} | [{lo:.4f}, {hi:.4f}] | {delta} | "
            f"{r['test_logloss']:.5f} | "
            f"{r['sparsity']:.4f} | {r['embedding_params']:,} | {r['embedding_bytes']:,} | {r['ratio_vs_original']:.1f}x | "
            f"{r['total_params']:,} | {r['file_bytes']:,} | "
            f"{r['memory_bytes']:,} | {latency_cell(r, 'latency_p50_ms', '.3f')} | {latency_cell(r, 'latency_p99_ms', '.3f')} | "
            f"{latency_cell(r, 'throughput_samples_per_s', ',.0f')} |"
        )
    lines += [
        "",
        "Sparsity = 1 - kept parameters / (all rows x D), kept parameters as each method's paper counts them: "
        "kept rows x widths (OptEmbed), stored parameters (QR), kept elements (PEP), the kept fields' rows x D "
        "(AutoField), rows x chosen widths (AutoDim). Emb. params: float parameters "
        "of the tables (codebooks and float tables for a quantized model); emb. bytes: what the tables really need "
        "(values, codes, codebooks, a sparse layout's indices for PEP); ratio: the dense float32 Original table's "
        "bytes / emb. bytes. 95% interval: DeLong's normal interval of the test AUC; vs Original: the test AUC "
        "difference against the Original on the same rows, ± 1.96 paired DeLong standard errors. D: the "
        "embedding width of the model's full table. Latency: n/a when not measured, with why (off: --no-latency, "
        "the default on a CPU).",
        "",
    ]
    if warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in warnings), ""]
    lines += ["## Per-field widths / kept rows", "", "| field | " + " | ".join(r["variant"] for r in rows) + " |"]
    lines.append("|---|" + "---|" * len(rows))
    for f, name in enumerate(field_names):
        cells = [f"{r['widths'][f]} / {r['kept'][f]:,}" for r in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
