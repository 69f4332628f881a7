"""compress: quantized fields, exact memory accounting, the balance term, the stage and its CLI."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from optembed.data.tensors import SplitTensors
from optembed.errors import ArtifactError, ConfigError, TrainingError
from optembed.models.checkpoint import load_model, save_model
from optembed.models.compact import export_compact
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.quantization import QuantizerConfig, fit_quantizer
from optembed.quantization.compress import compact_row_counts, quantize_compact
from optembed.quantization import finetune as finetune_mod
from optembed.quantization.finetune import FinetuneConfig
from optembed.quantization.fields import CodedField, DenseField
from optembed.quantization.model import memory_bytes, quantized_model
from legacy_files import legacy_quantized_payload
from optembed.training.config import TrainConfig
from pipeline_fixtures import SMALL_MODEL, synthetic_preprocess
from pipelines import compress, evaluate, retrain
from pipelines.store import Store
from trainer_hooks import PlantedValidation, hook_trainer

FAST_Q = QuantizerConfig(groups=4, codebook=16, steps=60, batch_size=512)


def tiny_compact(cards: list[int], widths: list[int], keep_fraction: float = 1.0, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(cards, ModelConfig("deepfm", embed_dim=8, mlp_dims=(16,)), "none")
    keep = torch.rand(sum(cards), generator=torch.Generator().manual_seed(seed)) < keep_fraction
    model.embedder.set_fixed_masks(keep, torch.tensor(widths))
    model.eval()
    return model, export_compact(model, keep, torch.tensor(widths))


def names(model) -> list[str]:
    return [f"f{i}" for i in range(model.n_fields)]


def test_coded_field_decodes_codes_to_the_quantized_rows() -> None:
    table = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    pq, codes, _ = fit_quantizer(table, None, QuantizerConfig(groups=4, codebook=8, steps=20, batch_size=128))
    field = CodedField(codes, pq.codebooks.detach(), 6)
    ids = torch.tensor([0, 5, 5, 299, 17])
    with torch.no_grad():
        expected = pq.quantize(table[ids])[1]
    assert torch.allclose(field(ids), expected)
    assert torch.equal(field(ids), pq.decode(codes[ids].long()).detach())


def test_memory_accounting_matches_a_hand_count(tmp_path: Path) -> None:
    cards, widths = [300, 3, 40], [5, 2, 8]
    model, compact = tiny_compact(cards, widths)
    q = QuantizerConfig(groups=2, codebook=4, steps=5, batch_size=64)
    qmodel, stats = quantize_compact(compact, names(compact), None, q, min_rows=50)
    assert qmodel.embedder.coded == [True, False, False]  # only the 300-row field is large enough
    # field 0: 300 rows x 2 groups x 1 byte; codebooks 2 x 4 entries x ceil(5/2)=3 columns x 4 bytes
    # fields 1, 2: float tables 3 x 2 and 40 x 8 values x 4 bytes; the identity remaps are not stored
    mem = memory_bytes(qmodel)
    assert (mem["codes"], mem["codebooks"], mem["float_tables"]) == (600, 96, 24 + 1280)
    assert mem["embedding"] == 600 + 96 + 1304 and mem["remaps"] == 0
    assert [s["bytes"] for s in stats] == [696, 24, 1280]
    # a pruned compact model keeps its remap as keep bits: 343 ids padded to 512 = 16 int32 words,
    # 2 blocks of 256 ids x int32 rank, 3 fields x (int64 base + int64 offset)
    _, pruned = tiny_compact(cards, widths, keep_fraction=0.5, seed=1)
    pmodel, _ = quantize_compact(pruned, names(pruned), None, q, min_rows=50)
    assert memory_bytes(pmodel)["remaps"] == 16 * 4 + 2 * 4 + 3 * 16
    x = torch.stack([torch.randint(0, c, (500,)) for c in cards], dim=1)
    assert torch.equal(pmodel.embedder.id_map(x), pruned.embedder.ids(x))
    # save/load round trip: identical predictions, same bytes
    save_model(tmp_path / "q.pt", qmodel, names(qmodel))
    loaded, _ = load_model(tmp_path / "q.pt")
    x = torch.stack([torch.randint(0, c, (64,)) for c in cards], dim=1)
    with torch.no_grad():
        assert torch.equal(qmodel.eval()(x), loaded.eval()(x))
    assert memory_bytes(loaded) == mem


def test_codebook_size_follows_each_fields_rows() -> None:
    # groups 2, K <= 64, codebooks <= 1/4 of the codes (uint8):
    # field 0: 2000 x 8 -> codes 2000 x 2 = 4000 bytes; 2 x K x 4 columns x 4 bytes <= 1000 -> K = 16
    # field 1: 300 x 8 -> codes 600 bytes; 32 K <= 150 -> K = 4
    # field 2: 40 x 4 -> codes 80 bytes; 2 x K x 2 x 4 <= 20 -> K < 2: stays float (640 bytes)
    cards, widths = [2000, 300, 40], [8, 8, 4]
    model, compact = tiny_compact(cards, [8, 8, 8])
    compact = export_compact(model, torch.ones(sum(cards), dtype=torch.bool), torch.tensor(widths))
    q = QuantizerConfig(groups=2, codebook=64, steps=5, batch_size=64)
    qmodel, stats = quantize_compact(compact, names(compact), None, q, min_rows=10)
    assert [s["codebook"] for s in stats] == [16, 4, None]
    assert [s["code_dtype"] for s in stats] == ["uint8", "uint8", None]
    assert stats[2]["reason"].startswith("codebooks would exceed")
    assert [s["bytes"] for s in stats] == [4000 + 2 * 16 * 4 * 4, 600 + 2 * 4 * 4 * 4, 40 * 4 * 4]
    assert [tuple(f.codebooks.shape) for f in qmodel.embedder.fields[:2]] == [(2, 16, 4), (2, 4, 4)]
    assert qmodel.embedder.fields[0].codes.dtype == torch.uint8
    mem = memory_bytes(qmodel)
    assert mem["embedding"] == sum(s["bytes"] for s in stats)


def test_pruned_model_remap_and_predictions_survive_a_round_trip(tmp_path: Path) -> None:
    cards, widths = [700, 3, 90], [6, 2, 8]
    _, compact = tiny_compact(cards, widths, keep_fraction=0.3, seed=4)
    q = QuantizerConfig(groups=2, codebook=8, steps=5, batch_size=64)
    qmodel, _ = quantize_compact(compact, names(compact), None, q, min_rows=50)
    for f in range(3):
        assert torch.equal(qmodel.embedder.field_remap(f), compact.embedder.field_remap(f).long())
    save_model(tmp_path / "q.pt", qmodel, names(qmodel))
    loaded, _ = load_model(tmp_path / "q.pt")
    x = torch.stack([torch.randint(0, c, (300,)) for c in cards], dim=1)
    with torch.no_grad():
        assert torch.equal(qmodel.eval()(x), loaded.eval()(x))
    assert memory_bytes(loaded) == memory_bytes(qmodel)
    # files of the former quantized format (version 1: int32 remaps; 2: keep bits) still load, to the same model
    for version in (1, 2):
        torch.save(legacy_quantized_payload(qmodel, names(qmodel), version), tmp_path / f"v{version}.pt")
        old, payload = load_model(tmp_path / f"v{version}.pt")
        assert payload["field_names"] == names(qmodel)
        with torch.no_grad():
            assert torch.equal(old.eval()(x), loaded(x))


def test_uncoded_fields_reproduce_the_compact_model_exactly() -> None:
    cards, widths = [30, 3, 40], [5, 2, 8]
    _, compact = tiny_compact(cards, widths, keep_fraction=0.6, seed=2)
    qmodel = quantized_model(compact, [DenseField(compact.embedder.table(f)) for f in range(3)]).eval()
    x = torch.stack([torch.randint(0, c, (100,)) for c in cards], dim=1)
    with torch.no_grad():
        assert torch.allclose(qmodel(x), compact(x), atol=1e-6)


def test_compact_row_counts_sum_pruned_ids_into_the_oov_row() -> None:
    cards, widths = [6], [4]
    model, _ = tiny_compact(cards, widths)
    keep = torch.tensor([True, True, False, True, False, True])
    compact = export_compact(model, keep, torch.tensor(widths))
    counts = compact_row_counts(compact, [torch.tensor([1, 10, 100, 1000, 10000, 5])])
    assert counts[0].tolist() == [1 + 100 + 10000, 10, 1000, 5]


def tiny_split(cards: list[int], n: int, seed: int) -> SplitTensors:
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in cards], dim=1).to(torch.int32)
    y = (x[:, 0] % 3 == 0).float()
    return SplitTensors(x, y)


def tiny_quantized(cards: list[int]):
    _, compact = tiny_compact(cards, [8] * len(cards))
    qmodel, _ = quantize_compact(compact, names(compact), None, QuantizerConfig(groups=2, codebook=4, steps=5, batch_size=64), min_rows=50)
    return qmodel


@pytest.mark.parametrize(("patience", "epochs_run"), [(1, 2), (2, 3), (3, 7), (0, 8)])
def test_finetune_patience_stops_after_that_many_epochs_without_gain(
    monkeypatch: pytest.MonkeyPatch, patience: int, epochs_run: int
) -> None:
    # epoch 0 is the model as quantized; no gain in epochs 2 and 3, a gain in 4, none from 5 on
    hook_trainer(monkeypatch, finetune_mod, PlantedValidation([0.6, 0.7, 0.65, 0.66, 0.71, 0.5, 0.5, 0.5, 0.5]))
    cards = [300, 20]
    result = finetune_mod.finetune(tiny_quantized(cards), FinetuneConfig(epochs=8, patience=patience, batch_size=256),
                                   tiny_split(cards, 600, 1), tiny_split(cards, 200, 2), None, torch.device("cpu"))
    assert len(result.history) - 1 == epochs_run
    assert result.best_epoch == (1 if epochs_run < 4 else 4)


def test_finetune_divergence_stops_with_one_clear_error() -> None:
    cards = [300, 20]
    with pytest.raises(TrainingError, match=r"at epoch 1, step 3.*try a lower --finetune-lr \(now 1e\+06\)"):
        finetune_mod.finetune(tiny_quantized(cards), FinetuneConfig(epochs=2, lr=1e6, batch_size=256),
                              tiny_split(cards, 600, 1), tiny_split(cards, 200, 2), None, torch.device("cpu"))
    sane = finetune_mod.finetune(tiny_quantized(cards), FinetuneConfig(epochs=2, lr=1e-2, batch_size=256, patience=0),
                                 tiny_split(cards, 600, 1), tiny_split(cards, 200, 2), None, torch.device("cpu"))
    assert len(sane.history) == 3


def planted_table() -> tuple[torch.Tensor, torch.Tensor]:
    """Four tight, popular clusters (80% of the rows) and a spread-out, rare tail."""
    g = torch.Generator().manual_seed(0)
    n, d = 3000, 8
    centers = torch.randn(4, d, generator=g) * 2
    table = centers[torch.randint(0, 4, (n,), generator=g)] + 0.05 * torch.randn(n, d, generator=g)
    tail = torch.rand(n, generator=g) < 0.2
    table[tail] = torch.randn(int(tail.sum()), d, generator=g) * 2
    counts = torch.where(tail, torch.ones(n), torch.full((n,), 1000.0))
    return table, counts


def test_balance_term_raises_codebook_usage() -> None:
    table, counts = planted_table()
    base = dict(groups=1, codebook=32, steps=300, batch_size=512, max_epochs=100, contrastive_weight=0.0, lr=0.05,
                kmeans_iters=0)  # from random rows, so the balance term alone moves the usage
    _, _, without = fit_quantizer(table, counts, QuantizerConfig(balance_weight=0.0, **base))
    _, _, with_ = fit_quantizer(table, counts, QuantizerConfig(balance_weight=0.1, **base))
    assert with_.codes_used >= without.codes_used
    assert with_.perplexity > 1.3 * without.perplexity, (with_.perplexity, without.perplexity)


# --------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    store, pre, _ = synthetic_preprocess(tmp_path_factory.mktemp("cmp"), rows=20000)
    r = retrain.run(
        retrain.RetrainStage(source=pre.fingerprint, full=True, model=SMALL_MODEL,
                             train=TrainConfig(epochs=2, batch_size=512), device="cpu"),
        store,
    )
    return store, pre, r


def test_stage_compresses_and_keeps_the_auc(trained) -> None:
    store, pre, source = trained
    cfg = compress.CompressStage(source=source.fingerprint, quantizer=FAST_Q, min_rows=200,
                                 finetune=FinetuneConfig(epochs=1), device="cpu")
    m = compress.run(cfg, store)
    met = m.metrics
    # keeps the AUC: no loss beyond 0.01 (the fine-tune may gain on an under-trained source)
    assert met["coded_fields"] > 0 and met["test_auc"] > met["source_test_auc"] - 0.01
    schema = json.loads(pre.output("schema").read_text())
    assert met["original_embedding_bytes"] == sum(f["cardinality"] for f in schema["fields"]) * 8 * 4
    assert met["embedding_bytes"] == met["code_bytes"] + met["codebook_bytes"] + met["float_table_bytes"]
    assert met["ratio_vs_original"] == pytest.approx(met["original_embedding_bytes"] / met["embedding_bytes"])
    model, _ = load_model(m.output("model"))
    x = torch.stack([torch.randint(0, f["cardinality"], (256,)) for f in schema["fields"]], dim=1)
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    assert compress.run(cfg, store).cached
    ev = evaluate.run(evaluate.EvaluateStage(sources=[source.fingerprint, m.fingerprint], device="cpu", latency=False), store)
    rows = {r["stage"]: r for r in json.loads(ev.output("metrics").read_text())["models"]}
    assert rows["compress"]["variant"] == "original + pq" and rows["compress"]["model"] == "deepfm"
    assert rows["compress"]["embedding_bytes"] == met["embedding_bytes"]
    assert rows["compress"]["ratio_vs_original"] > rows["retrain"]["ratio_vs_original"] == pytest.approx(1.0)


def test_a_run_that_would_code_no_field_stops_with_one_line(trained, cli) -> None:
    store, pre, source = trained
    schema = json.loads(pre.output("schema").read_text())
    compact, payload = load_model(source.output("compact"))
    kept = compact.embedder.field_rows()
    largest = max(range(len(kept)), key=lambda f: kept[f])
    name, rows = payload["field_names"][largest], kept[largest]
    assert rows < 10_000 and len(schema["fields"]) == len(kept)
    before = sorted(p.name for p in (store.root / "compress").iterdir()) if (store.root / "compress").exists() else []
    # the defaults (--min-rows 10000) code nothing on this small data set
    res = cli("compress", "--from", source.fingerprint, "--device", "cpu", "--artifacts", store.root)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert f"no field has more than --min-rows 10000 rows (the largest, {name}, has {rows:,})" in lines[0]
    assert f"--min-rows {rows - 1} would code {name}" in lines[0] and "nothing was published" in lines[0]
    after = sorted(p.name for p in (store.root / "compress").iterdir()) if (store.root / "compress").exists() else []
    assert after == before
    # the suggested floor codes that field
    _, stats = quantize_compact(compact, payload["field_names"], None, QuantizerConfig(steps=1, kmeans_iters=0), min_rows=rows - 1)
    assert [s["field"] for s in stats if s["coded"]] == [name]
    # no floor helps when every field's codebooks would cost too much
    with pytest.raises(ConfigError, match=r"and codes smaller than its float table .* no --min-rows would code one"):
        compress.run(compress.CompressStage(source=source.fingerprint, quantizer=QuantizerConfig(codebook_share=1e-6),
                                            min_rows=0, device="cpu"), store)


def test_evaluate_refuses_a_compress_artifact_that_coded_nothing(trained, tmp_path: Path) -> None:
    store, _, source = trained
    cfg = compress.CompressStage(source=source.fingerprint, quantizer=replace(FAST_Q, steps=5, kmeans_iters=0),
                                 min_rows=200, finetune=FinetuneConfig(epochs=0), device="cpu")
    m = compress.run(cfg, store)
    other = compress.run(replace(cfg, quantizer=replace(cfg.quantizer, codebook=8)), store)
    ev = evaluate.run(evaluate.EvaluateStage(sources=[m.fingerprint, other.fingerprint], device="cpu", latency=False), store)
    labels = {r["id"]: r["variant"] for r in json.loads(ev.output("metrics").read_text())["models"]}
    assert labels == {m.fingerprint: f"original + pq [{m.fingerprint[:8]}]",
                      other.fingerprint: f"original + pq [{other.fingerprint[:8]}]"}
    # an artifact made before compress refused such runs: coded_fields 0
    copy = tmp_path / "store"
    shutil.copytree(store.root, copy)
    path = copy / "compress" / m.fingerprint / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["metrics"]["coded_fields"] = 0
    manifest.pop("manifest_sha256", None)  # such artifacts predate the manifest's own hash
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"compress artifact {m.fingerprint[:10]} coded no field.*not a compressed variant"):
        evaluate.run(evaluate.EvaluateStage(sources=[m.fingerprint, source.fingerprint], device="cpu", latency=False),
                     Store(copy))


def test_cli_compress_and_bad_input(trained, cli, tmp_path: Path) -> None:
    store, pre, source = trained
    root = store.root
    ok = cli("compress", "--from", source.fingerprint, "--min-rows", "200", "--codebook", "16", "--quantizer-steps", "30",
             "--finetune-epochs", "0", "--device", "cpu", "--artifacts", root, "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["metrics"]["best_epoch"] == 0
    before = sorted(p.name for p in (root / "compress").iterdir())
    cases = [
        (["--from", source.fingerprint, "--codebook", "300", "--code-dtype", "uint8"], "does not fit uint8"),
        (["--from", pre.fingerprint], "expected retrain"),
        (["--from", source.fingerprint, "--groups", "0"], "--groups"),
        (["--from", source.fingerprint, "--sub-dim", "0"], "--sub-dim"),
        (["--from", source.fingerprint, "--codebook-share", "-1"], "--codebook-share"),
    ]
    for extra, message in cases:
        res = cli("compress", *extra, "--device", "cpu", "--artifacts", root)
        lines = [l for l in res.stderr.splitlines() if l.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and message in lines[0], (extra, res.stderr)
    # a source whose preprocess artifact lost its vocabulary counts
    copy = tmp_path / "store"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "preprocess" / pre.fingerprint / "vocab")
    res = cli("compress", "--from", source.fingerprint, "--min-rows", "200", "--device", "cpu", "--artifacts", copy, "--force")
    assert res.exit_code == 2 and "needs id counts" in res.stderr, res.stderr
    assert sorted(p.name for p in (root / "compress").iterdir()) == before


def test_run_config_compress_section(tmp_path: Path) -> None:
    from pipelines import chain

    config = tmp_path / "run.toml"
    config.write_text(
        '[data]\npath = "x.txt"\n\n[compress]\nvariants = ["optembed"]\ncodebook = 64\nmin_rows = 5\n'
        'finetune_epochs = 0\n\n[run]\nvariants = ["original", "optembed"]\n'
    )
    cfg = chain.load_config(config)
    stage = chain.compress_stage(cfg.compress, "abc", "cpu")
    assert (stage.quantizer.codebook, stage.min_rows, stage.finetune.epochs, stage.source) == (64, 5, 0, "abc")
    config.write_text(config.read_text().replace("codebook = 64", "codebok = 64"))
    with pytest.raises(Exception, match="unknown key"):
        chain.compress_stage(chain.load_config(config).compress, "abc", "cpu")
    text = config.read_text().replace("codebok", "codebook")  # load_config checks the keys itself now
    config.write_text(text.replace('variants = ["optembed"]', 'variants = ["optembed-e"]'))
    with pytest.raises(Exception, match="not a re-trained variant"):
        chain.load_config(config).validate()


def test_fields_fitted_on_threads_equal_the_sequential_fit() -> None:
    """--jobs: the fields' fits run on a thread pool; each field seeds its own generator, so the
    codes, codebooks and statistics equal the one-at-a-time fit (in field order)."""
    from optembed.quantization.compress import field_workers

    cards, widths = [900, 3, 600, 700, 40], [6, 2, 8, 4, 8]
    _, compact = tiny_compact(cards, widths, seed=2)
    q = QuantizerConfig(groups=2, codebook=8, steps=30, batch_size=64)
    seq, seq_stats = quantize_compact(compact, names(compact), None, q, min_rows=50, jobs=1)
    par, par_stats = quantize_compact(compact, names(compact), None, q, min_rows=50, jobs=3)
    assert seq.embedder.coded == par.embedder.coded == [True, False, True, True, False]
    for a, b in zip(seq.embedder.fields, par.embedder.fields, strict=True):
        for name, tensor in a.state_dict().items():
            torch.testing.assert_close(tensor, b.state_dict()[name], rtol=1e-5, atol=1e-6)
    assert [s["field"] for s in seq_stats] == [s["field"] for s in par_stats]
    for s, p in zip(seq_stats, par_stats, strict=True):
        assert s["bytes"] == p["bytes"] and s["codebook"] == p["codebook"]
        assert s["mse"] == pytest.approx(p["mse"], rel=1e-5, abs=1e-9)
    # workers: explicit, automatic (cores on the CPU, 1 on a GPU), capped by the fields
    assert field_workers(2, 5, torch.device("cpu")) == 2
    assert field_workers(8, 3, torch.device("cpu")) == 3
    assert field_workers(0, 1000, torch.device("cuda")) == 1
    assert field_workers(0, 1000, torch.device("cpu")) == max(1, os.cpu_count() or 1)
    with pytest.raises(ConfigError, match="--jobs"):
        field_workers(-1, 3, torch.device("cpu"))
