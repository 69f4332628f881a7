"""The annealed Gumbel temperature held in tensors: the same schedule and draws as the Python
formula, saved and loaded as before, and one compilation of a searching lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounter

from optembed.embedders.autodim import AutoDimEmbedder
from optembed.embedders.autofield import AutoFieldEmbedder
from optembed.embedders.gumbel import AnnealedGumbel
from optembed.models.checkpoint import load_model, save_model
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.safe_load import load_tensor_file

CARDS = [10, 20, 30]
T0, DECAY, FLOOR = 1.0, 0.013, 0.05


def formula(t: int) -> float:
    """The schedule as the Python float it always was."""
    return max(FLOOR, T0 - DECAY * t)


def test_temperature_sequence_equals_the_formula_and_draws_equal_float_tau() -> None:
    g = AnnealedGumbel(T0, DECAY, FLOOR).train()
    logits = torch.randn(7, 5, requires_grad=True)
    steps = 100  # passes the floor at t = 74
    seen = []
    for t in range(steps):
        seen.append(g.current_temperature())
        torch.manual_seed(t)
        new = g(logits)
        torch.manual_seed(t)
        old = F.gumbel_softmax(logits, tau=formula(t), hard=False, dim=-1)
        torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-7)
    assert seen == [formula(t) for t in range(steps)]  # exactly the same float64 numbers
    assert g.count() == steps and g.current_temperature() == FLOOR
    # evaluation and gradient-free lookups neither draw noise nor count
    g.eval()
    assert torch.equal(g(logits), torch.softmax(logits, dim=-1))
    g.train()
    with torch.no_grad():
        g(logits)
    assert g.count() == steps


def test_gradient_flows_through_the_tensor_temperature_draw() -> None:
    g = AnnealedGumbel(2.0, 0.0, 0.1).train()
    logits = torch.randn(3, 4, requires_grad=True)
    torch.manual_seed(0)
    g(logits)[:, 0].sum().backward()
    grad_new = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(0)
    F.gumbel_softmax(logits, tau=2.0, dim=-1)[:, 0].sum().backward()
    torch.testing.assert_close(grad_new, logits.grad)


def test_state_round_trips_through_a_file_and_goes_on_with_the_schedule(tmp_path: Path) -> None:
    g = AnnealedGumbel(T0, DECAY, FLOOR).train()
    logits = torch.zeros(2, 3, requires_grad=True)
    for _ in range(30):
        g(logits)
    assert set(g.state_dict()) == {"lookups"}  # the saved state: the count only, as model files always held
    torch.save(g.state_dict(), tmp_path / "g.pt")
    again = AnnealedGumbel(T0, DECAY, FLOOR).train()
    again.load_state_dict(load_tensor_file(tmp_path / "g.pt", "state"))
    assert again.count() == 30 and again.current_temperature() == formula(30)
    for t in range(30, 40):
        assert again.current_temperature() == formula(t)
        again(logits)


@pytest.mark.parametrize("kind", ["autofield", "autodim"])
def test_model_files_keep_their_keys_and_older_counts_load(kind: str, tmp_path: Path) -> None:
    """A file written before the temperature became a tensor holds ``embedder.gumbel.lookups``
    and nothing else of the schedule (the spec holds its constants): the file written now has
    the same keys, and a count stored in it sets the temperature by the formula."""
    cfg = ModelConfig("deepfm", embed_dim=4, mlp_dims=(8,))
    emb = (AutoFieldEmbedder if kind == "autofield" else AutoDimEmbedder)(
        CARDS, 4, temperature=T0, temperature_decay=DECAY, min_temperature=FLOOR)
    model = build_model(CARDS, cfg, embedder=emb)
    emb.gumbel.lookups.fill_(57)  # as a file saved after 57 search steps holds it
    save_model(tmp_path / "m.pt", model, ["a", "b", "c"])
    payload = load_tensor_file(tmp_path / "m.pt", "model file")
    assert [k for k in payload["state_dict"] if "gumbel" in k] == ["embedder.gumbel.lookups"]
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.embedder.gumbel.count() == 57
    assert loaded.embedder.gumbel.current_temperature() == formula(57)
    assert loaded.embedder.stats()["temperature"] == formula(57)


@pytest.mark.parametrize("embedder", [AutoFieldEmbedder, AutoDimEmbedder])
def test_a_compiled_search_lookup_compiles_once(embedder: type) -> None:
    """A temperature that changes as a Python number recompiles the traced lookup every step
    (up to dynamo's cache limit); held in tensors, the first compilation serves every step."""
    torch._dynamo.reset()
    counter = CompileCounter()
    emb = embedder(CARDS, 8, temperature=T0, temperature_decay=DECAY, min_temperature=FLOOR).train()
    lookup = torch.compile(emb.lookup, backend=counter)
    x = torch.stack([torch.randint(0, c, (16,)) for c in CARDS], 1)
    steps = 12
    for _ in range(steps):
        lookup(x).sum().backward()
    torch._dynamo.reset()
    assert counter.frame_count == 1
    assert emb.gumbel.count() == steps and emb.gumbel.current_temperature() == formula(steps)
