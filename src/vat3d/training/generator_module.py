"""Lightning training of the next-scale generator on token data (``vat3d tokenize`` output).

Teacher-forced cross-entropy over all token positions (:meth:`NextScaleGenerator.loss`), with the
generator's condition dropout (and, for ``cond_type="text+image"``, per-sample modality dropout).
Validation logs ``val/loss`` (all positions), ``val/loss_last`` (the last scale),
``val/accuracy``, ``val/accuracy_last`` and ``val/loss_sNN`` per scale, to TensorBoard
(``RUN_DIR/tb``) and CSV (``RUN_DIR/csv/metrics.csv``). The same :class:`StepBatchSampler` as the
tokenizer's training makes resumed runs see exactly the batches they would have seen, and the
training randomness (condition and modality dropout, attention/MLP dropout) of each step is seeded
by ``(seed, step, rank)``, so an interrupted and resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vat3d.data.token_dataset import TokenDataset, batch_conditions
from vat3d.models.conditioners import canonical_cond_type
from vat3d.models.generator import NextScaleGenerator
from vat3d.training.common import build_optimizer, merged, rng_state, seeded_step, set_rng_state, weighted_means
from vat3d.training.distributed import StrategyAwareModule
from vat3d.training.batches import StepDataModule

TRAINING_DEFAULTS = {
    "max_steps": 1000, "max_time": None, "lr": 3e-4, "weight_decay": 0.05, "betas": [0.9, 0.95],
    "warmup_steps": 100, "min_lr_ratio": 0.1, "grad_clip": 1.0, "precision": None,
    "val_every_n_steps": 250, "limit_val_batches": 1.0, "ckpt_every_n_steps": 250, "log_every_n_steps": 10,
    "seed": 0, "deterministic": False, "activation_checkpointing": False, "keep_all_ckpts": False,
    "stop_at_step": None,
}
DATA_DEFAULTS = {
    "root": None, "batch_size": 32, "num_workers": 2, "val_fraction": 0.05, "val_items": 256,
}
IMAGE_COND_TYPES = ("image", "text+image")


def conditioner_kwargs_for(cond_type: str, kwargs: dict | None) -> dict | None:
    """Adapt text+image style ``conditioner_kwargs`` (sections ``text``, ``image``, ``modality_probs``)
    to another ``cond_type``, so ``--set model.cond_type=text`` works with any config: "text" takes
    the ``text`` section, "image" the ``image`` section, "class" and "none" none of them."""
    cond_type = canonical_cond_type(cond_type)
    if not kwargs or cond_type == "text+image":
        return kwargs
    sectioned = {"text", "image", "modality_probs"} & set(kwargs)
    if not sectioned:
        return kwargs
    if cond_type in ("text", "image"):
        return dict(kwargs.get(cond_type) or {})
    return None


class GeneratorDataModule(StepDataModule):
    """Train/val :class:`TokenDataset` loaders; training batches come from a step-indexed sampler.

    Args:
        root: the ``vat3d tokenize`` folder.
        cond_type: decides whether rendered views are loaded (image conditioning).
        tokenizer_fingerprint: refuse tokens made by another tokenizer.
        class_names: the class vocabulary (default: all labels of the data).
        batch_size: global batch per device.
        num_workers: DataLoader workers.
        val_fraction: share of ids held out (hash of id).
        val_items: validation items (the first ones of the val split; the train split on tiny data).
        seed: sampler and view-choice seed.
        max_steps: steps the sampler yields batches for.
    """

    def __init__(self, root: str, *, cond_type: str = "class", tokenizer_fingerprint: str | None = None,
                 class_names: list[str] | None = None, batch_size: int = 32, num_workers: int = 2,
                 val_fraction: float = 0.05, val_items: int = 256, seed: int = 0, max_steps: int = 1000):
        super().__init__()
        self.root, self.seed, self.max_steps = root, seed, max_steps
        self.images = canonical_cond_type(cond_type) in IMAGE_COND_TYPES
        self.fingerprint, self.class_names = tokenizer_fingerprint, class_names
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_fraction, self.val_items = val_fraction, val_items

    def dataset(self, split: str) -> TokenDataset:
        return TokenDataset(self.root, split, val_fraction=self.val_fraction, seed=self.seed, images=self.images,
                            tokenizer_fingerprint=self.fingerprint, class_names=self.class_names)


class GeneratorModule(StrategyAwareModule):
    """The generator and its training / validation steps.

    Args:
        model: :class:`NextScaleGenerator` keyword arguments (width, depth, cond_type, ...).
        training: options over :data:`TRAINING_DEFAULTS`.
        tokenizer: the tokenizer whose tokens are modelled (its quantizer is copied into the
            generator; not kept). None builds the generator from ``model`` alone (it must then
            hold the quantizer keys; a checkpoint restores the weights).
        class_names: class vocabulary for ``cond_type="class"``.
    """

    # every trainable parameter is in every step's graph (condition dropout and modality dropout mix
    # the null tokens in with torch.where; the quantizer copy is frozen)
    find_unused_parameters = False

    def __init__(self, model: dict, training: dict | None = None, tokenizer: torch.nn.Module | None = None,
                 class_names: list[str] | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.cfg = merged(TRAINING_DEFAULTS, training)
        kwargs = dict(model)
        kwargs["conditioner_kwargs"] = conditioner_kwargs_for(kwargs.get("cond_type", "class"),
                                                              kwargs.get("conditioner_kwargs"))
        if kwargs.get("cond_type", "class") == "class" and class_names:
            kwargs["class_names"], kwargs["num_classes"] = list(class_names), len(class_names)
        self.model = (NextScaleGenerator.from_tokenizer(tokenizer, **kwargs) if tokenizer is not None
                      else NextScaleGenerator(**kwargs))
        self.cond_type = self.model.config["cond_type"]
        self._val: list[dict] = []
        self._rng_to_restore = None

    def _step(self, batch: dict) -> dict[str, torch.Tensor]:
        indices = [t.long() for t in batch["indices"]]
        return self.model.loss(indices, batch_conditions(batch, self.cond_type))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        with seeded_step(self.cfg["seed"], self.global_step, self.global_rank, self.device):
            out = self._step(batch)
        log = {"train/loss": out["loss"], "train/accuracy": out["accuracy"], "train/loss_last": out["scale_loss"][-1],
               "train/accuracy_last": out["scale_accuracy"][-1]}
        self.log_dict(log, prog_bar=False, sync_dist=False)
        self.log("loss", out["loss"], prog_bar=True, logger=False)
        self.log("acc", out["accuracy"], prog_bar=True, logger=False)
        return out["loss"]

    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self._step(batch)
        row: dict[str, Any] = {"n": batch["tokens"].shape[0], "loss": float(out["loss"]),
                               "accuracy": float(out["accuracy"])}
        for k, (loss_k, acc_k) in enumerate(zip(out["scale_loss"].tolist(), out["scale_accuracy"].tolist())):
            row[f"loss_s{k + 1:02d}"], row[f"accuracy_s{k + 1:02d}"] = loss_k, acc_k
        K = len(out["scale_loss"])
        row["loss_last"], row["accuracy_last"] = row[f"loss_s{K:02d}"], row[f"accuracy_s{K:02d}"]
        self._val.append(row)

    def on_validation_epoch_end(self) -> None:
        rows, self._val = self._val, []
        if not rows:
            return
        metrics = {f"val/{k}": v for k, v in weighted_means(rows).items()}
        self.log_dict(metrics, sync_dist=True)
        self.log("val_loss", metrics["val/loss"], prog_bar=True, logger=False, sync_dist=True)

    def configure_optimizers(self):
        return build_optimizer(self.model, self.cfg, precision=str(getattr(self._trainer, "precision", "32")))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vat3d_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("vat3d_rng")

    def on_train_start(self) -> None:
        set_rng_state(self._rng_to_restore)
        self._rng_to_restore = None

    def on_fit_start(self) -> None:
        # caption embeddings before the first step (on the training device), not inside training steps
        from vat3d.models.conditioners import TextConditioner

        text = [m for m in self.model.modules() if isinstance(m, TextConditioner)]
        datamodule = getattr(self.trainer, "datamodule", None)
        if not text or datamodule is None:
            return
        captions = [r.get("caption") or "" for split in ("train", "val") for r in datamodule.dataset(split).rows]
        for conditioner in text:
            conditioner.warm_cache(captions)

    def export(self, directory: str | Path, metadata: dict | None = None) -> Path:
        return self.model.save_pretrained(directory, metadata=metadata)
