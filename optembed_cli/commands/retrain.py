"""``optembed retrain``: re-train under the found masks and export per-field dense tables."""

from __future__ import annotations

from typing import Annotated

import typer

from optembed_cli import ui
from optembed_cli.options import INPUT, ArtifactsOpt, ForceOpt, FromOpt, Init, JsonOpt
from optembed_cli.training_options import (
    NprocOpt, ShuffleBufferOpt, StreamOpt,
    AmpOpt, BatchNormOpt, BatchOpt, CompileOpt, CrossLayersOpt, DeviceOpt, DropoutOpt, EmbedDimOpt, EmbLrOpt,
    EmbOptimizerOpt, EpochsOpt, EvalsOpt, EvalBatchOpt, FreqC0Opt, FreqLrOpt, FreqPowerOpt, LrOpt, MlpOpt, ModelOpt,
    PatienceOpt, ReinitOpt, SeedOpt, WdOpt, EmbL2Opt, LrDecayOpt, MonitorOpt, ModelDefaults, model_config, train_config,
)
from pipelines import retrain as stage
from pipelines.store import Manifest

MODEL_DEFAULTS = ModelDefaults()
DEFAULTS = stage.TrainConfig()


@ui.handle_errors
def retrain(
    source: FromOpt = None,
    full: Annotated[
        bool, typer.Option("--full", help="Train the Original model: no row mask, full width.", rich_help_panel=INPUT)
    ] = False,
    init: Annotated[
        Init,
        typer.Option(
            help="auto (supernet for masked variants, fresh for --full) | fresh | rewind (the supernet's initial "
            "weights) | supernet (its trained weights, kept as epoch 0 when no epoch beats them).",
            rich_help_panel=INPUT,
        ),
    ] = "auto",
    model: ModelOpt = "deepfm",
    embed_dim: EmbedDimOpt = MODEL_DEFAULTS.embed_dim,
    mlp: MlpOpt = MODEL_DEFAULTS.mlp,
    dropout: DropoutOpt = MODEL_DEFAULTS.dropout,
    batch_norm: BatchNormOpt = MODEL_DEFAULTS.batch_norm,
    cross_layers: CrossLayersOpt = MODEL_DEFAULTS.cross_layers,
    epochs: EpochsOpt = DEFAULTS.epochs,
    batch_size: BatchOpt = DEFAULTS.batch_size,
    lr: LrOpt = DEFAULTS.lr,
    weight_decay: WdOpt = DEFAULTS.weight_decay,
    embedding_l2: EmbL2Opt = DEFAULTS.embedding_l2,
    lr_decay: LrDecayOpt = DEFAULTS.lr_decay,
    monitor: MonitorOpt = DEFAULTS.monitor,  # type: ignore[assignment]
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
    nproc: NprocOpt = 1,
    stream: StreamOpt = False,
    shuffle_buffer: ShuffleBufferOpt = stage.DEFAULT_BUFFER_ROWS,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last epoch.")] = False,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> None:
    """Re-train from a search (OptEmbed) or supernet (OptEmbed-E) artifact, or --full; export the compact model.

    The model options apply only to --full from a preprocess artifact; otherwise the supernet's
    architecture is reused. Without --from the newest search or supernet artifact is used (its
    id is printed).

    Examples:

      optembed retrain                        # OptEmbed from the newest search

      optembed retrain --from SUPERNET_ID --full   # the Original model, for the comparison
    """
    ui.relaunch(nproc)  # --nproc N: this command again as N data-parallel workers
    config = stage.RetrainStage(
        source=source,
        full=full,
        init=str(init),
        train=train_config(
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, embedding_l2=embedding_l2, lr_decay=lr_decay, monitor=monitor, patience=patience,
            eval_batch_size=eval_batch_size, seed=seed, amp=amp, compile=compile,
            embedding_optimizer=embedding_optimizer, embedding_lr=embedding_lr, freq_lr=freq_lr,
            freq_lr_c0=freq_lr_c0, freq_lr_power=freq_lr_power,
            reinit_embeddings_each_epoch=reinit_embeddings_each_epoch, evals_per_epoch=evals_per_epoch,
        ),
        model=model_config(model, embed_dim, mlp, dropout, batch_norm, cross_layers, "l1"),
        device=device,
        stream=stream,
        shuffle_buffer=shuffle_buffer,
        resume=resume,
        force=force,
    )
    ui.run_stage(stage.run, config, artifacts, json, render, upstream=("search", "supernet"), source=source)


def render(manifest: Manifest) -> None:
    metrics = {k: v for k, v in manifest.metrics.items() if k != "widths"}
    ui.out.print(ui.metrics_table(f"retrain ({manifest.metrics['variant']})", metrics))
    change = ui.size_change(manifest.metrics["dense_bytes"], manifest.metrics["compact_bytes"])
    ui.out.print(
        f"compact model: {manifest.output('compact')} ({manifest.metrics['compact_bytes']:,} bytes, "
        f"{change} the dense masked model file)"
    )
