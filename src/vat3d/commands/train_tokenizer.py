"""``vat3d train-tokenizer``: train the VAT tokenizer on prepared data with Lightning."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vat3d.commands import _training_options as opts


def train_tokenizer(
    config: str = opts.CONFIG,
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Prepared data folder (vat3d prepare); overrides data.root."),
    run_dir: Path = typer.Option(Path("runs/tokenizer"), "--run-dir", "-o", help="Checkpoints, logs, previews and the exported model go here."),
    max_steps: Optional[int] = opts.MAX_STEPS,
    max_time: Optional[str] = opts.MAX_TIME,
    stop_at_step: Optional[int] = opts.STOP_AT_STEP,
    devices: str = opts.DEVICES,
    num_nodes: int = opts.NUM_NODES,
    strategy: str = opts.STRATEGY,
    accelerator: str = opts.ACCELERATOR,
    precision: Optional[str] = opts.PRECISION,
    resume: str = opts.RESUME,
    set_: list[str] = opts.SET,
    progress: bool = opts.PROGRESS,
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Start from this tokenizer's weights "
                                            "(a folder or 'default'); its architecture must equal the config's. "
                                            "A quantized model trains quantized from step 0."),
) -> None:
    """Train the tokenizer; writes checkpoints, TensorBoard/CSV logs, PNG previews and, at the end,
    the model as config.json + model.safetensors in RUN_DIR/model."""
    import lightning.pytorch as pl
    import yaml

    from vat3d.models.modules import Block
    from vat3d.training.common import build_trainer, load_config, merged, plan_activation_checkpointing, resume_path
    from vat3d.training.distributed import ExportModel
    from vat3d.training.previews import MeshPreview
    from vat3d.training.logs import keep_csv_history
    from vat3d.training.tokenizer_module import DATA_DEFAULTS, TRAINING_DEFAULTS, TokenizerDataModule, TokenizerModule

    cfg = load_config(config, "tokenizer", set_)
    train_cfg = dict(cfg.get("training", {}))
    if max_steps is not None:
        train_cfg["max_steps"] = max_steps
    if max_time is not None:
        train_cfg["max_time"] = max_time
    if stop_at_step is not None:
        train_cfg["stop_at_step"] = stop_at_step
    data_cfg = merged(DATA_DEFAULTS, cfg.get("data"))
    if data is not None:
        data_cfg["root"] = str(data)
    if not data_cfg["root"] or not Path(data_cfg["root"]).is_dir():
        raise typer.BadParameter(f"prepared data folder {data_cfg['root']!r} not found: run `vat3d prepare` first",
                                 param_hint="--data")
    pl.seed_everything(merged(TRAINING_DEFAULTS, train_cfg)["seed"], workers=True, verbose=False)  # also the init
    if init_from is not None:
        from vat3d.pretrained import load_tokenizer

        source = load_tokenizer(init_from)
        if bool(source.quantizer.initialized) and not any(s.startswith("training.quantize_start_step=")
                                                          for s in set_):
            train_cfg["quantize_start_step"] = 0  # its codebook is trained: no continuous phase, no k-means
    module = TokenizerModule(cfg["model"], train_cfg)
    if init_from is not None:
        try:
            module.model.load_state_dict(source.state_dict())
        except RuntimeError as error:
            raise typer.BadParameter(f"{init_from} does not fit the config's model: {error}",
                                     param_hint="--init-from") from error
        typer.echo(f"initialised from {init_from}")
    tcfg = module.cfg
    datamodule = TokenizerDataModule(**data_cfg, seed=tcfg["seed"], max_steps=tcfg["max_steps"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**cfg, "training": tcfg, "data": data_cfg}, sort_keys=False))
    dev = opts.parse_devices(devices)
    export = ExportModel(run_dir / "model", metadata={"config": str(config)},
                         should_export=lambda t: not (tcfg.get("stop_at_step") and t.global_step < tcfg["max_steps"]))
    trainer = build_trainer(run_dir, tcfg, devices=dev, num_nodes=num_nodes, strategy=strategy,
                            accelerator=accelerator, precision=precision, block_types=(Block,), progress=progress,
                            extra_callbacks=[MeshPreview(run_dir / "previews", tcfg["image_every_n_val"]), export],
                            activation_checkpointing=plan_activation_checkpointing(module.model, tcfg, strategy),
                            find_unused_parameters=module.find_unused_parameters)
    ckpt = resume_path(run_dir, None if resume == "none" else resume)
    if ckpt:
        typer.echo(f"resuming from {ckpt}")
        keep_csv_history(trainer)  # a resumed run continues RUN_DIR/csv/metrics.csv
    # our own checkpoints (they hold numpy RNG state, which weights_only loading rejects)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
    if trainer.global_rank == 0 and export.path is None:
        typer.echo(f"stopped at step {trainer.global_step} of {tcfg['max_steps']}; rerun with a later --stop-at-step (or none) to resume")
    elif trainer.global_rank == 0:
        typer.echo(f"trained {trainer.global_step} steps; model saved to {export.path}")


def register(app: typer.Typer) -> None:
    app.command("train-tokenizer")(train_tokenizer)
