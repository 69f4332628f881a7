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

Optionally (``compress = {"variants": [...], ...}``) re-trained variants are also compressed
(product quantization or row-wise int8: ``method``, see :mod:`pipelines.compress`) and evaluated beside the others.
"""

from __future__ import annotations

import functools
import time
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from optembed.data.preprocess import PreprocessConfig
from optembed.data.validation import check_input
from optembed.errors import ConfigError
from optembed.evolution import EvolutionConfig
from optembed.models.config import ModelConfig
from optembed.progress import NULL, Prefixed, Reporter
from optembed.training.config import TrainConfig
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
    device: str = "auto"
    latency: bool | None = None  # None: measured on a GPU only (on a CPU it is slow and noisy)
    plot: bool = False

    def validate(self) -> None:
        unknown = [v for v in self.variants if v not in ALL_VARIANTS]
        if unknown:
            raise ConfigError(f"unknown variant {', '.join(unknown)}; choose from {', '.join(ALL_VARIANTS)}")
        if not self.variants:
            raise ConfigError("no variant to run")
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


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether a TOML ``value`` can stand for a field annotated ``tp`` (TOML has no null, so an
    optional field takes its other type; an integer stands for a float)."""
    origin = get_origin(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (Union, UnionType):
        return any(_type_ok(value, arg) for arg in get_args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, Path):
        return isinstance(value, str)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
        return all(_type_ok(v, args[0]) for v in value) if args else True
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type) and is_dataclass(tp):
        return False  # nested configurations are built by the loader, never given as values
    return True


def _type_name(tp: Any) -> str:
    """``tp`` in words, as a TOML user would write it."""
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"list of {len(args)} {_type_name(args[0])}"
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is Path:
        return "str"
    return getattr(tp, "__name__", str(tp))


def _check_types(cls: type, data: dict[str, Any], section: str, prefix: str = "") -> None:
    """Unknown keys and values of the wrong type in ``data`` fail with one line naming them
    (as ``prefix + key``, the key the file holds)."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(prefix + k for k in unknown)}")
    for key, value in data.items():
        if not _type_ok(value, hints[key]):
            f = known[key]
            default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
            like = f" (like {default!r})" if default is not MISSING and default is not None else ""
            raise ConfigError(
                f"[{section}] {prefix}{key} = {_short(value)} should be of type {_type_name(hints[key])}{like}"
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dataclass_from(cls: type, data: dict[str, Any], section: str, prefix: str = "", **fixed: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{section}] must be a table of keys, got {type(data).__name__} {_short(data)}")
    _check_types(cls, data, section, prefix)
    return cls(**{**data, **fixed})


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"'{name}' must be a [{name}] table, got {type(value).__name__} {value!r}")
    return dict(value)


def search_stage(raw: dict[str, Any], source: str, device: str) -> search.SearchStage:
    """A search stage from the flat [search] keys: evolution hyperparameters plus stage options;
    ``max_auc = true`` asks for the paper's max-AUC search (no tolerance, no row levels)."""
    raw = dict(raw)
    max_auc = raw.pop("max_auc", False)
    if not isinstance(max_auc, bool):
        raise ConfigError(f"[search] max_auc must be true or false, got {max_auc!r}")
    if "row_levels" in raw:
        if not isinstance(raw["row_levels"], list) or not all(isinstance(v, (int, float)) for v in raw["row_levels"]):
            raise ConfigError(f"[search] row_levels must be a list of fractions, got {raw['row_levels']!r}")
        raw["row_levels"] = tuple(float(v) for v in raw["row_levels"])
    evo_keys = {f.name for f in fields(EvolutionConfig)}
    evo_raw = {k: v for k, v in raw.items() if k in evo_keys}
    if max_auc:
        evo_raw["max_auc_drop"] = None
    evolution = _dataclass_from(EvolutionConfig, evo_raw, "search")
    rest = {k: v for k, v in raw.items() if k not in evo_keys}
    return _dataclass_from(search.SearchStage, rest, "search", source=source, device=device, evolution=evolution)


def compress_stage(raw: dict[str, Any], source: str, device: str) -> compress.CompressStage:
    """A compress stage from the flat [compress] keys: ``method`` (pq | int8), quantizer keys
    (``groups``, ``codebook``, ...), ``finetune_*`` keys, ``min_rows``; ``variants`` is the chain's
    own key. Without ``finetune_epochs`` the method's default applies (int8: none)."""
    q_keys = {f.name for f in fields(QuantizerConfig)}
    rest = {k: v for k, v in raw.items() if k != "variants"}
    quantizer = _dataclass_from(QuantizerConfig, {k: v for k, v in rest.items() if k in q_keys}, "compress")
    ft = {k.removeprefix("finetune_"): v for k, v in rest.items() if k.startswith("finetune_")}
    ft.setdefault("epochs", compress.default_finetune(str(rest.get("method", "pq"))).epochs)
    finetune = _dataclass_from(FinetuneConfig, ft, "compress", prefix="finetune_")
    other = {k: v for k, v in rest.items() if k not in q_keys and not k.startswith("finetune_")}
    return _dataclass_from(
        compress.CompressStage, other, "compress", source=source, device=device, quantizer=quantizer, finetune=finetune
    )


MAX_CONFIG_BYTES = 1 << 20


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file; a missing, unreadable, binary or malformed file is one line."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} holds {size:,} bytes, too many for a TOML configuration (at most {MAX_CONFIG_BYTES:,})")
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration {path} is a folder, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a TOML text file (not UTF-8 at byte {exc.start})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a TOML text file (it holds NUL bytes)")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


RUN_KEYS = ("variants", "retrain_init", "device", "latency", "plot")


def load_config(path: Path) -> ChainConfig:
    """Read a TOML run configuration (sections data, model, supernet, search, retrain, run)."""
    raw = read_toml(path)
    unknown = sorted(set(raw) - {"data", "model", "supernet", "search", "retrain", "compress", "baseline", "run"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
    data = _section(raw, "data")
    if "path" not in data:
        raise ConfigError(f"{path}: [data] needs a 'path'")
    raw_path = data.pop("path")
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise ConfigError(f"[data] path = {_short(raw_path)} should be a file name (a non-empty str)")
    data_path = Path(raw_path).expanduser()
    if not data_path.is_absolute():
        data_path = (Path(path).parent / data_path).resolve()
    if "format" in data:
        data["fmt"] = data.pop("format")
    pre = _dataclass_from(PreprocessConfig, data, "data")
    pre.split = tuple(pre.split)  # type: ignore[assignment]
    model_raw = _section(raw, "model")
    model = _dataclass_from(ModelConfig, model_raw, "model", name=model_raw.get("name", "deepfm"))
    run_raw = _section(raw, "run")
    extra = sorted(set(run_raw) - set(RUN_KEYS))
    if extra:
        raise ConfigError(f"unknown key(s) in [run]: {', '.join(extra)}")
    _check_types(ChainConfig, run_raw, "run")
    search_raw, compress_raw = _section(raw, "search"), _section(raw, "compress")
    if not _type_ok(compress_raw.get("variants", []), list[str]):
        raise ConfigError(f"[compress] variants = {_short(compress_raw['variants'])} should be of type list of str")
    cfg = ChainConfig(
        data=data_path,
        preprocess=pre,
        model=model,
        supernet=_dataclass_from(TrainConfig, _section(raw, "supernet"), "supernet"),
        retrain=_dataclass_from(TrainConfig, _section(raw, "retrain"), "retrain"),
        search=search_raw,
        compress=compress_raw,
        baseline=_section(raw, "baseline"),
        variants=tuple(run_raw.get("variants", VARIANTS)),
        retrain_init=run_raw.get("retrain_init", "auto"),
        device=run_raw.get("device", "auto"),
        latency=run_raw.get("latency"),
        plot=run_raw.get("plot", False),
    )
    search_stage(cfg.search, "", cfg.device)  # wrong keys or types in [search] or [compress] fail now
    if cfg.compress:
        compress_stage(cfg.compress, "", cfg.device)
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
    config.validate()
    config.preprocess.validate()
    config.model.validate()
    config.supernet.validate()
    config.retrain.validate()
    searching = search_stage(config.search, "", config.device)  # bad keys fail before any training
    searching.validate()
    evolution = searching.evolution
    if config.compress:
        compress_stage(config.compress, "", config.device).validate()
    for method in config.variants:
        if method in baseline.METHODS:
            baseline_stage(config, method, "").validate()
    device = resolve_device(config.device)
    check_input(Path(config.data))
    for train in (config.supernet, config.retrain):
        check_training_memory(
            train.batch_size or MAX_AUTO_BATCH, train.eval_batch_size, 0, 1, config.model.embed_dim, config.model.mlp_dims, device
        )
    check_search_memory(evolution.population, evolution.generations, 1, 0, device)


def plan(config: ChainConfig) -> list[str]:
    """The names of the steps :func:`run` takes, in order (``"supernet optembed"``, ...)."""
    steps = ["preprocess"]
    modes: list[str] = []
    for variant in config.variants:
        mode = SUPERNET_MODE.get(variant)
        if mode is not None and mode not in modes:
            modes.append(mode)
            steps.append(f"supernet {mode}")
    for mode in ("prune-only", "dims-only", "optembed"):
        if mode in modes:
            if mode == "prune-only" and not search_stage(config.search, "", config.device).searches_rows(True):
                continue
            steps.append(f"search {mode}")
    for variant in config.variants:
        if variant == "optembed-noretrain":
            continue
        steps.append(f"retrain {variant}")
        if variant in config.compress.get("variants", ()):
            steps.append(f"compress {variant}")
    return [*steps, "evaluate"]


class Eta:
    """Estimates the time the remaining steps take from the steps already run.

    A step kind (the first word of a step's name: ``supernet``, ``search``, ...) that ran (not
    cached) is expected to take its mean time again; a ``retrain`` before any ran is expected to
    take as long as a supernet per epoch. Kinds with no estimate are reported as unknown.
    """

    QUICK = ("preprocess", "evaluate")  # short next to training: counted as 0 until measured

    def __init__(self, supernet_epochs: int = 1, retrain_epochs: int = 1) -> None:
        self.seconds: dict[str, list[float]] = {}
        self.epochs = {"supernet": max(supernet_epochs, 1), "retrain": max(retrain_epochs, 1)}

    def record(self, step: str, seconds: float, cached: bool) -> None:
        if not cached:
            self.seconds.setdefault(step.split()[0], []).append(seconds)

    def estimate(self, kind: str) -> float | None:
        times = self.seconds.get(kind)
        if times:
            return sum(times) / len(times)
        if kind == "retrain" and self.seconds.get("supernet"):
            per_epoch = sum(self.seconds["supernet"]) / len(self.seconds["supernet"]) / self.epochs["supernet"]
            return per_epoch * self.epochs["retrain"]
        return 0.0 if kind in self.QUICK else None

    def remaining(self, steps: list[str]) -> tuple[float, list[str]]:
        """Seconds the ``steps`` are expected to take, and the kinds without an estimate yet."""
        total, unknown = 0.0, []
        for step in steps:
            kind = step.split()[0]
            guess = self.estimate(kind)
            if guess is None:
                if kind not in unknown:
                    unknown.append(kind)
            else:
                total += guess
        return total, unknown


def duration(seconds: float) -> str:
    """``seconds`` for people: ``"45s"``, ``"3m05s"``, ``"1h02m"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_text(eta: Eta, steps: list[str], elapsed: float) -> str:
    """``"elapsed 1m05s, about 4m10s left"``; kinds not yet measured are named."""
    seconds, unknown = eta.remaining(steps)
    text = f"elapsed {duration(elapsed)}"
    if not steps:
        return text
    if not unknown:
        return f"{text}, about {duration(seconds)} left"
    later = f"estimated after the first {', '.join(unknown)}"
    if seconds >= 1:
        return f"{text}, at least {duration(seconds)} left; the rest {later}"
    return f"{text}, time left {later}"


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
    done: dict[str, Manifest] = {}
    steps = plan(config)
    eta = Eta(config.supernet.epochs, config.retrain.epochs)
    started = time.perf_counter()
    reporter.message(f"plan: {len(steps)} stages: {', '.join(steps)} (finished stages are reused)")

    def step(name: str, work: Callable[[Reporter], Manifest]) -> Manifest:
        index = steps.index(name) + 1 if name in steps else len(done) + 1
        reporter.message(f"[{index}/{len(steps)}] {name} ({eta_text(eta, steps[index - 1:], time.perf_counter() - started)})")
        began = time.perf_counter()
        manifest = work(Prefixed(reporter, name))
        eta.record(name, time.perf_counter() - began, manifest.cached)
        result = result_summary(manifest.metrics)
        reporter.message(f"{name}: {manifest.fingerprint} ({'cached' if manifest.cached else 'done'})" + (f"; {result}" if result else ""))
        done[name] = manifest
        if after is not None:
            after(name, manifest)
        return manifest

    pre = step("preprocess", lambda rep: preprocess.run(preprocess.PreprocessStage(config.data, config.preprocess), store, rep))
    supernets: dict[str, Manifest] = {}
    for variant in config.variants:
        mode = SUPERNET_MODE.get(variant)
        if mode is None or mode in supernets:
            continue
        stage_cfg = supernet.SupernetStage(
            model=config.model, mode=mode, train=config.supernet, source=pre.fingerprint, device=config.device
        )
        supernets[mode] = step(f"supernet {mode}", functools.partial(supernet.run, stage_cfg, store))
    searches: dict[str, Manifest] = {}
    for mode in ("prune-only", "dims-only", "optembed"):
        if mode in supernets and any(SUPERNET_MODE.get(v) == mode for v in config.variants):
            s_cfg = search_stage(config.search, supernets[mode].fingerprint, config.device)
            if mode == "prune-only" and not s_cfg.searches_rows(True):
                continue  # the paper's OptEmbed-E: re-trained under the supernet's learned row mask
            searches[mode] = step(f"search {mode}", functools.partial(search.run, s_cfg, store))
    evaluated: list[str] = []
    for variant in config.variants:
        if variant == "optembed-noretrain":
            evaluated.append(searches["optembed"].fingerprint)
            continue
        if variant in baseline.METHODS:
            b_cfg = baseline_stage(config, variant, pre.fingerprint)
            evaluated.append(
                step(f"baseline {variant}", functools.partial(baseline.run, b_cfg, store)).fingerprint
            )
            continue
        source = {"original": pre, "optembed-e": searches.get("prune-only", supernets.get("prune-only"))}.get(variant)
        if source is None:
            source = searches[SUPERNET_MODE[variant]]
        r_cfg = retrain.RetrainStage(
            source=source.fingerprint,
            full=variant == "original",
            init="fresh" if variant == "original" else config.retrain_init,
            model=config.model,
            train=config.retrain,
            device=config.device,
        )
        trained = step(f"retrain {variant}", functools.partial(retrain.run, r_cfg, store))
        evaluated.append(trained.fingerprint)
        if variant in config.compress.get("variants", ()):
            c_cfg = compress_stage(config.compress, trained.fingerprint, config.device)
            evaluated.append(step(f"compress {variant}", functools.partial(compress.run, c_cfg, store)).fingerprint)
    latency = config.latency if config.latency is not None else resolve_device(config.device).type == "cuda"
    e_cfg = evaluate.EvaluateStage(sources=evaluated, device=config.device, latency=latency, plot=config.plot)
    step("evaluate", functools.partial(evaluate.run, e_cfg, store))
    return done
