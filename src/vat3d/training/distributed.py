"""What the trainings need to behave the same under every Lightning strategy: one device, DDP and FSDP.

FSDP shards the parameters (each rank holds a slice of flat views between steps) and, with mixed
precision, hands the forward bf16 copies that are freed after it. Three things follow, handled here
once for both trainings:

* parameter writes outside the optimiser (codebook k-means, dead-code restarts) go to the full
  parameters, outside the forward: :func:`full_parameters`;
* gradient clipping by norm needs FSDP's own sharded norm: :class:`StrategyAwareModule`;
* whatever needs the whole model (export, previews) gathers it on every rank and uses it on rank 0:
  :func:`model_on_rank_zero`, :class:`ExportModel`.

Lightning refuses ``FSDPStrategy`` on a CPU accelerator (``accelerator_connector``), though torch's FSDP
runs there with gloo; :class:`CPUCapableFSDPStrategy` is the same strategy without that refusal, so the
FSDP path is tested on CPU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


class CPUCapableFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy``; a subclass so that Lightning's check that FSDP runs on CUDA
    (``type(strategy) is FSDPStrategy``) lets it run on a CPU with gloo too. On a GPU it is the parent
    unchanged; on a CPU it wraps the model as the parent does but names the CPU as FSDP's device
    (the parent passes ``device_id=None`` there, which torch's FSDP refuses without an accelerator)."""

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if self.root_device.type != "cpu" or any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            return super()._setup_model(model)
        from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing

        model = FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                         mixed_precision=self.mixed_precision_config,
                                         sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"),
                                         **self.kwargs)
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model

    # Full state dicts: the parent gathers them with offload_to_cpu=True, which on a CPU device makes
    # torch's FSDP free the tensors it then clones (a segfault); on a CPU there is nothing to offload.
    def _cpu_full_state_dict_context(self):
        from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                    FullStateDictConfig(offload_to_cpu=False, rank0_only=True),
                                    FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True))

    def _cpu_full(self) -> bool:
        return self.root_device.type == "cpu" and self._state_dict_type == "full"

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if not self._cpu_full():
            return super().lightning_module_state_dict()
        with self._cpu_full_state_dict_context():
            return self.model.state_dict()

    def optimizer_state(self, optimizer) -> dict[str, torch.Tensor]:
        if not self._cpu_full():
            return super().optimizer_state(optimizer)
        from lightning.pytorch.core.optimizer import LightningOptimizer
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        with self._cpu_full_state_dict_context():
            state = FSDP.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:  # the parent's standard format
                state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
            return state


def is_fsdp(trainer: pl.Trainer | None) -> bool:
    return trainer is not None and isinstance(trainer.strategy, FSDPStrategy)


def _fsdp_unit_owning(root: nn.Module, module: nn.Module) -> nn.Module:
    """The innermost FSDP unit whose flat parameters hold ``module``'s parameters."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    owner = root
    for unit in FSDP.fsdp_modules(root):
        if any(m is module for m in unit.modules()):
            owner = unit  # fsdp_modules lists outer units first: the last hit is the innermost
    return owner


@contextlib.contextmanager
def full_parameters(trainer: pl.Trainer | None, module: nn.Module, writeback: bool = True) -> Iterator[None]:
    """Inside: ``module``'s parameters are whole and in full precision on every rank, and (``writeback``)
    what is written into them is kept. Under FSDP every rank must enter (an all-gather); elsewhere
    the parameters already are the module's own, and this does nothing."""
    if not is_fsdp(trainer):
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    unit = _fsdp_unit_owning(trainer.strategy.model, module)
    with FSDP.summon_full_params(unit, recurse=False, writeback=writeback):
        yield


def model_on_rank_zero(trainer: pl.Trainer, pl_module: pl.LightningModule, attr: str = "model",
                       device: torch.device | str | None = None) -> nn.Module | None:
    """The whole ``pl_module.<attr>`` (a ``ModelMixin``) on rank 0, None on the other ranks.

    Without sharding that is the module itself. Under FSDP the full state dict is gathered (every rank
    must call this) and loaded into a fresh copy built from the model's config, on ``device``
    (default: the training device).
    """
    model = getattr(pl_module, attr)
    if not is_fsdp(trainer):
        return model if trainer.global_rank == 0 else None
    state = trainer.strategy.lightning_module_state_dict()  # collective; full on rank 0 only
    if trainer.global_rank != 0:
        return None
    prefix = attr + "."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    copy = type(model).from_config(model.config)
    copy.load_state_dict(weights, strict=True)
    return copy.to(pl_module.device if device is None else device).train(model.training)


class ExportModel(pl.Callback):
    """Save the trained model (config.json + model.safetensors) when training ends, on every strategy.

    ``should_export(trainer)`` decides (e.g. not when a run stopped early to be resumed); ``metadata``
    is recorded in the config. Every rank takes part (FSDP gathers the weights); rank 0 writes.
    ``path`` holds the folder on rank 0 after a successful export.
    """

    def __init__(self, directory: str | Path, metadata: dict | None = None,
                 should_export: Callable[[pl.Trainer], bool] = lambda trainer: True):
        self.directory, self.metadata, self.should_export = Path(directory), metadata or {}, should_export
        self.path: Path | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.should_export(trainer):
            return
        model = model_on_rank_zero(trainer, pl_module, device="cpu")
        if model is not None:
            self.path = model.save_pretrained(self.directory, metadata={"steps": trainer.global_step,
                                                                        **self.metadata})
        trainer.strategy.barrier("vat3d-export")


class StrategyAwareModule(pl.LightningModule):
    """The LightningModule base of both trainings: clipping that works under FSDP, and a hook after
    each optimiser step (:meth:`after_optimizer_step`) where parameters can be written whole."""

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val and is_fsdp(self.trainer) and gradient_clip_algorithm in (None, "norm"):
            # the norm of sharded gradients needs every rank's shard: FSDP's own clip_grad_norm_
            # (Lightning's FSDP precision plugin refuses clipping by norm)
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                            gradient_clip_algorithm=gradient_clip_algorithm)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.after_optimizer_step()

    def after_optimizer_step(self) -> None:
        """Called on every rank after each optimiser step, outside the forward (parameters idle)."""
