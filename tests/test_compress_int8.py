"""compress --method int8: the stage on a tiny Original (retrain --full) and a tiny OptEmbed
retrain (bytes against a hand count and the stored tensors, AUC, evaluate, the quality
benchmark's path), its fingerprint rules, the CLI and run config, and export + predict."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from optembed.errors import ConfigError
from optembed.evolution.config import EvolutionConfig
from optembed.models.checkpoint import load_model
from optembed.quantization.compress_int8 import quantize_compact_int8
from optembed.quantization.config import QuantizerConfig
from optembed.quantization.finetune import FinetuneConfig
from optembed.quantization.fields import RowInt8Field
from optembed.safe_load import load_tensor_file
from optembed.training.config import TrainConfig
from optembed.training.evaluate import evaluate as evaluate_model
from pipeline_fixtures import SMALL_MODEL, STRONG_PRUNING, small_supernet, synthetic_preprocess
from pipelines import compress, evaluate, export, predict, retrain, search
from pipelines.data import load_dataset

ROWS = 6000


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("int8")
    store, pre, _ = synthetic_preprocess(root, rows=ROWS)
    r = retrain.run(
        retrain.RetrainStage(source=pre.fingerprint, full=True, model=SMALL_MODEL,
                             train=TrainConfig(epochs=1, batch_size=512), device="cpu"),
        store,
    )
    m = compress.run(compress.CompressStage(source=r.fingerprint, method="int8", device="cpu"), store)
    return root, store, pre, r, m


def stored_table_bytes(path: Path) -> dict[str, int]:
    """Bytes of the tensors a saved quantized model holds for its tables, read from the file itself."""
    payload = load_tensor_file(path, "model file")
    state = payload["state_dict"]
    out = {"codes": 0, "scales": 0, "float_tables": 0, "codebooks": 0}

    def nbytes(key: str) -> int:
        return state[key].numel() * state[key].element_size()

    for i, f in enumerate(payload["embedder"]["fields"]):
        at = f"embedder.fields.{i}."
        if f["kind"] == "int8":
            assert (state[at + "codes"].dtype, state[at + "scale"].dtype, state[at + "bias"].dtype) == (
                torch.uint8, torch.float32, torch.float32)
            out["codes"] += nbytes(at + "codes")
            out["scales"] += nbytes(at + "scale") + nbytes(at + "bias")
        elif f["kind"] == "coded":
            out["codes"] += nbytes(at + "codes")
            out["codebooks"] += nbytes(at + "codebooks")
        else:
            out["float_tables"] += nbytes(at + "table")
    out["remaps"] = sum(nbytes(k) for k in state if k.startswith("embedder.id_map."))
    return out


def test_int8_stage_bytes_auc_and_evaluate(trained) -> None:
    root, store, pre, source, m = trained
    met = m.metrics
    schema = json.loads(pre.output("schema").read_text())
    rows = sum(f["cardinality"] for f in schema["fields"])
    # the Original (D 8, every field of width 8): 8 code bytes + 4 (scale) + 4 (bias) per row
    assert (met["code_bytes"], met["scale_bytes"], met["codebook_bytes"], met["float_table_bytes"]) == (rows * 8, rows * 8, 0, 0)
    assert met["embedding_bytes"] == rows * 16 and met["original_embedding_bytes"] == rows * 32
    assert met["ratio_vs_original"] == pytest.approx(2.0) and met["remap_bytes"] == 0
    assert met["method"] == "int8" and met["coded_fields"] == met["fields"] == len(schema["fields"])
    assert met["best_epoch"] == 0  # no fine-tuning by default
    stored = stored_table_bytes(m.output("model"))
    assert stored == {"codes": rows * 8, "scales": rows * 8, "float_tables": 0, "codebooks": 0, "remaps": 0}
    assert abs(met["test_auc"] - met["source_test_auc"]) < 0.002
    assert abs(met["test_logloss"] - met["source_test_logloss"]) < 0.002
    assert m.params == {"method": "int8", "finetune": asdict(FinetuneConfig(epochs=0))}
    # the saved model is the source's tables quantized row-wise, nothing else changed
    compact, _ = load_model(source.output("compact"))
    want, _ = quantize_compact_int8(compact)
    model, _ = load_model(m.output("model"))
    assert all(isinstance(f, RowInt8Field) for f in model.embedder.fields)
    x = torch.stack([torch.randint(0, f["cardinality"], (512,)) for f in schema["fields"]], dim=1)
    with torch.no_grad():
        assert torch.equal(model(x), want.eval()(x))
    test = load_dataset(pre, torch.device("cpu"), splits=("test",)).splits["test"]
    assert evaluate_model(model, test, torch.device("cpu"))["auc"] == pytest.approx(met["test_auc"], abs=1e-9)
    fields = pq.read_table(m.output("fields")).to_pylist()
    assert [f["bytes"] for f in fields] == [f["cardinality"] * 16 for f in schema["fields"]]
    assert compress.run(compress.CompressStage(source=source.fingerprint, method="int8", device="cpu"), store).cached
    ev = evaluate.run(evaluate.EvaluateStage(sources=[source.fingerprint, m.fingerprint], device="cpu", latency=False), store)
    by_stage = {r["stage"]: r for r in json.loads(ev.output("metrics").read_text())["models"]}
    assert by_stage["compress"]["variant"] == "original + int8"
    assert by_stage["compress"]["embedding_bytes"] == met["embedding_bytes"]
    assert by_stage["compress"]["ratio_vs_original"] == pytest.approx(2.0)
    assert by_stage["compress"]["test_auc"] == pytest.approx(met["test_auc"], abs=1e-9)


@pytest.fixture(scope="module")
def optembed_chain(tmp_path_factory: pytest.TempPathFactory):
    """supernet -> search -> retrain on the shared synthetic preprocess: pruned rows, searched widths."""
    store, pre, _ = synthetic_preprocess(tmp_path_factory.mktemp("int8-optembed"), rows=ROWS)
    sn = small_supernet(store, epochs=1, **STRONG_PRUNING)
    se = search.run(search.SearchStage(source=sn.fingerprint, evolution=EvolutionConfig(population=6, generations=1, topk=3),
                                       device="cpu"), store)
    r = retrain.run(retrain.RetrainStage(source=se.fingerprint, train=TrainConfig(epochs=1, batch_size=512), device="cpu"),
                    store)
    m = compress.run(compress.CompressStage(source=r.fingerprint, method="int8", device="cpu"), store)
    return store, pre, r, m


def test_int8_of_an_optembed_retrain(optembed_chain) -> None:
    store, pre, source, m = optembed_chain
    met = m.metrics
    assert source.metrics["variant"] == "optembed" and met["variant"] == "optembed"
    compact, _ = load_model(source.output("compact"))
    cards = [int(f["cardinality"]) for f in json.loads(pre.output("schema").read_text())["fields"]]
    assert sum(compact.embedder.field_rows()) < sum(cards)  # rows were pruned: the id remap is kept
    # hand count: kept rows x (width + 8) for a field of width >= 3, kept rows x width x 4 otherwise
    int8_rows = [(k, w) for k, w in zip(compact.embedder.field_rows(), compact.embedder.field_widths()) if w >= 3]
    float_rows = [(k, w) for k, w in zip(compact.embedder.field_rows(), compact.embedder.field_widths()) if w < 3]
    assert int8_rows
    assert met["code_bytes"] == sum(k * w for k, w in int8_rows) and met["scale_bytes"] == sum(k * 8 for k, _ in int8_rows)
    assert met["float_table_bytes"] == sum(k * w * 4 for k, w in float_rows) and met["codebook_bytes"] == 0
    assert met["embedding_bytes"] == met["code_bytes"] + met["scale_bytes"] + met["float_table_bytes"]
    assert met["source_embedding_bytes"] == sum(k * w * 4 for k, w in zip(compact.embedder.field_rows(), compact.embedder.field_widths()))
    assert met["original_embedding_bytes"] == sum(cards) * compact.embed_dim * 4
    assert met["coded_fields"] == len(int8_rows)
    # the bytes stored in the model file are the bytes reported
    stored = stored_table_bytes(m.output("model"))
    assert (stored["codes"], stored["scales"], stored["float_tables"], stored["codebooks"], stored["remaps"]) == (
        met["code_bytes"], met["scale_bytes"], met["float_table_bytes"], 0, met["remap_bytes"])
    assert met["remap_bytes"] > 0
    # the model is the source's tables quantized row-wise behind the source's remap
    model, _ = load_model(m.output("model"))
    want, _ = quantize_compact_int8(compact)
    x = torch.stack([torch.randint(0, c, (512,), generator=torch.Generator().manual_seed(3)) for c in cards], dim=1)
    with torch.no_grad():
        assert torch.equal(model.embedder.id_map(x), compact.embedder.ids(x))
        assert torch.equal(model(x), want.eval()(x))
    assert abs(met["test_auc"] - met["source_test_auc"]) < 0.002
    assert abs(met["test_logloss"] - met["source_test_logloss"]) < 0.002
    # pq on the same source counts its bytes the same way: the same remap and float-table bytes
    # for the fields both keep float, codes + codebooks + scales + float tables in all
    pq_m = compress.run(compress.CompressStage(source=source.fingerprint, quantizer=QuantizerConfig(codebook=8, steps=2,
                                               kmeans_iters=1), min_rows=1, finetune=FinetuneConfig(epochs=0),
                                               device="cpu"), store)
    assert pq_m.metrics["remap_bytes"] == met["remap_bytes"]
    assert pq_m.metrics["embedding_bytes"] == sum(pq_m.metrics[k] for k in ("code_bytes", "codebook_bytes",
                                                                            "scale_bytes", "float_table_bytes"))
    stored_pq = stored_table_bytes(pq_m.output("model"))
    assert sum(stored_pq[k] for k in ("codes", "codebooks", "scales", "float_tables")) == pq_m.metrics["embedding_bytes"]
    ev = evaluate.run(evaluate.EvaluateStage(sources=[source.fingerprint, m.fingerprint, pq_m.fingerprint], device="cpu",
                                             latency=False), store)
    rows = {r["id"]: r for r in json.loads(ev.output("metrics").read_text())["models"]}
    assert rows[m.fingerprint]["variant"] == "optembed + int8" and rows[pq_m.fingerprint]["variant"] == "optembed + pq"
    for art in (source, m, pq_m):
        want_bytes = art.metrics["embedding_bytes"] if art is not source else met["source_embedding_bytes"]
        assert rows[art.fingerprint]["embedding_bytes"] == want_bytes
        assert rows[art.fingerprint]["ratio_vs_original"] == pytest.approx(met["original_embedding_bytes"] / want_bytes)
    assert rows[m.fingerprint]["test_auc"] == pytest.approx(met["test_auc"], abs=1e-9)
    assert rows[m.fingerprint]["test_logloss"] == pytest.approx(met["test_logloss"], abs=1e-9)


def test_the_quality_benchmarks_int8_path(optembed_chain) -> None:
    """benchmarks/_alternatives.int8_tables: a retrain fingerprint in, the int8 version's test AUC,
    logloss and bytes out, the numbers of the compress stage itself."""
    from bench_modules import load_benchmark

    alternatives = load_benchmark("_alternatives.py", "quality_alternatives")
    store, _, source, m = optembed_chain
    got = alternatives.int8_tables(store, {"optembed": source.fingerprint}, "cpu")
    row = got["optembed+int8"]
    assert row["id"] == m.fingerprint and row["stage"] == "compress"
    assert row["test_auc"] == pytest.approx(m.metrics["test_auc"], abs=1e-9)
    assert row["test_logloss"] == pytest.approx(m.metrics["test_logloss"], abs=1e-9)
    assert row["embedding_bytes"] == m.metrics["embedding_bytes"]


def test_fine_tuning_moves_the_network_not_the_int8_tables(trained) -> None:
    _, store, _, source, m = trained
    tuned = compress.run(compress.CompressStage(source=source.fingerprint, method="int8", device="cpu",
                                                finetune=FinetuneConfig(epochs=1, lr=1e-3)), store)
    assert tuned.fingerprint != m.fingerprint and len(tuned.metrics.get("field_codebooks", {})) == 0
    a, _ = load_model(m.output("model"))
    b, _ = load_model(tuned.output("model"))
    for fa, fb in zip(a.embedder.fields, b.embedder.fields):
        assert torch.equal(fa.codes, fb.codes) and torch.equal(fa.scale, fb.scale) and torch.equal(fa.bias, fb.bias)
    assert tuned.metrics["embedding_bytes"] == m.metrics["embedding_bytes"]


def test_pq_parameters_keep_their_pre_int8_form() -> None:
    q = QuantizerConfig(groups=4, codebook=16, steps=60, batch_size=512)
    cfg = compress.CompressStage(source="x", quantizer=q, min_rows=200)
    # what the fingerprint of a pq artifact hashed before the method existed: no "method" key
    assert compress.stage_params(cfg) == {"quantizer": asdict(q), "min_rows": 200, "finetune": asdict(FinetuneConfig())}
    assert compress.CompressStage().ft == FinetuneConfig() and compress.CompressStage(method="int8").ft.epochs == 0


def test_int8_refuses_pq_options_and_unknown_methods() -> None:
    for cfg, message in (
        (compress.CompressStage(method="int8", quantizer=QuantizerConfig(codebook=64)), "--codebook only apply to --method pq"),
        (compress.CompressStage(method="int8", min_rows=5), "--min-rows only apply"),
        (compress.CompressStage(method="int8", jobs=2), "--jobs only apply"),
        (compress.CompressStage(method="int4"), "unknown --method 'int4'"),
    ):
        with pytest.raises(ConfigError, match=message):
            cfg.validate()
    compress.CompressStage(method="int8", quantizer=QuantizerConfig(seed=3)).validate()  # the seed is shared


def test_cli_compress_int8(trained, cli) -> None:
    _, store, _, source, m = trained
    ok = cli("compress", "--from", source.fingerprint, "--method", "int8", "--device", "cpu", "--artifacts", store.root, "--json")
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.stdout)
    assert out["fingerprint"] == m.fingerprint and out["metrics"]["method"] == "int8"
    for key in ("test_auc", "test_logloss", "embedding_bytes"):
        assert out["metrics"][key] == m.metrics[key]
    shown = cli("compress", "--from", source.fingerprint, "--method", "int8", "--device", "cpu", "--artifacts", store.root)
    assert shown.exit_code == 0 and "original + int8" in shown.stdout and "2.0x smaller" in shown.stdout, shown.output
    for extra, message in (
        (["--codebook", "64"], "--codebook only apply to --method pq"),
        (["--min-rows", "5", "--quantizer-steps", "9"], "--quantizer-steps, --min-rows only apply"),
    ):
        res = cli("compress", "--from", source.fingerprint, "--method", "int8", *extra, "--device", "cpu",
                  "--artifacts", store.root)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and message in lines[0], (extra, res.stderr)


def test_a_table_int8_cannot_hold_is_one_line_naming_the_file(trained, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retrain table with a range past float32's (or a NaN) stops the stage with one line naming
    the compact model file; nothing is published."""
    _, store, _, source, _ = trained
    real = compress.load_model

    def wide(path: Path, device: str = "cpu"):
        compact, payload = real(path, device)
        with torch.no_grad():
            compact.embedder.table(1)[4, :2] = torch.tensor([-3e38, 3e38])
        return compact, payload

    monkeypatch.setattr(compress, "load_model", wide)
    before = len(store.list("compress"))
    res = cli("compress", "--from", source.fingerprint, "--method", "int8", "--force", "--device", "cpu",
              "--artifacts", store.root)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert str(source.output("compact")) in lines[0] and "row 4 spans" in lines[0] and "Traceback" not in res.output
    assert len(store.list("compress")) == before


def test_run_config_int8(tmp_path: Path) -> None:
    from pipelines import chain

    config = tmp_path / "run.toml"
    config.write_text('[data]\npath = "x.txt"\n\n[compress]\nvariants = ["original"]\nmethod = "int8"\n\n'
                      '[run]\nvariants = ["original"]\n')
    stage = chain.compress_stage(chain.load_config(config).compress, "abc", "cpu")
    assert (stage.method, stage.ft.epochs) == ("int8", 0)
    config.write_text(config.read_text().replace('method = "int8"', 'method = "int8"\nfinetune_epochs = 2'))
    assert chain.compress_stage(chain.load_config(config).compress, "abc", "cpu").ft.epochs == 2
    config.write_text(config.read_text().replace("finetune_epochs = 2", "codebook = 16"))
    with pytest.raises(ConfigError, match="--codebook only apply"):
        chain.compress_stage(chain.load_config(config).compress, "abc", "cpu").validate()


@pytest.mark.slow
def test_export_and_predict_score_as_the_int8_model(trained, tmp_path: Path) -> None:
    from test_export import test_split_lines

    root, store, pre, _, m = trained
    formats = ("onnx", "pt2") if export.onnx_available() is None else ("pt2",)
    e = export.run(export.ExportStage(source=m.fingerprint, out=tmp_path / "bundle", formats=formats), store)
    for kind in formats:
        assert e.metrics[f"max_abs_diff_{kind}"] <= 1e-4
    assert e.metrics["test_auc"] == pytest.approx(m.metrics["test_auc"], abs=1e-9)
    model, _ = load_model(m.output("model"))
    schema = json.loads(pre.output("schema").read_text())
    test = pq.read_table(pre.output("test")).to_pydict()
    x = torch.tensor([test[f["name"]] for f in schema["fields"]]).T
    with torch.no_grad():
        want = torch.sigmoid(model(x)).numpy()
    raw = tmp_path / "test_lines.txt"
    raw.write_text("\n".join(test_split_lines(root / f"synth-{ROWS}-0.txt", pre.params["seed"], ROWS)) + "\n")
    runtimes = {"onnx": "onnx", "pt2": "torch"}
    for kind in formats:
        try:
            __import__("onnxruntime") if kind == "onnx" else None
        except ImportError:
            continue
        out = tmp_path / f"scores-{kind}.parquet"
        res = predict.run(predict.PredictConfig(str(tmp_path / "bundle"), raw, out, runtime=runtimes[kind], batch_size=500), store)
        np.testing.assert_allclose(np.array(pq.read_table(out).column("score").to_pylist()), want, atol=1e-5, rtol=0)
        assert res.metrics["auc"] == pytest.approx(m.metrics["test_auc"], abs=1e-6)


def test_one_entry_per_method() -> None:
    from optembed.quantization.config import COMPRESS_METHODS
    from optembed.quantization.methods import METHODS, quantizer_method

    assert tuple(METHODS) == COMPRESS_METHODS  # the choices --method offers
    assert compress.PQ_ONLY == {"inert_when": {"method": ("int8",)}}  # what the fingerprints were made with
    assert compress.default_finetune("pq") == FinetuneConfig() and compress.default_finetune("int8") == FinetuneConfig(epochs=0)
    assert [quantizer_method(n).uses_counts(QuantizerConfig()) for n in ("pq", "int8")] == [True, False]
    assert not quantizer_method("pq").uses_counts(QuantizerConfig(popularity="none"))
    with pytest.raises(ConfigError, match="unknown --method 'int4'; choose pq or int8"):
        quantizer_method("int4")
