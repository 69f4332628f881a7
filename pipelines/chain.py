"""The whole OptEmbed chain: preprocess -> supernet -> search -> retrain -> evaluate.

Every step is an ordinary stage, so finished steps are reused from the store (cached) and a
rerun after an interruption continues where it stopped. Variants (the paper's ablations):

- ``original``: the plain model at full width (re-trained with ``--full``);
- ``optembed-e``: row pruning only (a ``prune-only`` supernet, its row levels searched within the
  accuracy bound, re-trained under that row mask; with the paper's search, its learned mask);
- ``optembed-d``: width search only (a ``dims-only`` supernet, searched, re-trained);
- ``optembed``: both (an ``optembed`` supernet, searched, re-trained);
- ``optembed-noretrain``: the ``optembed`` supernet evaluated under its searched masks.

Optionally (``compress = {"variants": [...], ...}``) re-trained variants are also compressed
(product quantization, see :mod:`pipelines.compress`) and evaluated beside the others.
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from optembed.data.preprocess import PreprocessConfig
from optembed.errors import ConfigError
from optembed.evolution import EvolutionConfig
from optembed.models.config import ModelConfig
from optembed.progress import NULL, Reporter
from optembed.training.config import TrainConfig
from optembed.quantization.config import QuantizerConfig
from optembed.quantization.finetune import FinetuneConfig
from pipelines import compress, evaluate, preprocess, retrain, search, supernet
from pipelines.store import Manifest, Store

VARIANTS = ("original", "optembed-e", "optembed-d", "optembed", "optembed-noretrain")
SUPERNET_MODE = {"optembed-e": "prune-only", "optembed-d": "dims-only", "optembed": "optembed", "optembed-noretrain": "optembed"}


@dataclass
class ChainConfig:
    data: Path
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig("deepfm"))
    supernet: TrainConfig = field(default_factory=TrainConfig)
    retrain: TrainConfig = field(default_factory=TrainConfig)
    search: dict[str, Any] = field(default_factory=dict)
    compress: dict[str, Any] = field(default_factory=dict)  # "variants" to compress + compress options
    variants: tuple[str, ...] = VARIANTS
    retrain_init: str = "fresh"  # fresh | rewind | supernet (the searched variants' re-training start)
    device: str = "auto"
    latency: bool = True
    plot: bool = False

    def validate(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
        if not self.variants:
            raise ConfigError("no variant to run")
        if self.retrain_init not in retrain.INITS:
            raise ConfigError(f"[run] retrain_init must be one of {', '.join(retrain.INITS)}, got {self.retrain_init!r}")
        for v in self.compress.get("variants", ()):
            if v not in self.variants or v == "optembed-noretrain":
                raise ConfigError(f"[compress] variant '{v}' is not a re-trained variant of this run ({', '.join(self.variants)})")

    def warnings(self) -> list[str]:
        """The training options' warnings, one line each, naming the section they come from."""
        lines = [f"[supernet] {w}" for w in self.supernet.warnings()]
        return lines + [f"[retrain] {w}" for w in self.retrain.warnings()]


def _type_ok(value: Any, default: Any) -> bool:
    """Whether a TOML ``value`` can stand for a field whose default is ``default``."""
    if default is None or default is MISSING:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return True


def _dataclass_from(cls: type, data: dict[str, Any], section: str, **fixed: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{section}] must be a table of keys, got {type(data).__name__} {data!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(unknown)}")
    for key, value in data.items():
        f = known[key]
        default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
        if not _type_ok(value, default):
            raise ConfigError(
                f"[{section}] {key} = {value!r} should be of type {type(default).__name__} (like {default!r})"
            )
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
    """A compress stage from the flat [compress] keys: quantizer keys (``groups``, ``codebook``, ...),
    ``finetune_*`` keys, ``min_rows``; ``variants`` is the chain's own key."""
    q_keys = {f.name for f in fields(QuantizerConfig)}
    rest = {k: v for k, v in raw.items() if k != "variants"}
    quantizer = _dataclass_from(QuantizerConfig, {k: v for k, v in rest.items() if k in q_keys}, "compress")
    ft = {k.removeprefix("finetune_"): v for k, v in rest.items() if k.startswith("finetune_")}
    finetune = _dataclass_from(FinetuneConfig, ft, "compress")
    other = {k: v for k, v in rest.items() if k not in q_keys and not k.startswith("finetune_")}
    return _dataclass_from(
        compress.CompressStage, other, "compress", source=source, device=device, quantizer=quantizer, finetune=finetune
    )


def load_config(path: Path) -> ChainConfig:
    """Read a TOML run configuration (sections data, model, supernet, search, retrain, run)."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"data", "model", "supernet", "search", "retrain", "compress", "run"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
    data = _section(raw, "data")
    if "path" not in data:
        raise ConfigError(f"{path}: [data] needs a 'path'")
    data_path = Path(data.pop("path"))
    if not data_path.is_absolute():
        data_path = (path.parent / data_path).resolve()
    if "format" in data:
        data["fmt"] = data.pop("format")
    if "split" in data:
        data["split"] = tuple(data["split"])
    pre = _dataclass_from(PreprocessConfig, data, "data")
    model_raw = _section(raw, "model")
    model = _dataclass_from(ModelConfig, model_raw, "model", name=model_raw.get("name", "deepfm"))
    run_raw = _section(raw, "run")
    cfg = ChainConfig(
        data=data_path,
        preprocess=pre,
        model=model,
        supernet=_dataclass_from(TrainConfig, _section(raw, "supernet"), "supernet"),
        retrain=_dataclass_from(TrainConfig, _section(raw, "retrain"), "retrain"),
        search=_section(raw, "search"),
        compress=_section(raw, "compress"),
        variants=tuple(run_raw.pop("variants", VARIANTS)),
        retrain_init=run_raw.pop("retrain_init", "fresh"),
        device=run_raw.pop("device", "auto"),
        latency=run_raw.pop("latency", True),
        plot=run_raw.pop("plot", False),
    )
    if run_raw:
        raise ConfigError(f"unknown key(s) in [run]: {', '.join(sorted(run_raw))}")
    return cfg


def run(config: ChainConfig, store: Store, reporter: Reporter = NULL) -> dict[str, Manifest]:
    """Run every needed stage; returns the artifacts by step name (``evaluate`` last)."""
    config.validate()
    config.supernet.validate()
    config.retrain.validate()
    search_stage(config.search, "", config.device).evolution.validate()  # bad keys fail before any training
    if config.compress:
        compress_stage(config.compress, "", config.device).validate()
    done: dict[str, Manifest] = {}

    def step(name: str, manifest: Manifest) -> Manifest:
        reporter.message(f"{name}: {manifest.fingerprint} ({'cached' if manifest.cached else 'done'})")
        done[name] = manifest
        return manifest

    pre = step("preprocess", preprocess.run(preprocess.PreprocessStage(config.data, config.preprocess), store, reporter))
    supernets: dict[str, Manifest] = {}
    for variant in config.variants:
        mode = SUPERNET_MODE.get(variant)
        if mode is None or mode in supernets:
            continue
        stage_cfg = supernet.SupernetStage(
            model=config.model, mode=mode, train=config.supernet, source=pre.fingerprint, device=config.device
        )
        supernets[mode] = step(f"supernet {mode}", supernet.run(stage_cfg, store, reporter))
    searches: dict[str, Manifest] = {}
    for mode in ("prune-only", "dims-only", "optembed"):
        if mode in supernets and any(SUPERNET_MODE.get(v) == mode for v in config.variants):
            s_cfg = search_stage(config.search, supernets[mode].fingerprint, config.device)
            if mode == "prune-only" and not s_cfg.searches_rows(True):
                continue  # the paper's OptEmbed-E: re-trained under the supernet's learned row mask
            searches[mode] = step(f"search {mode}", search.run(s_cfg, store, reporter))
    evaluated: list[str] = []
    for variant in config.variants:
        if variant == "optembed-noretrain":
            evaluated.append(searches["optembed"].fingerprint)
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
        trained = step(f"retrain {variant}", retrain.run(r_cfg, store, reporter))
        evaluated.append(trained.fingerprint)
        if variant in config.compress.get("variants", ()):
            c_cfg = compress_stage(config.compress, trained.fingerprint, config.device)
            evaluated.append(step(f"compress {variant}", compress.run(c_cfg, store, reporter)).fingerprint)
    e_cfg = evaluate.EvaluateStage(sources=evaluated, device=config.device, latency=config.latency, plot=config.plot)
    step("evaluate", evaluate.run(e_cfg, store, reporter))
    return done
