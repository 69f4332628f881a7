"""The whole OptEmbed chain: preprocess -> supernet -> search -> retrain -> evaluate.

Every step is an ordinary stage, so finished steps are reused from the store (cached) and a
rerun after an interruption continues where it stopped. Variants (the paper's ablations):

- ``original``: the plain model at full width (re-trained with ``--full``);
- ``optembed-e``: row pruning only (a ``prune-only`` supernet, its row levels searched within the
  accuracy bound, re-trained under that row mask; with the paper's search, its learned mask);
- ``optembed-d``: width search only (a ``dims-only`` supernet, searched, re-trained);
- ``optembed``: both (an ``optembed`` supernet, searched, re-trained);
- ``optembed-noretrain``: the ``optembed`` supernet evaluated under its searched masks;
- ``qr``, ``pep``, ``autofield``, ``autodim``: the paper's baselines (:mod:`pipelines.baseline`),
  trained (searched, then retrained) with the ``[retrain]`` options; their own options come from
  ``[baseline.<method>]``, e.g. ``[baseline.autodim] candidates = [2, 4, 8]``.

With ``distill`` > 0 (the default) every compressed variant (the masked re-trainings and the
baselines) learns from the Original's probabilities beside the labels, with that weight
(:mod:`optembed.training.distill`): the Original is trained first, as the teacher, even when it is
not among the variants compared.

Optionally (``compress = {"variants": [...], ...}``) re-trained variants are also compressed
(product quantization or row-wise int8: ``method``, see :mod:`pipelines.compress`) and evaluated beside the others.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from optembed.data.preprocess import PreprocessConfig
from optembed.data.selection import MAX_FRACTION as MAX_SELECTION
from optembed.embedders.table import SupernetMode
from optembed.data.validation import check_input
from optembed.errors import ConfigError
from pipelines import run_schema as schema
from pipelines.eta import Eta, eta_text
from optembed.evolution import EvolutionConfig
from optembed.models.config import ModelConfig
from optembed.progress import NULL, Prefixed, Reporter
from optembed.training.config import DEFAULT_DISTILL, TrainConfig
from optembed.training.device import resolve_device
from optembed.validation import check_search_memory, check_training_memory
from optembed.quantization.config import QuantizerConfig
from optembed.quantization.finetune import FinetuneConfig
from pipelines import baseline, compress, evaluate, preprocess, retrain, search, supernet, variants
from optembed.training.recipe import MAX_AUTO_BATCH
from pipelines.store import Manifest, Store
from pipelines.summary import result_summary

VARIANTS = variants.NAMES  # the default
ALL_VARIANTS = VARIANTS + baseline.METHODS
SUPERNET_MODE = variants.SUPERNET_MODE


@dataclass
class ChainConfig:
    data: Path
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig("deepfm"))
    supernet: TrainConfig = field(default_factory=TrainConfig)
    retrain: TrainConfig = field(default_factory=TrainConfig)
    search: dict[str, Any] = field(default_factory=dict)
    compress: dict[str, Any] = field(default_factory=dict)  # "variants" to compress + compress options
    baseline: dict[str, Any] = field(default_factory=dict)  # method -> its embedder options
    variants: tuple[str, ...] = VARIANTS
    retrain_init: str = "auto"  # auto | fresh | rewind | supernet (the masked variants' re-training start)
    # weight of the Original's probabilities in the compressed variants' training (0: the labels alone)
    distill: float = DEFAULT_DISTILL
    # training rows the supernets hold out for the searches to score on (0: they score on validation)
    selection: float = 0.0
    # the supernets learn from the Original too (with the distill weight), not only the re-trained variants
    distill_supernet: bool = False
    device: str = "auto"
    latency: bool | None = None  # None: measured on a GPU only (on a CPU it is slow and noisy)
    plot: bool = False
    where: str = ""  # the TOML file it was read from (its messages name keys, not flags); "" for flags

    def validate(self) -> None:
        unknown = [v for v in self.variants if v not in ALL_VARIANTS]
        if unknown:
            raise ConfigError(f"unknown variant {', '.join(unknown)}; choose from {', '.join(ALL_VARIANTS)}{_nearest(unknown[0])}")
        if not self.variants:
            raise ConfigError("no variant to run")
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"[run] distill must be a weight in [0, 1] (0: off), got {self.distill:g}")
        for name, train in (("supernet", self.supernet), ("retrain", self.retrain)):
            if train.distill:
                raise ConfigError(f"[{name}] distill: a run distils from its own Original; set [run] distill (--distill) instead")
        if not 0.0 <= self.selection <= MAX_SELECTION:
            raise ConfigError(f"[run] selection must be a fraction of the training rows in [0, {MAX_SELECTION:g}], got {self.selection:g}")
        if self.retrain_init not in retrain.INITS:
            raise ConfigError(f"[run] retrain_init must be one of {', '.join(retrain.INITS)}, got {self.retrain_init!r}")
        for method, options in self.baseline.items():
            if method not in baseline.METHODS or not isinstance(options, dict):
                raise ConfigError(f"[baseline] has tables {', '.join(baseline.METHODS)} of options, got {method!r}")
        for v in self.compress.get("variants", ()):
            if v not in self.variants or v == "optembed-noretrain" or v in baseline.METHODS:
                raise ConfigError(f"[compress] variant '{v}' is not a re-trained variant of this run ({', '.join(self.variants)})")

    def warnings(self) -> list[str]:
        """The training options' warnings, one line each, naming the section they come from."""
        lines = [f"[supernet] {w}" for w in self.supernet.warnings()]
        return lines + [f"[retrain] {w}" for w in self.retrain.warnings()]


def search_stage(raw: dict[str, Any], source: str, device: str, where: str = "") -> search.SearchStage:
    """A search stage from the flat [search] keys: evolution hyperparameters plus stage options;
    ``max_auc = true`` asks for the paper's max-AUC search (no tolerance, no row levels).
    ``where``: the configuration file, for the messages."""
    raw = dict(raw)
    max_auc = raw.pop("max_auc", False)
    if not isinstance(max_auc, bool):
        raise ConfigError(f"{where + ': ' if where else ''}[search] max_auc must be true or false, got {max_auc!r}")
    evo_keys = {f.name for f in fields(EvolutionConfig)}
    evo_raw = {k: v for k, v in raw.items() if k in evo_keys}
    rest = {k: v for k, v in raw.items() if k not in evo_keys}
    schema.check_table(search.SearchStage, rest, "search", where)  # unknown keys name the whole table
    evolution = schema.build(EvolutionConfig, evo_raw, "search", where, **({"max_auc_drop": None} if max_auc else {}))
    return schema.build(search.SearchStage, rest, "search", where, source=source, device=device, evolution=evolution)


def compress_stage(raw: dict[str, Any], source: str, device: str, where: str = "") -> compress.CompressStage:
    """A compress stage from the flat [compress] keys: ``method`` (pq | int8), quantizer keys
    (``groups``, ``codebook``, ...), ``finetune_*`` keys, ``min_rows``; ``variants`` is the chain's
    own key. Without ``finetune_epochs`` the method's default applies (int8: none)."""
    q_keys = {f.name for f in fields(QuantizerConfig)}
    rest = {k: v for k, v in raw.items() if k != "variants"}
    quantizer = schema.build(QuantizerConfig, {k: v for k, v in rest.items() if k in q_keys}, "compress", where)
    ft = {k.removeprefix("finetune_"): v for k, v in rest.items() if k.startswith("finetune_")}
    ft.setdefault("epochs", compress.default_finetune(str(rest.get("method", compress.DEFAULT_METHOD))).epochs)
    finetune = schema.build(FinetuneConfig, ft, "compress", where, prefix="finetune_")
    other = {k: v for k, v in rest.items() if k not in q_keys and not k.startswith("finetune_")}
    return schema.build(
        compress.CompressStage, other, "compress", where, source=source, device=device, quantizer=quantizer, finetune=finetune
    )


@dataclass
class CompressVariants:
    """The chain's own key of [compress]: the re-trained variants to compress."""

    variants: list[str] = field(default_factory=lambda: ["optembed"])


read_toml = schema.read_toml  # re-exported
SECTIONS = ("data", "model", "supernet", "search", "retrain", "compress", "baseline", "run")
RUN_KEYS = ("variants", "retrain_init", "distill", "distill_supernet", "selection", "device", "latency", "plot")  # the ChainConfig fields [run] sets


def load_config(path: Path) -> ChainConfig:
    """Read a TOML run configuration (sections data, model, supernet, search, retrain, compress,
    baseline, run); every wrong key or value is one line naming the file, the section and the key."""
    raw = schema.read_toml(path)
    where = str(path)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
    data = schema.section(raw, "data", where)
    if "path" not in data:
        raise ConfigError(f"{path}: [data] needs a 'path'")
    raw_path = data.pop("path")
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise ConfigError(f"{path}: [data] path = {schema.short(raw_path)} should be a file name (a non-empty str)")
    data_path = Path(raw_path).expanduser()
    if not data_path.is_absolute():
        data_path = (Path(path).parent / data_path).resolve()
    if "format" in data:
        data["fmt"] = data.pop("format")
    model_raw = schema.section(raw, "model", where)
    run_raw = schema.check_table(ChainConfig, schema.section(raw, "run", where), "run", where, only=RUN_KEYS)
    compress_raw = schema.section(raw, "compress", where)
    if "variants" in compress_raw:
        schema.check_table(CompressVariants, {"variants": compress_raw["variants"]}, "compress", where)
    cfg = ChainConfig(
        data=data_path,
        preprocess=schema.build(PreprocessConfig, data, "data", where),
        model=schema.build(ModelConfig, model_raw, "model", where, name=model_raw.get("name", "deepfm")),
        supernet=schema.build(TrainConfig, schema.section(raw, "supernet", where), "supernet", where),
        retrain=schema.build(TrainConfig, schema.section(raw, "retrain", where), "retrain", where),
        search=schema.section(raw, "search", where),
        compress=compress_raw,
        baseline=schema.section(raw, "baseline", where),
        **{k: tuple(v) if k == "variants" else v for k, v in run_raw.items()},
        where=where,
    )
    search_stage(cfg.search, "", cfg.device, where)  # wrong keys or types in [search] or [compress] fail now
    if cfg.compress:
        compress_stage(cfg.compress, "", cfg.device, where)
    return cfg


def baseline_stage(config: ChainConfig, method: str, source: str) -> baseline.BaselineStage:
    """The baseline ``method`` of the run: the run's model, the ``[retrain]`` training options and
    the ``[baseline.<method>]`` options."""
    return baseline.BaselineStage(
        method=method, model=config.model, train=config.retrain, options=dict(config.baseline.get(method, {})),
        source=source, device=config.device,
    )


def check_before_work(config: ChainConfig) -> None:
    """Every option of every step, the input file and lower bounds of the memory the batch sizes
    and the search need (with one field and no rows: the data is not read yet); the stages check
    the exact estimates again when they start."""
    where = config.where  # a configuration file: its messages name the file's keys, not flags
    with schema.said_as_keys(where, "run", config):
        config.validate()
    with schema.said_as_keys(where, "data", config.preprocess, aliases={"fmt": "format"}):
        config.preprocess.validate()
    with schema.said_as_keys(where, "model", config.model):
        config.model.validate()
    for name, train in (("supernet", config.supernet), ("retrain", config.retrain)):
        with schema.said_as_keys(where, name, train):
            train.validate()
    searching = search_stage(config.search, "", config.device)  # bad keys fail before any training
    evolution = searching.evolution
    with schema.said_as_keys(where, "search", searching, evolution):
        searching.validate()
    if config.compress:
        compressing = compress_stage(config.compress, "", config.device)
        with schema.said_as_keys(where, "compress", compressing, compressing.quantizer):
            compressing.validate()
    for method in config.variants:
        if method in baseline.METHODS:
            baseline_stage(config, method, "").validate()
    device = resolve_device(config.device)
    check_input(Path(config.data))
    for name, train in (("supernet", config.supernet), ("retrain", config.retrain)):
        with schema.said_as_keys(where, name, train):
            check_training_memory(
                train.batch_size or MAX_AUTO_BATCH, train.eval_batch_size, 0, 1, config.model.embed_dim,
                config.model.mlp_dims, device,
            )
    with schema.said_as_keys(where, "search", searching, evolution):
        check_search_memory(evolution.population, evolution.generations, 1, 0, device)


Done = dict[str, Manifest]  # the artifacts of the steps run so far, by step name


@dataclass(frozen=True)
class Step:
    """One step of a run: its name (``"supernet optembed"``, ...), the stage it runs and its
    configuration, built from the artifacts of the steps before it."""

    name: str
    stage: Callable[[Any, Store, Reporter], Manifest]
    config: Callable[[Done], Any]


def steps(config: ChainConfig) -> list[Step]:
    """Every step :func:`run` takes, in order: the data, one supernet per mode the variants need,
    their searches, each variant's training (and compression), the evaluation of them all."""
    return _steps(config)[0]


def _steps(config: ChainConfig) -> tuple[list[Step], dict[str, str]]:
    """The steps and the evaluated ones by variant id."""
    device = config.device
    out = [Step("preprocess", preprocess.run, lambda done: preprocess.PreprocessStage(config.data, config.preprocess))]
    pre = "preprocess"
    modes = list(dict.fromkeys(SUPERNET_MODE[v] for v in config.variants if v in SUPERNET_MODE))
    teacher_first = needs_teacher(config)
    if teacher_first and config.distill_supernet and modes:  # the supernets learn from it
        out.append(Step(TEACHER_STEP, retrain.run, functools.partial(_retrain_config, config, "original", pre)))
    for mode in modes:
        out.append(Step(f"supernet {mode}", supernet.run, functools.partial(_supernet_config, config, mode, pre)))
    searched: dict[str, str] = {}
    for mode in ("prune-only", "dims-only", "optembed"):
        if mode in modes:
            if mode == "prune-only" and not search_stage(config.search, "", device).searches_rows(True):
                continue  # the paper's OptEmbed-E: re-trained under the supernet's learned row mask
            searched[mode] = f"search {mode}"
            out.append(Step(searched[mode], search.run, functools.partial(_search_config, config, f"supernet {mode}")))
    evaluated: dict[str, str] = {}  # variant id -> the step whose artifact is evaluated, in the variants' order
    if teacher_first and not any(step.name == TEACHER_STEP for step in out):  # the compressed variants learn from it
        out.append(Step(TEACHER_STEP, retrain.run, functools.partial(_retrain_config, config, "original", pre)))
    for variant in config.variants:
        if variant == "optembed-noretrain":
            evaluated[variant] = searched["optembed"]
            continue
        if variant in baseline.METHODS:
            out.append(Step(f"baseline {variant}", baseline.run, functools.partial(_baseline_config, config, variant, pre)))
            evaluated[variant] = out[-1].name
            continue
        source = pre if variant == "original" else searched.get(SUPERNET_MODE[variant], f"supernet {SUPERNET_MODE[variant]}")
        if not (variant == "original" and teacher_first):  # trained already, as the teacher
            out.append(Step(f"retrain {variant}", retrain.run, functools.partial(_retrain_config, config, variant, source)))
        evaluated[variant] = f"retrain {variant}"
        if variant in config.compress.get("variants", ()):
            trained = f"retrain {variant}"
            out.append(Step(f"compress {variant}", compress.run, functools.partial(_compress_config, config, trained)))
            evaluated[compressed_id(config, variant)] = out[-1].name
    out.append(Step("evaluate", evaluate.run, functools.partial(_evaluate_config, config, list(evaluated.values()))))
    return out, evaluated


TEACHER_STEP = "retrain original"


def needs_teacher(config: ChainConfig) -> bool:
    """Whether the run distils: a weight above 0 and a variant that trains a compressed model."""
    return config.distill > 0 and any(v not in ("original", "optembed-noretrain") for v in config.variants)


def _taught(config: ChainConfig, variant: str, done: Done) -> tuple[str | None, TrainConfig]:
    """The teacher and training options of ``variant``: the run's Original and the distillation
    weight for every compressed variant; no teacher and the ``[retrain]`` options otherwise."""
    if variant == "original" or not needs_teacher(config):
        return None, config.retrain
    return done[TEACHER_STEP].fingerprint, replace(config.retrain, distill=config.distill)


def compressed_id(config: ChainConfig, variant: str) -> str:
    """The id of ``variant`` compressed by the run's ``[compress] method``: ``optembed+pq``."""
    return f"{variant}+{config.compress.get('method', 'pq')}"


def evaluated_steps(config: ChainConfig) -> dict[str, str]:
    """Every evaluated variant's id (a ``--variants`` name, or ``NAME+METHOD`` when compressed)
    and the step whose artifact stands for it, in the evaluation's order."""
    return _steps(config)[1]


RESULT_KEYS = (  # (key in the variant results, key of the evaluation's row)
    ("id", "id"), ("stage", "stage"), ("label", "variant"), ("test_auc", "test_auc"), ("test_auc_ci", "test_auc_ci"),
    ("test_logloss", "test_logloss"), ("embedding_bytes", "embedding_bytes"), ("file_bytes", "file_bytes"),
    ("sparsity", "sparsity"), ("ratio_vs_original", "ratio_vs_original"), ("embedding_params", "embedding_params"),
    ("init", "init"), ("teacher", "teacher"), ("distill", "distill"),
)


def variant_results(config: ChainConfig, done: Done) -> dict[str, dict[str, Any]]:
    """Each evaluated variant's row of the evaluation (test AUC and logloss, bytes, sparsity, the
    artifact id) under its id, in the run's order (see :func:`evaluated_steps`)."""
    rows = {r["id"]: r for r in json.loads(done["evaluate"].output("metrics").read_text())["models"]}
    out: dict[str, dict[str, Any]] = {}
    for variant, step in evaluated_steps(config).items():
        row = rows.get(done[step].fingerprint)
        if row is not None:
            out[variant] = {key: row.get(source) for key, source in RESULT_KEYS}
    return out


def _nearest(name: str) -> str:
    """``; did you mean 'x'?`` for a variant name one typo away from a known one."""
    import difflib

    close = difflib.get_close_matches(name, ALL_VARIANTS, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def plan(config: ChainConfig) -> list[str]:
    """The names of the steps :func:`run` takes, in order (``"supernet optembed"``, ...)."""
    return [s.name for s in steps(config)]


def _supernet_config(config: ChainConfig, mode: str, source: str, done: Done) -> supernet.SupernetStage:
    taught = config.distill_supernet and needs_teacher(config)
    return supernet.SupernetStage(
        model=config.model, mode=mode, source=done[source].fingerprint, device=config.device,
        train=replace(config.supernet, distill=config.distill) if taught else config.supernet,
        teacher=done[TEACHER_STEP].fingerprint if taught else None,
        selection=config.selection if SupernetMode.parse(mode).searchable else 0.0,
    )


def _search_config(config: ChainConfig, source: str, done: Done) -> search.SearchStage:
    return search_stage(config.search, done[source].fingerprint, config.device)


def _baseline_config(config: ChainConfig, method: str, source: str, done: Done) -> baseline.BaselineStage:
    teacher, train = _taught(config, method, done)
    return replace(baseline_stage(config, method, done[source].fingerprint), teacher=teacher, train=train)


def _retrain_config(config: ChainConfig, variant: str, source: str, done: Done) -> retrain.RetrainStage:
    teacher, train = _taught(config, variant, done)
    return retrain.RetrainStage(
        source=done[source].fingerprint,
        full=variant == "original",
        init="fresh" if variant == "original" else config.retrain_init,
        model=config.model,
        teacher=teacher,
        train=train,
        device=config.device,
    )


def _compress_config(config: ChainConfig, source: str, done: Done) -> compress.CompressStage:
    return compress_stage(config.compress, done[source].fingerprint, config.device)


def _evaluate_config(config: ChainConfig, evaluated: list[str], done: Done) -> evaluate.EvaluateStage:
    latency = config.latency if config.latency is not None else resolve_device(config.device).type == "cuda"
    return evaluate.EvaluateStage(
        sources=[done[name].fingerprint for name in evaluated], device=config.device, latency=latency, plot=config.plot
    )


def run(
    config: ChainConfig,
    store: Store,
    reporter: Reporter = NULL,
    after: Callable[[str, Manifest], None] | None = None,
) -> dict[str, Manifest]:
    """Run every needed stage; returns the artifacts by step name (``evaluate`` last).

    The plan (every step's name) is reported first; each step is announced as ``[k/N]`` with the
    time elapsed and an estimate of the time left, and its progress carries its name.
    ``after(name, manifest)`` is called when a step is done (the CLI prints its warnings there).
    """
    check_before_work(config)
    done: Done = {}
    todo = steps(config)
    names = [s.name for s in todo]
    eta = Eta(config.supernet.epochs, config.retrain.epochs)
    started = time.perf_counter()
    reporter.message(f"plan: {len(names)} stages: {', '.join(names)} (finished stages are reused)")
    for index, step in enumerate(todo, start=1):
        reporter.message(f"[{index}/{len(names)}] {step.name} ({eta_text(eta, names[index - 1:], time.perf_counter() - started)})")
        began = time.perf_counter()
        data_keys = step.name == "preprocess" and config.where
        with schema.said_as_keys(config.where, "data", config.preprocess, aliases={"fmt": "format"}) if data_keys else contextlib.nullcontext():
            manifest = step.stage(step.config(done), store, Prefixed(reporter, step.name))
        eta.record(step.name, time.perf_counter() - began, manifest.cached)
        result = result_summary(manifest.metrics)
        reporter.message(
            f"{step.name}: {manifest.fingerprint} ({'cached' if manifest.cached else 'done'})" + (f"; {result}" if result else "")
        )
        done[step.name] = manifest
        if after is not None:
            after(step.name, manifest)
    return done
