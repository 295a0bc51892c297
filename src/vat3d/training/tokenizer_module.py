"""Lightning training of the VAT tokenizer.

Two phases as in the paper: the continuous latent first (the decoder sees z), then, from
``quantize_start_step``, the multi-scale quantizer. Its codebook is initialised by k-means on the
sampled latents z (what the quantizer will see) of the last continuous steps only: the steps that
together hold ``kmeans_tokens`` tokens over all ranks. Rank 0 keeps that pool and runs k-means (on
its device, memory bounded: :meth:`MultiScaleVQ.kmeans_init`); the codebook is broadcast. The pool is in
a checkpoint only when the checkpoint falls inside that window.

Loss = BCE(volume) + near_weight * BCE(near-surface) + kl_weight * warm-up * KL + vq_weight * VQ.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vat3d.models.tokenizer import VATokenizer
from vat3d.training.common import build_optimizer, merged, seeded_step, weighted_means
from vat3d.training.distributed import StrategyAwareModule, full_parameters, is_fsdp
from vat3d.training.batches import StepDataModule

TRAINING_DEFAULTS = {
    "max_steps": 1000, "max_time": None, "lr": 3e-4, "weight_decay": 0.05, "betas": [0.9, 0.95],
    "warmup_steps": 100, "min_lr_ratio": 0.1, "grad_clip": 1.0,
    "kl_weight": 1e-3, "kl_warmup_steps": 500, "vq_weight": 1.0, "near_weight": 1.0,
    "quantize_start_step": 500, "kmeans_tokens": 65536, "kmeans_iters": 10, "prefix_prob": 0.1,
    "precision": None, "val_every_n_steps": 250, "limit_val_batches": 1.0, "ckpt_every_n_steps": 250,
    "log_every_n_steps": 10, "image_every_n_val": 1, "seed": 0, "deterministic": False, "stop_at_step": None,
    "activation_checkpointing": False, "keep_all_ckpts": False, "train_only": None,
}
#: ``training.train_only`` values: the part of the model that trains (the rest is frozen). "decoder": every
#: shape keeps its tokens (a generator trained on them stays valid); "encoder": the encoder and the quantizer
#: learn tokens that this decoder draws better (the encode-time search's gain, amortised).
TRAIN_ONLY = (None, "decoder", "encoder")
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


class TokenizerModule(StrategyAwareModule):
    # the continuous phase leaves the quantizer out of the graph, prefix steps the later refiners
    find_unused_parameters = True

    def __init__(self, model: dict, training: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = merged(TRAINING_DEFAULTS, training)
        self.model = VATokenizer(**model)
        # dead-code restarts are written after the optimiser step, where the parameters are whole
        self.model.quantizer.defer_codebook_writes = True
        if self.cfg["train_only"] not in TRAIN_ONLY:
            raise ValueError(f"training.train_only must be one of {TRAIN_ONLY}, got {self.cfg['train_only']!r}")
        if self.cfg["train_only"] is not None:
            self._freeze_all_but(self.cfg["train_only"])
        self._latent_pool: deque[torch.Tensor] = deque()  # rank 0: sampled z of the last steps, on the CPU
        self._pool_tokens = 0
        self._pool_steps = 0  # steps remembered, on every rank
        self._codebook_ready = False  # mirrors quantizer.initialized without reading the device each step
        self.kmeans_report: dict | None = None  # rank 0: step, pool tokens and seconds of the k-means init
        self._val: list[dict] = []

    def _freeze_all_but(self, part: str) -> None:
        """``decoder``: freeze the encoder and the quantizer (codebook and refiners, no dead-code restarts),
        so every shape keeps exactly the tokens it had. ``encoder``: freeze the decoder."""
        for name, param in self.model.named_parameters():
            param.requires_grad_(name.startswith("decoder.") == (part == "decoder"))
        if part == "decoder":
            self.model.quantizer.dead_code_threshold = 0.0

    # ---- helpers ----
    def quantizing(self) -> bool:
        return self.global_step >= self.cfg["quantize_start_step"]

    def _in_pool_window(self, z_BMC: torch.Tensor) -> bool:
        """Whether this step is one of the last continuous steps whose latents make up the k-means pool."""
        per_step = self.trainer.world_size * z_BMC.shape[0] * z_BMC.shape[1] if self._trainer else z_BMC[..., 0].numel()
        window = math.ceil(self.cfg["kmeans_tokens"] / max(1, per_step))
        return self.global_step >= self.cfg["quantize_start_step"] - window

    def _remember_latents(self, z_BMC: torch.Tensor) -> None:
        """Add this step's sampled latents of every rank to rank 0's pool (a collective on all ranks)."""
        z = z_BMC.detach().float()
        if self._trainer is not None and self.trainer.world_size > 1:
            z = self.all_gather(z).reshape(-1, *z.shape[1:])
        self._pool_steps += 1
        if self.global_rank != 0:
            return
        sample = z.cpu()
        self._latent_pool.append(sample)
        self._pool_tokens += sample.shape[0] * sample.shape[1]
        while self._pool_tokens - self._latent_pool[0].shape[0] * self._latent_pool[0].shape[1] >= \
                self.cfg["kmeans_tokens"]:
            old = self._latent_pool.popleft()
            self._pool_tokens -= old.shape[0] * old.shape[1]

    def _init_codebook(self) -> None:
        """k-means on rank 0's pool, outside the forward, on the full parameters; broadcast to every rank."""
        quantizer = self.model.quantizer
        start = time.perf_counter()
        pool = torch.cat(list(self._latent_pool)) if self.global_rank == 0 else None
        self._latent_pool.clear()
        self._pool_tokens = 0
        with full_parameters(self._trainer, quantizer):
            quantizer.kmeans_init(pool, iters=self.cfg["kmeans_iters"], seed=self.cfg["seed"])
        self._pool_steps = 0
        self._codebook_ready = True
        tokens = 0 if pool is None else pool.shape[0] * pool.shape[1]
        self.kmeans_report = {"step": self.global_step, "tokens": tokens, "seconds": time.perf_counter() - start}
        self.print(f"step {self.global_step}: quantization on; codebook k-means initialised on "
                   f"{tokens} latent tokens")

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
        with seeded_step(self.cfg["seed"], self.global_step, self.global_rank, self.device):
            return self._training_step(batch)

    def _training_step(self, batch: dict) -> torch.Tensor:
        cfg, step = self.cfg, self.global_step
        # quantized once the codebook is initialised (k-means in on_train_batch_start; a run that reaches
        # the switch with no pool, e.g. quantize_start_step=0, trains one more step continuously for one)
        quantize = self.quantizing() and self._codebook_ready
        num_scales = None
        if quantize:
            rng = random.Random(cfg["seed"] * 1_000_003 + step)  # same choice on every rank
            K = self.model.quantizer.num_scales
            if K > 1 and rng.random() < cfg["prefix_prob"]:
                num_scales = rng.randint(1, K - 1)
        out = self._losses(batch, quantize, num_scales)
        if not quantize and (self.quantizing() or self._in_pool_window(out["z"])):
            self._remember_latents(out["z"])
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

    def after_optimizer_step(self) -> None:
        quantizer = self.model.quantizer
        if not quantizer.has_pending_codebook_update():
            return
        if is_fsdp(self._trainer) and not bool(quantizer._pending_rows[0].any()):
            quantizer._pending_rows = None  # no dead code: spare the all-gather of the full parameters
            return
        with full_parameters(self._trainer, quantizer):
            quantizer.apply_pending_codebook_update()

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
                row[f"usage_s{k + 1:02d}"], row[f"perplexity_s{k + 1:02d}"] = float(u), float(p)
        self._val.append(row)

    def on_validation_epoch_end(self) -> None:
        rows, self._val = self._val, []
        if not rows:
            return
        metrics = {f"val/{k}": v for k, v in weighted_means(rows).items()}
        if bool(self.model.quantizer.initialized):
            metrics["val/codebook_rank_diff"] = self.codebook_rank_difference()
        self.log_dict(metrics, sync_dist=True)
        self.log("val_iou", metrics["val/vol_iou"], prog_bar=True, logger=False, sync_dist=True)

    @torch.no_grad()
    def codebook_rank_difference(self) -> float:
        """Largest difference between any rank's codebook (and usage statistic) and rank 0's: 0 when
        k-means and the dead-code restarts kept every rank's quantizer identical (a collective)."""
        quantizer = self.model.quantizer
        with full_parameters(self._trainer, quantizer, writeback=False):
            state = torch.cat([quantizer.codebook.weight.float().flatten(), quantizer.code_usage.float()])
        if self._trainer is None or self.trainer.world_size == 1:
            return 0.0
        gathered = self.all_gather(state)
        return float((gathered - gathered[0]).abs().max())

    # ---- optimisation and checkpoints ----
    def configure_optimizers(self):
        return build_optimizer(self.model, self.cfg, precision=str(getattr(self._trainer, "precision", "32")))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._pool_steps:  # only inside the window before the switch; rank 0's checkpoint is the one saved
            checkpoint["vat3d_latent_pool"] = list(self._latent_pool)
            checkpoint["vat3d_pool_steps"] = self._pool_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        pool = checkpoint.get("vat3d_latent_pool", [])
        self._latent_pool = deque(pool) if self.global_rank == 0 else deque()
        self._pool_tokens = sum(t.shape[0] * t.shape[1] for t in self._latent_pool)
        self._pool_steps = checkpoint.get("vat3d_pool_steps", len(pool))

    def on_train_start(self) -> None:
        self._codebook_ready = bool(self.model.quantizer.initialized)  # restored or warm-started
        if self._codebook_ready:  # e.g. the per-step pool older checkpoints carried: not needed any more
            self._latent_pool.clear()
            self._pool_tokens = self._pool_steps = 0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.quantizing() and not self._codebook_ready and self._pool_steps > 0:
            self._init_codebook()

    def export(self, directory: str | Path, metadata: dict | None = None) -> Path:
        return self.model.save_pretrained(directory, metadata=metadata)
