"""Lightning training of the VAT tokenizer.

Two phases as in the paper: the continuous latent first (the decoder sees z), then, from
``quantize_start_step``, the multi-scale quantizer (its codebook initialised by k-means on
latents collected during the last continuous steps).

Loss = BCE(volume) + near_weight * BCE(near-surface) + kl_weight * warm-up * KL + vq_weight * VQ.
"""

from __future__ import annotations

import random
from collections import deque
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from vat3d.models.tokenizer import VATokenizer
from vat3d.training.common import build_optimizer, merged, weighted_means
from vat3d.training.sampling import StepDataModule

TRAINING_DEFAULTS = {
    "max_steps": 1000, "max_time": None, "lr": 3e-4, "weight_decay": 0.05, "betas": [0.9, 0.95],
    "warmup_steps": 100, "min_lr_ratio": 0.1, "grad_clip": 1.0,
    "kl_weight": 1e-3, "kl_warmup_steps": 500, "vq_weight": 1.0, "near_weight": 1.0,
    "quantize_start_step": 500, "kmeans_tokens": 65536, "kmeans_iters": 10, "prefix_prob": 0.1,
    "precision": None, "val_every_n_steps": 250, "limit_val_batches": 1.0, "ckpt_every_n_steps": 250,
    "log_every_n_steps": 10, "image_every_n_val": 1, "seed": 0, "deterministic": False, "stop_at_step": None,
    "activation_checkpointing": False, "keep_all_ckpts": False,
}
DATA_DEFAULTS = {
    "root": None, "num_surface": 2048, "num_volume": 2048, "num_near": 2048, "batch_size": 8,
    "num_workers": 2, "val_fraction": 0.05, "val_items": 64,
}


def binary_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of two boolean tensors along the last axis, averaged over the batch (1 when both empty)."""
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).mean()


class TokenizerDataModule(StepDataModule):
    def __init__(self, root: str, *, num_surface: int = 2048, num_volume: int = 2048, num_near: int = 2048,
                 batch_size: int = 8, num_workers: int = 2, val_fraction: float = 0.05, val_items: int = 64,
                 seed: int = 0, max_steps: int = 1000):
        super().__init__()
        self.root, self.seed, self.max_steps = root, seed, max_steps
        self.counts = {"num_surface": num_surface, "num_volume": num_volume, "num_near": num_near}
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_fraction, self.val_items = val_fraction, val_items

    def dataset(self, split: str):
        from vat3d.data.dataset import PreparedShapeDataset

        return PreparedShapeDataset(self.root, split=split, val_fraction=self.val_fraction, seed=self.seed,
                                    **self.counts)


class TokenizerModule(pl.LightningModule):
    def __init__(self, model: dict, training: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = merged(TRAINING_DEFAULTS, training)
        self.model = VATokenizer(**model)
        self._latent_pool: deque[torch.Tensor] = deque()
        self._pool_tokens = 0
        self._val: list[dict] = []

    # ---- helpers ----
    def quantizing(self) -> bool:
        return self.global_step >= self.cfg["quantize_start_step"]

    def _remember_latents(self, z_BMC: torch.Tensor) -> None:
        sample = z_BMC.detach().float().cpu()
        self._latent_pool.append(sample)
        self._pool_tokens += sample.shape[0] * sample.shape[1]
        while self._pool_tokens - self._latent_pool[0].shape[0] * self._latent_pool[0].shape[1] >= \
                self.cfg["kmeans_tokens"]:
            old = self._latent_pool.popleft()
            self._pool_tokens -= old.shape[0] * old.shape[1]

    def _maybe_init_codebook(self, batch: dict) -> None:
        quantizer = self.model.quantizer
        if bool(quantizer.initialized):
            return
        with torch.no_grad():
            z = self.model.posterior(batch["surface_points"], batch["surface_normals"], sample=True)["z"]
        pool = torch.cat([*self._latent_pool, z.float().cpu()])
        quantizer.kmeans_init(pool.to(z.device), iters=self.cfg["kmeans_iters"], seed=self.cfg["seed"])
        self._latent_pool.clear()
        self._pool_tokens = 0
        self.print(f"step {self.global_step}: quantization on; codebook k-means initialised on "
                   f"{pool.shape[0] * pool.shape[1]} latent tokens")

    def _losses(self, batch: dict, quantize: bool, num_scales: int | None = None) -> dict:
        nv = batch["volume_points"].shape[1]
        queries = torch.cat([batch["volume_points"], batch["near_points"]], dim=1)
        out = self.model(batch["surface_points"], batch["surface_normals"], queries, quantize=quantize,
                         num_scales=num_scales)
        logits = out["logits"].float()
        out["vol_logits"], out["near_logits"] = logits[:, :nv], logits[:, nv:]
        out["bce_vol"] = F.binary_cross_entropy_with_logits(out["vol_logits"], batch["volume_labels"])
        out["bce_near"] = F.binary_cross_entropy_with_logits(out["near_logits"], batch["near_labels"])
        return out

    # ---- training ----
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cfg, step = self.cfg, self.global_step
        quantize = self.quantizing()
        num_scales = None
        if quantize:
            self._maybe_init_codebook(batch)
            rng = random.Random(cfg["seed"] * 1_000_003 + step)  # same choice on every rank
            K = self.model.quantizer.num_scales
            if K > 1 and rng.random() < cfg["prefix_prob"]:
                num_scales = rng.randint(1, K - 1)
        out = self._losses(batch, quantize, num_scales)
        if not quantize:
            self._remember_latents(out["mean"])
        kl_scale = min(1.0, (step + 1) / max(1, cfg["kl_warmup_steps"]))
        loss = (out["bce_vol"] + cfg["near_weight"] * out["bce_near"]
                + cfg["kl_weight"] * kl_scale * out["kl"] + cfg["vq_weight"] * out["vq_loss"])
        with torch.no_grad():
            vol_iou = binary_iou(out["vol_logits"] > 0, batch["volume_labels"] > 0.5)
            near_iou = binary_iou(out["near_logits"] > 0, batch["near_labels"] > 0.5)
        log = {"train/loss": loss, "train/bce_vol": out["bce_vol"], "train/bce_near": out["bce_near"],
               "train/kl": out["kl"], "train/vq": out["vq_loss"], "train/vol_iou": vol_iou,
               "train/near_iou": near_iou, "train/quantizing": float(quantize)}
        if quantize and num_scales is None:
            for k, (u, p) in enumerate(zip(out["usage"], out["perplexity"])):
                log[f"codebook/usage_s{k + 1:02d}"] = u
                log[f"codebook/perplexity_s{k + 1:02d}"] = p
        self.log_dict(log, prog_bar=False, sync_dist=False)
        self.log("loss", loss, prog_bar=True, logger=False)
        self.log("iou", vol_iou, prog_bar=True, logger=False)
        return loss

    # ---- validation ----
    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        quantize = self.quantizing() and bool(self.model.quantizer.initialized)
        vol_t, near_t = batch["volume_labels"] > 0.5, batch["near_labels"] > 0.5
        model = self.model
        post = model.posterior(batch["surface_points"], batch["surface_normals"], sample=False)
        row: dict[str, float] = {"n": batch["volume_points"].shape[0]}
        queries = torch.cat([batch["volume_points"], batch["near_points"]], dim=1)
        nv = batch["volume_points"].shape[1]
        if not quantize:
            logits = model.decoder.query(model.decoder.planes(post["z"]), queries)
            row["vol_iou"] = float(binary_iou(logits[:, :nv] > 0, vol_t))
            row["near_iou"] = float(binary_iou(logits[:, nv:] > 0, near_t))
        else:
            _, info = model.quantizer(post["z"])
            indices = info["indices"]
            K = len(indices)
            occ = []
            for k in range(1, K + 1):
                logits = model.decode_tokens(indices[:k], queries)
                occ.append(logits > 0)
                row[f"vol_iou_s{k:02d}"] = float(binary_iou(occ[-1][:, :nv], vol_t))
                row[f"near_iou_s{k:02d}"] = float(binary_iou(occ[-1][:, nv:], near_t))
            row["vol_iou"], row["near_iou"] = row[f"vol_iou_s{K:02d}"], row[f"near_iou_s{K:02d}"]
            cross = [float(binary_iou(occ[k - 1][:, :nv], occ[-1][:, :nv])) for k in range(2, K)]
            row["cross_scale_iou"] = sum(cross) / len(cross) if cross else 1.0
            for k, (u, p) in enumerate(zip(info["usage"], info["perplexity"])):
                row[f"usage_s{k + 1:02d}"], row[f"perplexity_s{k + 1:02d}"] = u, p
        self._val.append(row)

    def on_validation_epoch_end(self) -> None:
        rows, self._val = self._val, []
        if not rows:
            return
        metrics = {f"val/{k}": v for k, v in weighted_means(rows).items()}
        self.log_dict(metrics, sync_dist=True)
        self.log("val_iou", metrics["val/vol_iou"], prog_bar=True, logger=False, sync_dist=True)

    # ---- optimisation and checkpoints ----
    def configure_optimizers(self):
        return build_optimizer(self.model, self.cfg)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vat3d_latent_pool"] = list(self._latent_pool)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._latent_pool = deque(checkpoint.get("vat3d_latent_pool", []))
        self._pool_tokens = sum(t.shape[0] * t.shape[1] for t in self._latent_pool)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Each step's randomness (posterior noise, dead-code restarts) is seeded by (seed, step, rank):
        # a resumed run repeats an uninterrupted one exactly, whatever else drew random numbers.
        seed = (self.cfg["seed"] * 1_000_003 + self.global_step * 7919 + self.global_rank) % 2**63
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def export(self, directory: str | Path, metadata: dict | None = None) -> Path:
        return self.model.save_pretrained(directory, metadata=metadata)
