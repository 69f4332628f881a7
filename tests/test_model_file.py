"""One model file for every kind: save, load, equal predictions; the deployable kinds also
through the one exported lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from optembed.embedders.registry import build_embedder
from optembed.errors import ArtifactError
from optembed.export.graph import ServingNet
from optembed.models.checkpoint import load_model, save_model
from optembed.models.compact import export_compact
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.quantization.compress import quantize_compact
from optembed.quantization.compress_int8 import quantize_compact_int8
from optembed.quantization.config import QuantizerConfig

CARDS = [400, 5, 60, 3]
CFG = ModelConfig("deepfm", embed_dim=8, mlp_dims=(16,))
NAMES = ["a", "b", "c", "d"]


def _ids(n: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1)


def _compact():
    torch.manual_seed(0)
    dense = build_model(CARDS, CFG, "none").eval()
    keep = torch.rand(sum(CARDS), generator=torch.Generator().manual_seed(1)) < 0.6
    return export_compact(dense, keep, torch.tensor([6, 2, 8, 3]))


def _kind(kind: str):
    torch.manual_seed(0)
    if kind == "full":
        return build_model(CARDS, CFG, "none"), "none"
    if kind == "optembed":
        return build_model(CARDS, CFG, "optembed"), "optembed"
    if kind == "compact":
        return _compact(), "none"
    if kind == "pq":
        return quantize_compact(_compact(), NAMES, None, QuantizerConfig(groups=2, codebook=4, steps=5, batch_size=64), 50)[0], "none"
    if kind == "int8":
        return quantize_compact_int8(_compact(), NAMES)[0], "none"
    options = {"qr": {"collisions": 4}, "pep": {}, "autofield": {}, "autodim": {}}[kind]
    return build_model(CARDS, CFG, "none", embedder=build_embedder({"kind": kind, **options}, CARDS, CFG)), "none"


KINDS = ["full", "optembed", "compact", "pq", "int8", "qr", "pep", "autofield", "autodim"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips_through_the_one_model_file(kind: str, tmp_path: Path) -> None:
    model, mode = _kind(kind)
    with torch.no_grad():  # move the state off its initial values so a fresh model would differ
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    save_model(tmp_path / "m.pt", model, NAMES, mode)
    loaded, payload = load_model(tmp_path / "m.pt")
    assert payload["field_names"] == NAMES and payload["embedder"]["kind"] == model.embedder.kind
    assert type(loaded.embedder) is type(model.embedder) and not loaded.training
    x = _ids()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.size_report() == model.size_report()


@pytest.mark.parametrize("kind", ["compact", "pq", "int8"])
def test_deployable_kinds_export_through_their_own_lookup(kind: str, tmp_path: Path) -> None:
    model, _ = _kind(kind)
    save_model(tmp_path / "m.pt", model, NAMES)
    loaded, _ = load_model(tmp_path / "m.pt")
    x = _ids(300, 3)
    with torch.no_grad():
        torch.testing.assert_close(ServingNet(loaded, NAMES)(x)[0], model.eval()(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["full", "optembed", "qr", "pep"])
def test_training_kinds_have_no_exported_lookup(kind: str) -> None:
    model, _ = _kind(kind)
    with pytest.raises(ArtifactError, match="cannot export"):
        ServingNet(model, NAMES)


def test_a_spec_that_does_not_fit_its_state_is_refused(tmp_path: Path) -> None:
    model, _ = _kind("compact")
    save_model(tmp_path / "m.pt", model, NAMES)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["embedder"]["kept"] = [k + 1 for k in payload["embedder"]["kept"]]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ArtifactError):
        load_model(tmp_path / "bad.pt")


def test_a_compact_file_of_the_former_format_loads_to_the_same_model(tmp_path: Path) -> None:
    from legacy_files import legacy_compact_payload

    model, _ = _kind("compact")
    torch.save(legacy_compact_payload(model, NAMES), tmp_path / "old.pt")
    loaded, payload = load_model(tmp_path / "old.pt")
    assert payload["field_names"] == NAMES and loaded.embedder.kind == "compact"
    x = _ids()
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_an_unknown_supernet_mode_is_refused_naming_the_file(tmp_path: Path) -> None:
    model, _ = _kind("optembed")
    save_model(tmp_path / "m.pt", model, NAMES, "optembed")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["mode"] == "optembed"  # the mode is written as its name
    payload["mode"] = "everything"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ArtifactError, match=r"bad\.pt names an unknown supernet mode 'everything'"):
        load_model(tmp_path / "bad.pt")
