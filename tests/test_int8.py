"""Row-wise int8 tables: quantize/dequantize against a per-element brute force, the int8 field, a
quantized model holding int8 fields (bytes, save/load, lookups) and its serving graph."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from optembed.export.graph import ServingNet
from optembed.quantization.compress_int8 import quantize_compact_int8
from optembed.quantization.int8 import dequantize, int8_bytes, int8_is_smaller, quantize_rows
from optembed.quantization.fields import RowInt8Field
from optembed.models.checkpoint import load_model, save_model
from optembed.quantization.fields import CodedField, DenseField
from optembed.quantization.model import memory_bytes, quantized_model
from legacy_files import legacy_quantized_payload
from test_export import CARDS, random_ids, tiny_compact


F32 = np.float32
F32_MAX = float(np.finfo(np.float32).max)


def brute_scale(lo: float, hi: float) -> float:
    """The smallest float32 ``s`` with ``255 s >= hi - lo``, stepped down while the largest code's
    float32 read-back ``255 s + lo`` overflows."""
    s = F32((hi - lo) / 255)
    while float(s) * 255 < hi - lo:
        s = np.nextafter(s, F32(np.inf))
    with np.errstate(over="ignore"):
        while not np.isfinite(F32(255) * s + F32(lo)):
            s = np.nextafter(s, F32(0))
    return float(s)


def brute_force(table: torch.Tensor) -> tuple[list[list[int]], list[float], list[float], list[list[float]]]:
    """Per row: bias = min, scale = :func:`brute_scale`; per element the code among 0..255 whose
    float32 read-back ``code * scale + bias`` (a float32 multiply, then a float32 add) is nearest
    (the lowest code on ties), and that read-back."""
    codes, scales, biases, values = [], [], [], []
    for row in table.tolist():
        lo, hi = min(row), max(row)
        scale = brute_scale(lo, hi)
        with np.errstate(over="ignore"):
            grid = [float(F32(k) * F32(scale) + F32(lo)) for k in range(256)]
        row_codes = []
        for v in row:
            best = min(range(256), key=lambda k: (abs(grid[k] - v), k))
            row_codes.append(0 if scale == 0 else best)
        codes.append(row_codes)
        scales.append(scale)
        biases.append(lo)
        values.append([grid[k] for k in row_codes])
    return codes, scales, biases, values


def check_against_brute_force(table: torch.Tensor, min_agreement: float = 0.99) -> None:
    """quantize_rows(table) against :func:`brute_force`: the same scales and biases, read-backs as
    near as the brute force's nearest grid points, every element within half a step."""
    q = quantize_rows(table)
    assert q.codes.dtype == torch.uint8 and q.scale.dtype == q.bias.dtype == torch.float32
    codes, scales, biases, values = brute_force(table)
    assert q.scale.tolist() == scales and q.bias.tolist() == biases
    got = q.dequantize().double()
    assert torch.isfinite(got).all()
    x = table.double()
    want = torch.tensor(values, dtype=torch.float64)
    err, best = (got - x).abs(), (want - x).abs()
    # float32 rounding of the read-back (a multiply and an add: a few ulps of the values)
    ulps = 1e-6 * (x.abs() + q.bias.double().abs().unsqueeze(1))
    # the nearest grid point, but for elements halfway between two (float32 rounding decides)
    assert (err <= best + ulps).all()
    agree = (q.codes.long() == torch.tensor(codes)).double().mean()
    assert agree >= min_agreement
    # every element within half a step of its value; codes given by the brute force read back as it says
    assert (err <= q.scale.double().unsqueeze(1) / 2 + ulps).all()
    same = q.codes.long() == torch.tensor(codes)
    assert torch.equal(got[same], want[same])


@pytest.mark.parametrize("seed,shift,spread", [(0, 0.0, 1.0), (1, -3.0, 0.01), (2, 50.0, 200.0)])
def test_quantize_matches_a_per_element_brute_force(seed: int, shift: float, spread: float) -> None:
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(40, 9, generator=g) * spread + shift
    check_against_brute_force(table)
    q = quantize_rows(table)
    assert q.codes.amin(1).eq(0).all() and q.codes.amax(1).eq(255).all()  # the row's min and max are codes 0, 255


def test_extreme_values_match_the_brute_force_and_read_back_finite() -> None:
    big = F32_MAX
    table = torch.tensor([
        [big, big / 2, big * 0.9, 1e38, big * 0.7],  # the largest float32: its scale steps down to stay finite
        [-big, -big * 0.2, -1e30, 0.0, -1.0],  # range = the largest float32, from the bottom
        [big * 0.99, -big * 0.005, 0.0, 1.0, 3e37],  # both signs, range just under the largest float32
        [0.0, 1e-44, 1e-45, 0.0, 3e-45],  # a range of a few subnormals: the smallest positive scale
        [0.0, 1e-38, 5e-39, 1e-39, 2e-39],  # subnormal scale
        [1e7, 1e7 + 1, 1e7 + 2, 1e7 + 3, 1e7],  # a large bias, steps under its float32 spacing
        [1e30, -1e30, 3e29, 0.0, -7e29],
        [-5e-30, 5e-30, 0.0, 1e-31, -2e-30],
    ])
    # the row at 1e7 has steps finer than float32's spacing there: several codes read back as one
    # value, and the brute force takes the lowest of them; every read-back is the brute force's
    check_against_brute_force(table, min_agreement=0.9)
    q = quantize_rows(table)
    assert torch.equal(q.dequantize(), torch.tensor(brute_force(table)[3]))
    assert (q.scale > 0).all()  # no row is constant, however small its range
    assert q.scale[0].item() < brute_scale(table[0].min().item(), big) * (1 + 1e-6)
    # a row whose range exceeds the largest float32 cannot read back as codes * scale + bias
    with pytest.raises(ValueError, match="row 1 spans .* more than the largest float32"):
        quantize_rows(torch.tensor([[1.0, 2.0], [-big, big]]))
    compact = tiny_compact(widths=(8, 8, 8, 8, 8))
    with torch.no_grad():
        compact.embedder.table(0)[0, :2] = torch.tensor([-big, big])
    with pytest.raises(ValueError, match="^field f0: row 0 spans"):
        quantize_compact_int8(compact)


def test_rows_on_the_256_point_grid_read_back_exactly() -> None:
    g = torch.Generator().manual_seed(3)
    rows = []
    for m in (255, 85, 17, 5, 3, 1):  # m + 1 evenly spaced values; m divides 255: all on the grid
        step = 255 // m
        ks = torch.randint(0, m + 1, (30,), generator=g) * step
        ks[0], ks[1] = 0, 255  # both ends present: min and max of the row
        rows.append(-3.5 + ks.double() * 2.0**-6)  # exact in float32 (dyadic)
    table = torch.stack(rows).float()
    q = quantize_rows(table)
    assert torch.equal(q.dequantize(), table)
    assert torch.equal(q.scale, torch.full((6,), 2.0**-6))
    assert len(set(q.codes[2].tolist())) <= 18  # 18 distinct values -> 18 distinct codes


def test_constant_zero_width_and_empty_tables() -> None:
    table = torch.tensor([[1.25] * 5, [-7.0] * 5, [0.0] * 5, [3.0, 3.0, 3.0, 3.0, 3.5]])
    q = quantize_rows(table)
    assert q.scale[:3].eq(0).all() and q.codes[:3].eq(0).all()
    assert torch.equal(q.dequantize()[:3], table[:3])
    assert torch.equal(q.dequantize()[3], table[3])  # two values: codes 0 and 255, both exact
    for shape in ((6, 0), (0, 4), (0, 0)):
        empty = quantize_rows(torch.zeros(shape))
        assert tuple(empty.codes.shape) == shape and empty.scale.shape == (shape[0],)
        assert empty.dequantize().shape == shape and empty.nbytes == shape[0] * 8
    with pytest.raises(ValueError, match="non-finite"):
        quantize_rows(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="2-D"):
        quantize_rows(torch.zeros(3))


def test_large_tables_are_quantized_in_chunks_like_small_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    import optembed.quantization.int8 as int8

    table = torch.randn(1000, 6, generator=torch.Generator().manual_seed(4))
    whole = quantize_rows(table)
    monkeypatch.setattr(int8, "CHUNK_ROWS", 77)
    chunked = quantize_rows(table)
    assert torch.equal(whole.codes, chunked.codes) and torch.equal(whole.scale, chunked.scale)


def test_bytes_and_when_int8_is_smaller() -> None:
    assert int8_bytes(10, 16) == 10 * (16 + 8)
    assert [w for w in range(0, 6) if int8_is_smaller(w)] == [3, 4, 5]  # D + 8 < 4 D


def test_int8_field_dequantizes_only_the_gathered_rows() -> None:
    table = torch.randn(50, 6, generator=torch.Generator().manual_seed(5))
    field = RowInt8Field.from_table(table)
    ids = torch.tensor([0, 7, 7, 49])
    q = quantize_rows(table)
    want = torch.stack([q.codes[i].float() * q.scale[i] + q.bias[i] for i in ids.tolist()])
    assert torch.equal(field(ids), want)
    assert torch.equal(dequantize(field.codes[ids], field.scale[ids], field.bias[ids]), want)
    assert field.byte_counts() == {"codes": 300, "codebooks": 0, "scales": 400, "float_tables": 0}
    assert not list(field.parameters())  # nothing in an int8 table trains
    with pytest.raises(ValueError, match="uint8"):
        RowInt8Field(q.codes.int(), q.scale, q.bias)
    with pytest.raises(ValueError, match="scale"):
        RowInt8Field(q.codes, q.scale.half(), q.bias)


def test_int8_model_bytes_round_trip_and_lookups(tmp_path: Path) -> None:
    compact = tiny_compact()  # widths 1, 8, 3, 5, 2; a pruned remap
    model, stats = quantize_compact_int8(compact)
    rows = list(compact.embedder.field_rows())
    widths = [1, 8, 3, 5, 2]
    assert [s["coded"] for s in stats] == [False, True, True, True, False]
    assert model.embedder.coded == [w >= 3 for w in widths]
    mem = memory_bytes(model)
    assert mem["codes"] == sum(r * w for r, w in zip(rows, widths) if w >= 3)
    assert mem["scales"] == sum(r * 8 for r, w in zip(rows, widths) if w >= 3)
    assert mem["float_tables"] == sum(r * w * 4 for r, w in zip(rows, widths) if w < 3)
    assert mem["codebooks"] == 0 and mem["embedding"] == mem["codes"] + mem["scales"] + mem["float_tables"]
    assert [s["bytes"] for s in stats] == [r * (w + 8) if w >= 3 else r * w * 4 for r, w in zip(rows, widths)]
    for f, s in enumerate(stats):
        if s["coded"]:
            q = quantize_rows(compact.embedder.table(f).detach())
            assert s["max_abs_error"] <= float(q.scale.max()) / 2 * (1 + 1e-5) + 1e-7
    x = random_ids(CARDS, 400, 6)
    with torch.no_grad():
        # the model reads each field's dequantized table through the compact model's remap
        emb = model.embedder(x)
        for f, w in enumerate(widths):
            table = compact.embedder.table(f).detach()
            if w >= 3:
                table = quantize_rows(table).dequantize()
            want = table[compact.embedder.field_remap(f)[x[:, f]].long()]
            assert torch.equal(emb[:, f, :w], want) and emb[:, f, w:].eq(0).all()
        torch.testing.assert_close(model.eval()(x), compact(x), rtol=0, atol=1e-3)
        # small inference batches skip the packed layout (it would copy the codes): same numbers
        assert not model.embedder.packable
        assert torch.equal(model(x[:5]), model(x)[:5])
        assert "_packed" not in model.embedder.__dict__
    save_model(tmp_path / "q.pt", model, [f"f{i}" for i in range(len(CARDS))])
    loaded, payload = load_model(tmp_path / "q.pt")
    assert [f["kind"] for f in payload["embedder"]["fields"]] == ["dense", "int8", "int8", "int8", "dense"]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert memory_bytes(loaded) == mem
    # the former quantized format with int8 fields (version 3) still loads, to the same model
    torch.save(legacy_quantized_payload(model, payload["field_names"], 3), tmp_path / "v3.pt")
    old, _ = load_model(tmp_path / "v3.pt")
    with torch.no_grad():
        assert torch.equal(old(x), model(x))


def test_int8_keeps_the_auc_and_logloss_of_labels_planted_by_the_float_model() -> None:
    """Labels drawn from the float model's own probabilities (sharpened): the float model is the
    best scorer there is, and the int8 model's scores must rank and calibrate almost as well."""
    from optembed.metrics import auc, logloss

    compact = tiny_compact(widths=(8, 8, 8, 8, 8))
    with torch.no_grad():
        x = random_ids(CARDS, 20000, 12)
        logit = compact(x)
        logit = (logit - logit.mean()) / logit.std() * 2
        labels = (torch.rand(len(x), generator=torch.Generator().manual_seed(13)) < torch.sigmoid(logit)).float()
        model, _ = quantize_compact_int8(compact)
        got = model.eval()(x)
        got = (got - compact(x).mean()) / compact(x).std() * 2
    assert auc(labels, logit) > 0.75
    assert abs(auc(labels, got) - auc(labels, logit)) < 0.002
    assert abs(logloss(labels, got) - logloss(labels, logit)) < 0.002


def test_mixed_fields_and_the_serving_graph() -> None:
    compact = tiny_compact()
    g = torch.Generator().manual_seed(8)
    fields: list = []
    for f in range(len(CARDS)):
        table = compact.embedder.table(f).detach()
        if f == 1:
            codes = torch.randint(0, 16, (table.shape[0], 2), generator=g).to(torch.uint8)
            fields.append(CodedField(codes, torch.randn(2, 16, 4, generator=g), table.shape[1]))
        elif f in (2, 3):
            fields.append(RowInt8Field.from_table(table))
        else:
            fields.append(DenseField(table))
    model = quantized_model(compact, fields).eval()
    x = random_ids(CARDS, 300, 9)
    with torch.no_grad():
        per_field = model.embedder.lookup_per_field(model.embedder.ids(x))
        assert torch.equal(model.embedder(x[:7]), per_field[:7])
        net = ServingNet(model).eval()
        torch.testing.assert_close(net(x)[0], model(x), rtol=0, atol=1e-6)
    int8_only = quantized_model(compact, [RowInt8Field.from_table(compact.embedder.table(f).detach()) for f in range(len(CARDS))])
    with torch.no_grad():
        torch.testing.assert_close(ServingNet(int8_only.eval())(x)[0], int8_only(x), rtol=0, atol=1e-6)
    assert math.isclose(memory_bytes(int8_only)["scales"], sum(compact.embedder.field_rows()) * 8)


@pytest.mark.slow
def test_int8_graphs_give_the_models_scores(tmp_path: Path) -> None:
    import numpy as np

    from optembed.export.bundle import torch_scorer
    from optembed.export.writers import export_program, save_onnx, save_pt2

    model, _ = quantize_compact_int8(tiny_compact())
    model.eval()
    net = ServingNet(model).eval()
    x = random_ids(CARDS, 1000, 11)
    with torch.no_grad():
        want = model(x).numpy()
    program = export_program(net, net.n_fields)
    save_pt2(program, tmp_path / "model.pt2")
    for batch in (x, x[:1]):
        logit, _ = torch_scorer(tmp_path / "model.pt2")(batch.numpy())
        np.testing.assert_allclose(logit, want[: len(batch)], atol=1e-5, rtol=0)
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    import onnx

    save_onnx(program, tmp_path / "model.onnx", net.n_fields)
    graph = onnx.load(str(tmp_path / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"Gather", "Cast", "Mul", "Add"} <= ops
    uint8 = [i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.UINT8]
    assert sum(math.prod(i.dims) for i in uint8) == memory_bytes(model)["codes"]  # the codes stay 8-bit in the graph
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1]):
        logit, _ = session.run(None, {"ids": batch.numpy()})
        np.testing.assert_allclose(logit, want[: len(batch)], atol=1e-5, rtol=0)
