"""PyTorch access to a prepared dataset (see :mod:`vat3d.data.prepare` for the format).

Each item is a random subset of one shape's stored points. Randomness is a pure function
of ``(seed, epoch, id)``: the same item is identical however the loader is set up, and
training sees a different subset each epoch after :meth:`PreparedShapeDataset.set_epoch`.
The validation split ignores the epoch (always the same subset). With a DataLoader that has
``persistent_workers=True`` the workers keep the dataset copy they started with, so call
``set_epoch`` before the loader's first iteration or use non-persistent workers.

The train/val split is a hash of the id (``val`` when ``hash(id) < val_fraction``), so it
is stable when shapes are added or removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vat3d.data.ids import id_rng, id_unit
from vat3d.data.metadata import read_metadata
from vat3d.data.prepare import load_prepared

__all__ = ["PreparedShapeDataset", "load_prepared", "split_of"]

_SPLITS = ("train", "val", "all")


def split_of(item_id: str, val_fraction: float = 0.05) -> str:
    """"val" or "train" for an id: a hash of the id compared with ``val_fraction``."""
    return "val" if id_unit(item_id, "split") < val_fraction else "train"


def _subset(rng: np.random.Generator, total: int, count: int | None) -> np.ndarray:
    """Indices of ``count`` of ``total`` points (all when None; with replacement if short)."""
    if count is None:
        return np.arange(total)
    if count <= total:
        return rng.permutation(total)[:count] if count < total else np.arange(total)
    return rng.integers(0, total, size=count)


class PreparedShapeDataset(Dataset):
    """Prepared shapes (status "done") as dicts of tensors.

    Args:
        root: the folder written by ``vat3d prepare``.
        split: "train", "val" or "all".
        num_surface, num_volume, num_near: points per item (None: all stored points;
            more than stored: drawn with replacement).
        val_fraction: share of ids in the validation split.
        seed: base seed of the per-item subsets.
        ids: restrict to these ids (after the split).

    Items: ``surface_points`` (Ns,3), ``surface_normals`` (Ns,3), ``volume_points`` (Nv,3),
    ``volume_labels`` (Nv,) 0/1, ``near_points`` (Nn,3), ``near_labels`` (Nn,) 0/1,
    ``transform`` (4,) = centre xyz, scale: all float32 tensors; ``id``, ``caption``,
    ``family`` and ``class`` strings ("" when unknown).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        num_surface: int | None = 2048,
        num_volume: int | None = 2048,
        num_near: int | None = 2048,
        val_fraction: float = 0.05,
        seed: int = 0,
        ids: Iterable[str] | None = None,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.num_surface, self.num_volume, self.num_near = num_surface, num_volume, num_near
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.epoch = 0
        rows = read_metadata(self.root, status="done")
        if split != "all":
            rows = [row for row in rows if split_of(row["id"], self.val_fraction) == split]
        if ids is not None:
            wanted = set(ids)
            rows = [row for row in rows if row["id"] in wanted]
        self.rows = rows

    @property
    def ids(self) -> list[str]:
        return [row["id"] for row in self.rows]

    def set_epoch(self, epoch: int) -> None:
        """Draw different subsets in training epoch ``epoch`` (no effect on "val")."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def _rng(self, item_id: str, seed: int | None) -> np.random.Generator:
        if seed is not None:
            return id_rng(seed, item_id, seed_bits=64)
        return id_rng(self.seed, item_id, 0 if self.split == "val" else self.epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index)

    def item(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Item ``index``; its point subsets come from ``seed`` when given (a pure function
        of ``(seed, id)``), otherwise from ``(dataset seed, epoch, id)``."""
        row = self.rows[index]
        data = load_prepared(self.root / row["file"])
        rng = self._rng(row["id"], seed)
        surface = _subset(rng, len(data["surface_points"]), self.num_surface)
        volume = _subset(rng, len(data["volume_points"]), self.num_volume)
        near = _subset(rng, len(data["near_points"]), self.num_near)
        meta = data["meta"]

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

        return {
            "surface_points": tensor(data["surface_points"][surface]),
            "surface_normals": tensor(data["surface_normals"][surface]),
            "volume_points": tensor(data["volume_points"][volume]),
            "volume_labels": tensor(data["volume_labels"][volume]),
            "near_points": tensor(data["near_points"][near]),
            "near_labels": tensor(data["near_labels"][near]),
            "transform": tensor(data["transform"]),
            "id": row["id"],
            "caption": str(meta.get("caption") or row.get("caption") or ""),
            "family": str(meta.get("family") or row.get("family") or ""),
            "class": str(meta.get("class") or row.get("class") or ""),
        }
