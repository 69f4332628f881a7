"""The quantized embedder's inference lookup (two batched gathers) against the per-field loop and
against rows decoded by hand."""

from __future__ import annotations

import torch

from optembed.quantization.fields import CodedField, DenseField
from optembed.quantization.model import QuantizedEmbedder

DIM = 6


def fields(gen: torch.Generator) -> list[DenseField | CodedField]:
    """Float and coded fields of every shape: widths below D, 1-3 groups, uint8 and uint16 codes."""
    return [
        DenseField(torch.randn(5, 6, generator=gen)),
        CodedField(torch.randint(0, 4, (7, 2), generator=gen).to(torch.uint8), torch.randn(2, 4, 3, generator=gen), 5),
        DenseField(torch.randn(3, 2, generator=gen)),
        CodedField(torch.randint(0, 300, (9, 3), generator=gen).to(torch.uint16), torch.randn(3, 300, 2, generator=gen), 6),
        CodedField(torch.randint(0, 2, (4, 1), generator=gen).to(torch.uint8), torch.randn(1, 2, 6, generator=gen), 4),
    ]


def by_hand(table: DenseField | CodedField, row: int) -> torch.Tensor:
    """One row, padded to D: the float row, or the codebook entries of its codes concatenated."""
    if isinstance(table, DenseField):
        values = table.table[row]
    else:
        values = torch.cat([table.codebooks[g, int(table.codes[row, g])] for g in range(table.groups)])[: table.width]
    return torch.cat([values, torch.zeros(DIM - values.numel())])


def random_ids(tables: list, batch: int, gen: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randint(0, t.rows, (batch,), generator=gen) for t in tables], dim=1)


def test_packed_lookup_equals_the_loop_and_the_hand_decoding() -> None:
    gen = torch.Generator().manual_seed(0)
    for chosen in ([0, 1, 2, 3, 4], [1, 3, 4], [0, 2]):  # mixed, coded only, float only
        tables = [fields(gen)[i] for i in chosen]
        emb = QuantizedEmbedder(tables, None, [t.rows for t in tables], DIM)
        ids = random_ids(tables, 11, gen)
        with torch.no_grad():
            packed = emb.lookup(ids)
            hand = torch.stack([torch.stack([by_hand(t, int(ids[b, f])) for f, t in enumerate(tables)]) for b in range(11)])
        assert torch.equal(packed, hand), chosen  # adding zero rows is exact
        assert torch.equal(packed, emb.lookup_per_field(ids).detach())


def test_packed_tables_follow_updates_and_training_uses_the_loop() -> None:
    gen = torch.Generator().manual_seed(1)
    tables = fields(gen)
    emb = QuantizedEmbedder(tables, None, [t.rows for t in tables], DIM)
    ids = random_ids(tables, 8, gen)
    with torch.no_grad():
        before = emb.lookup(ids)
        first = emb.packed()
        assert emb.packed() is first  # nothing changed: the layout is reused
        tables[1].codebooks.add_(1.0)  # an optimizer step does this in place
        tables[0].table.mul_(2.0)
        after = emb.lookup(ids)
    assert emb.packed() is not first
    assert torch.equal(after, emb.lookup_per_field(ids).detach()) and not torch.equal(after, before)
    # large batches read through the loop, with the same result
    from optembed.quantization.model import PACKED_MAX_ROWS

    big = random_ids(tables, PACKED_MAX_ROWS + 1, gen)
    with torch.no_grad():
        assert torch.equal(emb.lookup(big), emb.packed().lookup(big))
    # with gradients on, the lookup is the per-field loop and reaches every table
    out = emb.lookup(ids)
    out.sum().backward()
    assert tables[0].table.grad is not None and tables[3].codebooks.grad is not None


def test_a_model_made_under_inference_mode_reads_packed_tables() -> None:
    """Tables created under ``torch.inference_mode`` (a model loaded or moved there) have no
    version counter; the packed path still works and equals the loop."""
    gen = torch.Generator().manual_seed(2)
    with torch.inference_mode():
        tables = fields(gen)
        emb = QuantizedEmbedder(tables, None, [t.rows for t in tables], DIM)
        ids = random_ids(tables, 5, gen)
        assert torch.equal(emb.lookup(ids), emb.lookup_per_field(ids))
