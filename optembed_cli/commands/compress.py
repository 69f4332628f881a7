"""``optembed compress``: product-quantize (or store row-wise int8) a retrained model's embedding tables."""

from __future__ import annotations

from typing import Annotated

import typer

from optembed.quantization.config import QuantizerConfig
from optembed.quantization.finetune import FinetuneConfig
from optembed_cli import ui
from optembed_cli.core_choices import CodeDtype, CompressMethod, KmeansBackend, Popularity
from optembed_cli.options import DEVICE, QUANTIZER, TRAINING, ArtifactsOpt, ForceOpt, FromOpt, JsonOpt, TrackOpt
from optembed_cli.training_options import BatchOpt, DeviceOpt, PatienceOpt, SeedOpt
from pipelines import compress as stage
from pipelines.store import Manifest

Q = QuantizerConfig()
FT = FinetuneConfig()


@ui.handle_errors
def compress(
    source: FromOpt = None,
    method: Annotated[CompressMethod, typer.Option(help="pq: product quantization (codes + codebooks per large field) | int8: every field of width >= 3 row-wise int8 (uint8 codes, float32 scale and bias per row). The other Quantizer options apply to pq only and are refused with int8.", rich_help_panel=QUANTIZER)] = "pq",
    min_rows: Annotated[int, typer.Option(help="Quantize only fields with more rows than this; smaller ones stay float. A run that would code no field stops and names the --min-rows that would.", rich_help_panel=QUANTIZER)] = 10_000,
    groups: Annotated[int, typer.Option(help="Sub-vectors per row. A width that groups does not divide is zero-padded.", rich_help_panel=QUANTIZER)] = Q.groups,
    codebook: Annotated[int, typer.Option(help="Most entries per group's codebook (256 -> one byte per code); each field's own size is bounded by --codebook-share.", rich_help_panel=QUANTIZER)] = Q.codebook,
    sub_dim: Annotated[int | None, typer.Option(help="Columns per sub-vector: a field of width D gets ceil(D / sub-dim) groups (overrides --groups).", rich_help_panel=QUANTIZER)] = Q.sub_dim,
    codebook_share: Annotated[float, typer.Option(help="A field's codebooks cost at most this fraction of its codes' bytes (K shrinks by powers of two).", rich_help_panel=QUANTIZER)] = Q.codebook_share,
    code_dtype: Annotated[CodeDtype, typer.Option(help="Integer type of the codes (auto: uint8 up to 256 entries).", rich_help_panel=QUANTIZER)] = Q.code_dtype,
    popularity: Annotated[Popularity, typer.Option(help="Reconstruction weight per row: log (log2(1+count)) | linear | none.", rich_help_panel=QUANTIZER)] = Q.popularity,
    balance_weight: Annotated[float, typer.Option(help="Weight of the code-balance (soft-assignment entropy) term; 0 turns it off.", rich_help_panel=QUANTIZER)] = Q.balance_weight,
    contrastive_weight: Annotated[float, typer.Option(help="Weight of the InfoNCE term; 0 turns it off.", rich_help_panel=QUANTIZER)] = Q.contrastive_weight,
    temperature: Annotated[float, typer.Option(help="InfoNCE temperature.", rich_help_panel=QUANTIZER)] = Q.temperature,
    kmeans_iters: Annotated[int, typer.Option(help="Popularity-weighted k-means (Lloyd) iterations that start the codebooks; 0: random rows.", rich_help_panel=QUANTIZER)] = Q.kmeans_iters,
    kmeans_sample: Annotated[int, typer.Option(help="Rows per codebook entry that k-means trains on, drawn in proportion to popularity (0: every row, weighted).", rich_help_panel=QUANTIZER)] = Q.kmeans_sample,
    kmeans_backend: Annotated[KmeansBackend, typer.Option(help="torch | faiss (needs faiss-cpu: its k-means and nearest-entry search).", rich_help_panel=QUANTIZER)] = Q.kmeans_backend,
    quantizer_steps: Annotated[int, typer.Option(help="Optimizer steps per field (at most 10 passes over its rows).", rich_help_panel=QUANTIZER)] = Q.steps,
    quantizer_lr: Annotated[float, typer.Option(help="Learning rate of the codebooks.", rich_help_panel=QUANTIZER)] = Q.lr,
    finetune_epochs: Annotated[int | None, typer.Option(help=f"Epochs of fine-tuning with the codes fixed (0: none; default {FT.epochs} for pq, 0 for int8, whose tables have nothing to train: only the network around them would).", rich_help_panel=TRAINING, show_default=False)] = None,
    finetune_lr: Annotated[float, typer.Option(help="Learning rate of the fine-tuning.", rich_help_panel=TRAINING)] = FT.lr,
    batch_size: BatchOpt = FT.batch_size,
    patience: PatienceOpt = FT.patience,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    jobs: Annotated[int, typer.Option(help="Fields quantized at once, on threads (0: one per CPU core; 1 on a GPU). The result is the same up to floating-point rounding.", rich_help_panel=DEVICE)] = 0,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
    track: TrackOpt = None,
) -> None:
    """Quantize the tables of a retrain artifact (OptEmbed or Original): codes + codebooks per large field, or row-wise int8.

    Examples:

      optembed compress                       # the newest retrain artifact

      optembed compress --from 9c01 --min-rows 2000 --codebook 64

      optembed compress --from 9c01 --method int8
    """
    method_name = str(method)
    epochs = finetune_epochs if finetune_epochs is not None else stage.default_finetune(method_name).epochs
    config = stage.CompressStage(
        method=method_name,
        source=source,
        quantizer=QuantizerConfig(
            groups=groups, codebook=codebook, code_dtype=str(code_dtype), sub_dim=sub_dim, codebook_share=codebook_share, popularity=str(popularity),
            balance_weight=balance_weight, contrastive_weight=contrastive_weight, temperature=temperature,
            steps=quantizer_steps, kmeans_iters=kmeans_iters, kmeans_sample=kmeans_sample, kmeans_backend=str(kmeans_backend), lr=quantizer_lr, seed=seed,
        ),
        min_rows=min_rows,
        finetune=FinetuneConfig(epochs=epochs, lr=finetune_lr, batch_size=batch_size, patience=patience, seed=seed),
        device=device,
        jobs=jobs,
        force=force,
    )
    config.validate()  # every option before the store is read
    ui.run_stage(stage.run, config, artifacts, json, render, upstream="retrain", source=source, track=track)


def render(manifest: Manifest) -> None:
    m = manifest.metrics
    shown = {k: m[k] for k in (
        "variant", "method", "coded_fields", "fields", "source_test_auc", "source_test_logloss", "quantized_test_auc",
        "test_auc", "test_logloss", "test_base_rate_logloss", "auc_delta",
        "embedding_bytes", "code_bytes", "codebook_bytes", "scale_bytes", "float_table_bytes", "remap_bytes", "network_bytes",
        "original_embedding_bytes", "source_embedding_bytes", "ratio_vs_original", "ratio_vs_source", "quantizer_seconds",
    ) if k in m}
    ui.out.print(ui.metrics_table(f"compress ({m.get('variant', '?')} + {m.get('method', 'pq')})", shown))
    ui.out.print(
        f"embedding: {m['embedding_bytes']:,} bytes, {m['ratio_vs_original']:.1f}x smaller than the dense float32 "
        f"Original table, {m['ratio_vs_source']:.1f}x smaller than the source's tables; model: {manifest.output('model')}"
    )
