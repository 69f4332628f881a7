"""``optembed supernet``: train the OptEmbed supernet (row pruning + one-shot width supernet)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from optembed_cli import ui
from optembed_cli.options import PRUNING, ArtifactsOpt, ForceOpt, FromOpt, JsonOpt, Mode
from optembed_cli.training_options import (
    NprocOpt, ShuffleBufferOpt, StreamOpt,
    AlphaOpt, AmpOpt, BatchNormOpt, BatchOpt, CompileOpt, CrossLayersOpt, DeviceOpt, DropoutOpt, EmbedDimOpt,
    EmbLrOpt, EmbOptimizerOpt, EpochsOpt, EvalsOpt, EvalBatchOpt, FreqC0Opt, FreqLrOpt, FreqPowerOpt, LrOpt, MlpOpt,
    ModelOpt, NormOpt, PatienceOpt, ReinitOpt, SeedOpt, TLrOpt, TOptOpt, WdOpt, EmbL2Opt, LrDecayOpt, MonitorOpt, ModelDefaults, model_config, train_config,
)
from optembed.embedders.table import mode_flags
from optembed.models.checkpoint import read_model_payload
from pipelines import supernet as stage
from pipelines.store import Manifest

MODEL_DEFAULTS = ModelDefaults()
DEFAULTS = stage.TrainConfig()


@ui.handle_errors
def supernet(
    source: FromOpt = None,
    model: ModelOpt = "deepfm",
    mode: Annotated[
        Mode,
        typer.Option(
            help="optembed (rows + widths) | prune-only (OptEmbed-E) | dims-only (OptEmbed-D) | none (plain model).",
            rich_help_panel=PRUNING,
        ),
    ] = "optembed",
    embed_dim: EmbedDimOpt = MODEL_DEFAULTS.embed_dim,
    mlp: MlpOpt = MODEL_DEFAULTS.mlp,
    dropout: DropoutOpt = MODEL_DEFAULTS.dropout,
    batch_norm: BatchNormOpt = MODEL_DEFAULTS.batch_norm,
    cross_layers: CrossLayersOpt = MODEL_DEFAULTS.cross_layers,
    norm: NormOpt = "l1",
    epochs: EpochsOpt = DEFAULTS.epochs,
    batch_size: BatchOpt = DEFAULTS.batch_size,
    lr: LrOpt = DEFAULTS.lr,
    weight_decay: WdOpt = DEFAULTS.weight_decay,
    embedding_l2: EmbL2Opt = DEFAULTS.embedding_l2,
    lr_decay: LrDecayOpt = DEFAULTS.lr_decay,
    monitor: MonitorOpt = DEFAULTS.monitor,  # type: ignore[assignment]
    alpha: AlphaOpt = DEFAULTS.alpha,
    threshold_lr: TLrOpt = DEFAULTS.threshold_lr,
    threshold_optimizer: TOptOpt = DEFAULTS.threshold_optimizer,
    patience: PatienceOpt = DEFAULTS.patience,
    eval_batch_size: EvalBatchOpt = DEFAULTS.eval_batch_size,
    seed: SeedOpt = DEFAULTS.seed,
    device: DeviceOpt = "auto",
    amp: AmpOpt = "none",
    compile: CompileOpt = False,
    embedding_optimizer: EmbOptimizerOpt = DEFAULTS.embedding_optimizer,
    embedding_lr: EmbLrOpt = None,
    freq_lr: FreqLrOpt = DEFAULTS.freq_lr,
    freq_lr_c0: FreqC0Opt = DEFAULTS.freq_lr_c0,
    freq_lr_power: FreqPowerOpt = DEFAULTS.freq_lr_power,
    reinit_embeddings_each_epoch: ReinitOpt = False,
    evals_per_epoch: EvalsOpt = 0,
    full_width_share: Annotated[
        float,
        typer.Option(help="Expected share of samples trained at the full width in every field (0: the paper's uniform widths).", rich_help_panel=PRUNING),
    ] = DEFAULTS.full_width_share,
    nproc: NprocOpt = 1,
    stream: StreamOpt = False,
    shuffle_buffer: ShuffleBufferOpt = stage.DEFAULT_BUFFER_ROWS,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last epoch.")] = False,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> None:
    """Train the supernet on a preprocess artifact; keep the best checkpoint and its row mask.

    Examples:

      optembed supernet --epochs 4 --batch-size 512 --embed-dim 16 --mlp 128,64

      optembed supernet --from 3fa2 --mode dims-only --device cuda
    """
    ui.relaunch(nproc)  # --nproc N: this command again as N data-parallel workers
    config = stage.SupernetStage(
        model=model_config(model, embed_dim, mlp, dropout, batch_norm, cross_layers, norm),
        mode=str(mode),
        train=train_config(
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, embedding_l2=embedding_l2, lr_decay=lr_decay, monitor=monitor, alpha=alpha,
            threshold_lr=threshold_lr, threshold_optimizer=threshold_optimizer, patience=patience,
            eval_batch_size=eval_batch_size, seed=seed, amp=amp, compile=compile,
            embedding_optimizer=embedding_optimizer, embedding_lr=embedding_lr, freq_lr=freq_lr,
            freq_lr_c0=freq_lr_c0, freq_lr_power=freq_lr_power,
            reinit_embeddings_each_epoch=reinit_embeddings_each_epoch, evals_per_epoch=evals_per_epoch,
            full_width_share=full_width_share,
        ),
        source=source,
        device=device,
        stream=stream,
        shuffle_buffer=shuffle_buffer,
        resume=resume,
        force=force,
    )
    mode_flags(str(mode))
    ui.run_stage(stage.run, config, artifacts, json, render, stage.UPSTREAM, source)


def render(manifest: Manifest) -> None:
    ui.out.print(ui.metrics_table(f"supernet {manifest.params['model']['name']} ({manifest.params['mode']})", manifest.metrics))
    info = stage.load_row_mask(manifest)
    if not info["pruned"]:
        return
    payload = read_model_payload(manifest.output("model"))
    table = Table(title="rows kept per field", header_style="bold")
    for col in ("field", "rows", "kept", "kept %", "threshold"):
        table.add_column(col, justify="left" if col == "field" else "right")
    for name, rows, kept, t in zip(
        payload["field_names"], info["rows_per_field"], info["kept_per_field"], info["thresholds"], strict=True
    ):
        table.add_row(name, f"{rows:,}", f"{kept:,}", f"{100 * kept / rows:.1f}", f"{t:.4f}")
    ui.out.print(table)
