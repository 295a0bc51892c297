"""A callback that writes a PNG of decoded meshes (ground truth points | each few scales) at validation."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch


class MeshPreview(pl.Callback):
    def __init__(self, directory: str | Path, every_n_val: int = 1, num_shapes: int = 2, resolution: int = 64):
        self.directory, self.every_n_val = Path(directory), max(1, every_n_val)
        self.num_shapes, self.resolution = num_shapes, resolution
        self._count = 0

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._count += 1
        if (self._count - 1) % self.every_n_val:
            return
        from vat3d.training.distributed import model_on_rank_zero

        model = model_on_rank_zero(trainer, pl_module)  # every rank takes part (FSDP gathers the weights)
        if model is None:
            return
        was_training = model.training
        model.eval()
        try:
            self._write(trainer, pl_module, model)
        except Exception as error:  # a preview must never stop training
            pl_module.print(f"mesh preview skipped: {type(error).__name__}: {error}")
        finally:
            model.train(was_training)

    def _write(self, trainer: pl.Trainer, pl_module, model) -> None:
        from vat3d.renderers import save_sheet
        from vat3d.geometry.marching import extract_surface
        from vat3d.models.tokenizer import TokenField

        device = next(model.parameters()).device
        batch = next(iter(trainer.val_dataloaders))
        batch = {k: (v[: self.num_shapes].to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        rows, labels = [], []
        quantized = bool(model.quantizer.initialized) and pl_module.quantizing()
        for i in range(batch["surface_points"].shape[0]):
            pts, nrm = batch["surface_points"][i:i + 1], batch["surface_normals"][i:i + 1]
            if quantized:
                indices = model.encode(pts, nrm)
                K = len(indices)
                picks = sorted({1, max(1, K // 3), max(1, 2 * K // 3), K})
                cells = [extract_surface(model.occupancy_fn(list(indices[:k])), resolution=self.resolution)
                         for k in picks]
                cols = [f"{k} scales" for k in picks]
            else:  # the field of the continuous latent: points go to the planes' device (TokenField)
                planes = model.decoder.planes(model.posterior(pts, nrm)["z"])
                cells = [extract_surface(TokenField(model.decoder, planes), resolution=self.resolution)]
                cols = ["continuous"]
            rows.append(cells)
            labels.append(str(batch.get("id", [""] * 99)[i]))
        self.directory.mkdir(parents=True, exist_ok=True)
        save_sheet(self.directory / f"step{trainer.global_step:08d}.png", rows, row_labels=labels, col_labels=cols)
