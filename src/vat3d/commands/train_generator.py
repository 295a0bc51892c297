"""``vat3d train-generator``: train the next-scale generator on token data with Lightning."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vat3d.commands import _training_options as opts


def train_generator(
    config: str = opts.CONFIG,
    tokens: Optional[Path] = typer.Option(None, "--tokens", "-t", help="Token folder (vat3d tokenize); overrides data.root."),
    run_dir: Path = typer.Option(Path("runs/generator"), "--run-dir", "-o", help="Checkpoints, logs and the exported model go here."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer folder or 'default' (default: the one recorded in TOKENS/tokens.json)."),
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
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Start from this generator's weights "
                                            "(a folder or 'default'); its architecture must equal the config's "
                                            "and it must be made for the tokens' tokenizer (and class names)."),
) -> None:
    """Train the generator on tokens from `vat3d tokenize`. The condition type comes from the config
    (model.cond_type: none, class, text, image or text+image). Writes checkpoints (RUN_DIR/checkpoints),
    TensorBoard (RUN_DIR/tb) and CSV logs (RUN_DIR/csv/metrics.csv: val/loss, val/loss_last,
    val/accuracy, ...) and, at the end, the model as config.json + model.safetensors in RUN_DIR/model.
    Tokens made by a different tokenizer than --tokenizer are refused."""
    import lightning.pytorch as pl
    import yaml

    from vat3d.data.tokens import TokenizerMismatchError, check_token_fingerprint, read_token_info
    from vat3d.models.modules import Block
    from vat3d.pretrained import load_tokenizer
    from vat3d.training.common import build_trainer, load_config, merged, plan_activation_checkpointing, resume_path
    from vat3d.training.distributed import ExportModel
    from vat3d.training.generator_module import (DATA_DEFAULTS, TRAINING_DEFAULTS, GeneratorDataModule,
                                                  GeneratorModule)
    from vat3d.training.logs import keep_csv_history

    cfg = load_config(config, "generator", set_)
    train_cfg = dict(cfg.get("training", {}))
    if max_steps is not None:
        train_cfg["max_steps"] = max_steps
    if max_time is not None:
        train_cfg["max_time"] = max_time
    if stop_at_step is not None:
        train_cfg["stop_at_step"] = stop_at_step
    data_cfg = merged(DATA_DEFAULTS, cfg.get("data"))
    if tokens is not None:
        data_cfg["root"] = str(tokens)
    root = data_cfg["root"]
    if not root or not (Path(root) / "tokens.json").is_file():
        raise typer.BadParameter(f"token folder {root!r} not found (no tokens.json): run `vat3d tokenize` first",
                                 param_hint="--tokens")
    info = read_token_info(root)
    tokenizer_ref = tokenizer or info.get("tokenizer")
    if not tokenizer_ref:
        raise typer.BadParameter(f"{root}/tokens.json names no tokenizer: pass --tokenizer", param_hint="--tokenizer")
    try:
        tok = load_tokenizer(tokenizer_ref)
        check_token_fingerprint(root, tok.fingerprint())
    except TokenizerMismatchError as err:
        raise typer.BadParameter(str(err), param_hint="--tokenizer") from err
    except FileNotFoundError as err:
        raise typer.BadParameter(f"tokenizer {tokenizer_ref!r}: {err}", param_hint="--tokenizer") from err

    model_cfg = dict(cfg.get("model", {}))
    cond_type = model_cfg.get("cond_type", "class")
    datamodule_kwargs = dict(data_cfg, cond_type=cond_type, tokenizer_fingerprint=info["tokenizer_fingerprint"])
    train_set = GeneratorDataModule(**datamodule_kwargs).dataset("all")
    if len(train_set) == 0:
        raise typer.BadParameter(f"no tokenized shapes in {root}", param_hint="--tokens")
    class_names = train_set.class_names if cond_type == "class" else None

    pl.seed_everything(merged(TRAINING_DEFAULTS, train_cfg)["seed"], workers=True, verbose=False)  # also the init
    module = GeneratorModule(model_cfg, train_cfg, tokenizer=tok, class_names=class_names)
    del tok
    if init_from is not None:
        _warm_start(module.model, init_from, info["tokenizer_fingerprint"], class_names)
        typer.echo(f"initialised from {init_from}")
    tcfg = module.cfg
    datamodule = GeneratorDataModule(**datamodule_kwargs, class_names=class_names, seed=tcfg["seed"],
                                     max_steps=tcfg["max_steps"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {**cfg, "model": model_cfg, "training": tcfg, "data": data_cfg, "tokenizer": str(tokenizer_ref),
         "class_names": class_names}, sort_keys=False))
    n_params = module.model.num_parameters(trainable_only=True)
    typer.echo(f"generator: {n_params / 1e6:.2f}M trainable parameters, cond_type={cond_type}, "
               f"{len(train_set)} shapes, {module.model.num_tokens} tokens per shape")
    dev = opts.parse_devices(devices)
    export = ExportModel(run_dir / "model", metadata={"config": str(config), "tokens": str(root)},
                         should_export=lambda t: not (tcfg.get("stop_at_step") and t.global_step < tcfg["max_steps"]))
    trainer = build_trainer(run_dir, tcfg, devices=dev, num_nodes=num_nodes, strategy=strategy,
                            accelerator=accelerator, precision=precision, block_types=(Block,), progress=progress,
                            extra_callbacks=[export],
                            activation_checkpointing=plan_activation_checkpointing(module.model, tcfg, strategy),
                            find_unused_parameters=module.find_unused_parameters)
    ckpt = resume_path(run_dir, None if resume == "none" else resume)
    if ckpt:
        typer.echo(f"resuming from {ckpt}")
        keep_csv_history(trainer)  # a fresh run starts a fresh metrics.csv
    # our own checkpoints (they hold numpy RNG state, which weights_only loading rejects)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
    if trainer.global_rank == 0 and export.path is None:
        typer.echo(f"stopped at step {trainer.global_step} of {tcfg['max_steps']}; rerun to resume")
    elif trainer.global_rank == 0:
        typer.echo(f"trained {trainer.global_step} steps; model saved to {export.path}")


def _warm_start(model, init_from: str, fingerprint: str, class_names: list[str] | None) -> None:
    """Copy a trained generator's weights into ``model``; refuse one made for other tokens or classes."""
    from vat3d.pretrained import load_generator

    try:
        source = load_generator(init_from)
    except (FileNotFoundError, OSError) as err:
        raise typer.BadParameter(f"generator {init_from!r}: {err}", param_hint="--init-from") from err
    theirs = source.config.get("tokenizer_fingerprint")
    if theirs not in (None, fingerprint):
        raise typer.BadParameter(f"{init_from} was trained on tokens of tokenizer {theirs}, these tokens are of "
                                 f"tokenizer {fingerprint}", param_hint="--init-from")
    if class_names is not None and list(source.config.get("class_names") or []) != list(class_names):
        raise typer.BadParameter(f"{init_from} has other class names than these tokens", param_hint="--init-from")
    try:
        model.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as err:
        raise typer.BadParameter(f"{init_from} does not fit the config's model: {err}",
                                 param_hint="--init-from") from err


def register(app: typer.Typer) -> None:
    app.command("train-generator")(train_generator)
