"""What the tokenizer and generator trainings share: configs, optimizer, schedule,
the Lightning ``Trainer`` (checkpoints, exact resume, logs, multi-GPU), export."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vat3d.models.modules import has_native_bf16

# ---------------------------------------------------------------------------------------------
# configs


def config_path(name_or_path: str | os.PathLike, kind: str) -> Path:
    """``tiny``/``small``/... -> the packaged ``configs/{kind}_{name}.yaml``; a path as is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        return path
    packaged = resources.files("vat3d") / "configs" / f"{kind}_{name_or_path}.yaml"
    if not packaged.is_file():
        names = sorted(p.name[len(kind) + 1:-5] for p in (resources.files("vat3d") / "configs").iterdir()
                       if p.name.startswith(kind + "_"))
        raise FileNotFoundError(f"no {kind} config {name_or_path!r}; packaged ones: {', '.join(names)}")
    return Path(str(packaged))


def load_config(name_or_path: str | os.PathLike, kind: str, overrides: list[str] | None = None) -> dict:
    """Load a YAML config and apply ``section.key=value`` overrides (values parsed as YAML)."""
    config = yaml.safe_load(config_path(name_or_path, kind).read_text()) or {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        key, value = item.split("=", 1)
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(value)
    return config


def _parse_value(text: str):
    """A ``--set`` value as YAML, except that numbers YAML 1.1 reads as strings (``3e-3``) become floats."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def weighted_means(rows: list[dict], weight: str = "n") -> dict[str, float]:
    """Mean of every metric over validation rows, weighted by each row's ``weight`` (its batch size);
    a metric missing from a row counts as 0 there."""
    total = sum(r[weight] for r in rows)
    keys = sorted({k for r in rows for k in r if k != weight})
    return {k: sum(r.get(k, 0.0) * r[weight] for r in rows) / total for k in keys}


def merged(defaults: dict, given: dict | None) -> dict:
    out = copy.deepcopy(defaults)
    for key, value in (given or {}).items():
        if key not in defaults:
            raise KeyError(f"unknown training option {key!r}; known: {', '.join(sorted(defaults))}")
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# optimisation


NO_DECAY_KEYWORDS = ("pos", "latents", "queries", "embed", "codebook", "null")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on the weights of linear and conv layers; none on biases, norms, embeddings
    and learned tokens (named so). Decided by the owning module's type and the parameter's name, never
    by its shape: FSDP hands the optimiser flat 1-D shards of every parameter."""
    decay, no_decay, seen = [], [], set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{name}" if module_name else name
            layer = isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
            skip = not (layer and name == "weight") or any(k in full_name for k in NO_DECAY_KEYWORDS)
            (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine down to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: dict, precision: str = "32") -> dict:
    # The fused kernel updates every tensor in one pass: the per-tensor loop of the default CPU
    # implementation was ~15% of a small tokenizer's step in the profile (sqrt/mul_/add_ per tensor).
    # Lightning refuses to clip the gradients of a fused optimizer under mixed precision (it would
    # unscale them itself), so mixed-precision runs take the plain kernel.
    params = [p for p in model.parameters() if p.requires_grad]
    fused = (bool(params) and "mixed" not in str(precision)
             and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params))
    opt = torch.optim.AdamW(param_groups(model, cfg["weight_decay"]), lr=cfg["lr"], betas=tuple(cfg["betas"]),
                            fused=fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, cfg["warmup_steps"], cfg["max_steps"], cfg["min_lr_ratio"]))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ---------------------------------------------------------------------------------------------
# random state (saved in checkpoints so a resumed run continues exactly)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict | None) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


# ---------------------------------------------------------------------------------------------
# the Trainer


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    return has_native_bf16("cpu")


def default_precision() -> str:
    """bf16 where the hardware has it: measured ~1.4x faster than fp32 on a CPU with AVX512-BF16, but
    7x slower on an AVX2-only CPU (small tokenizer step: 22 s against 3 s), so fp32 there."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32"


def resolve_precision(*choices: str | None) -> str:
    """The first given precision of ``choices`` (``"auto"`` or None: skip), else the hardware default."""
    for choice in choices:
        if choice not in (None, "auto"):
            return str(choice)
    return default_precision()


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one training step's randomness: a function of (seed, step, rank) only."""
    return ((int(seed) * 1_000_003 + int(step)) * 1_009 + int(rank)) % 2**63


@contextlib.contextmanager
def seeded_step(seed: int, step: int, rank: int, device: "torch.device | str" = "cpu"):
    """Run one step's random draws (posterior noise, dropout of conditions, dead-code restarts) from
    :func:`step_seed`, on forked torch streams (CPU and the step's CUDA device): a resumed run repeats an
    uninterrupted one exactly whatever else drew random numbers, and the global streams are left as they were."""
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(step_seed(seed, step, rank))
        yield


def stop_at_step_callback(step: int):
    """A callback that stops training once ``global_step`` reaches ``step`` (``ModelCheckpoint`` then
    saves ``last.ckpt`` as the epoch ends): a job on a time-limited queue trains in chunks
    (``--stop-at-step``) while the LR schedule follows ``max_steps``."""
    import lightning.pytorch as pl

    class StopAtStep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step >= step:
                trainer.should_stop = True

    return StopAtStep()


def build_trainer(run_dir: str | os.PathLike, cfg: dict, *, devices: Any = "auto", num_nodes: int = 1,
                  strategy: str = "auto", accelerator: str = "auto", precision: str | None = None,
                  block_types: tuple[type, ...] = (), progress: bool = True, extra_callbacks: list | None = None,
                  activation_checkpointing: bool = False, find_unused_parameters: bool = False):
    """A Lightning Trainer with checkpoints every N steps (plus ``last.ckpt`` and a checkpoint
    on crash or Ctrl-C), TensorBoard and CSV logs, and the multi-device flags passed through.

    ``strategy="fsdp"`` shards ``block_types`` as units (and recomputes their activations when
    ``activation_checkpointing``: see :func:`plan_activation_checkpointing`); ``"ddp"`` looks for unused
    parameters only when the module says its graph leaves some out (``find_unused_parameters``)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, OnExceptionCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:08d}", auto_insert_metric_name=False,
                        every_n_train_steps=cfg["ckpt_every_n_steps"], save_top_k=-1 if cfg.get("keep_all_ckpts")
                        else 1, monitor="step", mode="max", save_last=True),
        OnExceptionCheckpoint(dirpath=ckpt_dir, filename="on_exception"),
        LearningRateMonitor(logging_interval="step"),
        *(extra_callbacks or []),
    ]
    if cfg.get("stop_at_step"):
        callbacks.append(stop_at_step_callback(int(cfg["stop_at_step"])))
    if strategy == "fsdp":
        from vat3d.training.distributed import CPUCapableFSDPStrategy

        # use_orig_params: the parameters keep their names and modules (optimizer groups, codebook writes)
        strategy_obj: Any = CPUCapableFSDPStrategy(
            auto_wrap_policy=set(block_types) or None, use_orig_params=True,
            activation_checkpointing_policy=set(block_types) if activation_checkpointing else None)
    elif strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        strategy_obj = DDPStrategy(find_unused_parameters=find_unused_parameters)
    else:
        strategy_obj = strategy
    return pl.Trainer(
        default_root_dir=run_dir,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy_obj,
        precision=resolve_precision(precision, cfg.get("precision")),
        max_steps=cfg["max_steps"],
        max_time=cfg.get("max_time"),
        val_check_interval=cfg["val_every_n_steps"],
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.get("limit_val_batches", 1.0),
        num_sanity_val_steps=0,
        gradient_clip_val=cfg["grad_clip"] or None,
        log_every_n_steps=cfg["log_every_n_steps"],
        callbacks=callbacks,
        logger=[TensorBoardLogger(run_dir, name="tb", version=""), CSVLogger(run_dir, name="csv", version="")],
        enable_progress_bar=progress,
        use_distributed_sampler=False,  # our step-indexed sampler shards by rank itself
        deterministic=cfg.get("deterministic", False),
    )


def plan_activation_checkpointing(model: torch.nn.Module, cfg: dict, strategy: str) -> bool:
    """One kind of activation checkpointing, whichever way it was asked for (``model.gradient_checkpointing``
    in the config or ``training.activation_checkpointing``): under FSDP Lightning's policy wraps the
    blocks and the model's own recomputation is switched off (both at once would recompute twice);
    under any other strategy the model recomputes its blocks itself. Returns whether FSDP's policy is on."""
    wanted = bool(cfg.get("activation_checkpointing")) or bool(getattr(model, "config", {}).get("gradient_checkpointing"))
    fsdp = strategy == "fsdp"
    model.set_gradient_checkpointing(wanted and not fsdp)
    return wanted and fsdp


def resume_path(run_dir: str | os.PathLike, resume: str | None) -> str | None:
    """``auto``: the run's ``last.ckpt`` when present; a path: that checkpoint; None: fresh."""
    if resume is None:
        return None
    if resume == "auto":
        last = Path(run_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"checkpoint {resume} does not exist")
    return resume
