"""Tokenized shapes for generator training: :class:`TokenDataset` over the files ``vat3d tokenize`` writes
(:mod:`vat3d.data.tokens`), and the condition structure of a batch for each ``cond_type``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vat3d.data.metadata import read_metadata
from vat3d.data.ids import id_rng
from vat3d.data.tokens import check_token_fingerprint, label_of, load_token_file, read_token_info
from vat3d.models.conditioners import canonical_cond_type
# --------------------------------------------------------------------------- the dataset


def split_tokens(tokens_BN, scale_sizes: Sequence[int]) -> list:
    """(B, N) (or (N,)) tokens -> list of per-scale (B, n_k) (or (n_k,)) slices."""
    out, lo = [], 0
    for n in scale_sizes:
        out.append(tokens_BN[..., lo:lo + n])
        lo += n
    if lo != tokens_BN.shape[-1]:
        raise ValueError(f"{tokens_BN.shape[-1]} tokens do not match scale sizes summing to {lo}")
    return out


class TokenDataset:
    """Tokenized shapes (status "done") for generator training.

    Args:
        root: the folder written by ``vat3d tokenize``.
        split: "train", "val" or "all" (by a hash of the id, :func:`vat3d.data.dataset.split_of`).
        val_fraction: share of ids in the validation split.
        seed: base seed of the per-item view choice.
        images: load one rendered view per item (for image conditioning).
        tokenizer_fingerprint: refuse (:class:`TokenizerMismatchError`) tokens of another tokenizer.
        class_names: the class vocabulary (default: the sorted labels of all tokenized shapes, over
            both splits, so train and val agree).
        ids: restrict to these ids (after the split).

    Items: ``tokens`` (N,) int64, ``indices`` (list of (n_k,) int64 per scale), ``caption`` (str),
    ``label`` (int, index into ``class_names``), ``class`` (str), ``id`` and, with ``images``,
    ``image`` (3, H, W) float32 in [0, 1] and ``view`` (int). The view is drawn from
    ``(seed, id)`` when an item seed is given (:meth:`item`), else from ``(dataset seed, epoch,
    id)`` (the epoch is ignored for "val"). Collates with the default DataLoader collate.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *, val_fraction: float = 0.05, seed: int = 0,
                 images: bool = True, tokenizer_fingerprint: str | None = None,
                 class_names: Sequence[str] | None = None, ids: Sequence[str] | None = None):
        from vat3d.data.dataset import split_of

        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be train, val or all, got {split!r}")
        self.root, self.split, self.seed, self.epoch = Path(root), split, int(seed), 0
        self.info = (check_token_fingerprint(root, tokenizer_fingerprint) if tokenizer_fingerprint
                     else read_token_info(root))
        self.scale_sizes = [int(n) for n in self.info["scale_sizes"]]
        all_rows = [r for r in read_metadata(self.root, status="done")
                    if r.get("tokenizer_fingerprint", self.info["tokenizer_fingerprint"])
                    == self.info["tokenizer_fingerprint"]]
        self.class_names = list(class_names) if class_names is not None else sorted({label_of(r) for r in all_rows})
        self._class_to_id = {name: i for i, name in enumerate(self.class_names)}
        rows = all_rows if split == "all" else [r for r in all_rows if split_of(r["id"], val_fraction) == split]
        if ids is not None:
            wanted = set(ids)
            rows = [r for r in rows if r["id"] in wanted]
        self.rows = rows
        self.images = images
        if images and rows and min(int(r.get("num_views", 0)) for r in rows) < 1:
            raise ValueError(f"some tokenized shapes in {root} have no rendered views: tokenize with num_views >= 1 "
                             "or train without image conditioning")

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index)

    def label(self, row: dict) -> int:
        name = label_of(row)
        if name not in self._class_to_id:
            raise KeyError(f"class {name!r} of {row['id']} is not among the class names {self.class_names}")
        return self._class_to_id[name]

    def item(self, index: int, seed: int | None = None) -> dict[str, Any]:
        import torch

        row = self.rows[index]
        if seed is not None:
            rng = id_rng(seed, row["id"])
        else:
            rng = id_rng(self.seed, row["id"], 0 if self.split == "val" else self.epoch)
        view = int(rng.integers(0, int(row.get("num_views", 0)))) if self.images else -1
        data = load_token_file(self.root / row["file"], views=[view] if self.images else ())
        if data["scale_sizes"] != self.scale_sizes:
            raise ValueError(f"{row['file']}: scale sizes {data['scale_sizes']} differ from {self.scale_sizes}")
        tokens_N = torch.from_numpy(data["tokens"])
        out: dict[str, Any] = {
            "tokens": tokens_N,
            "indices": split_tokens(tokens_N, self.scale_sizes),
            "caption": data["caption"],
            "label": self.label(row),
            "class": label_of(row),
            "id": row["id"],
        }
        if self.images:
            image_HW3 = data["images"][0]
            out["image"] = torch.from_numpy(np.ascontiguousarray(image_HW3.transpose(2, 0, 1))).float() / 255.0
            out["view"] = view
        return out


def batch_conditions(batch: dict, cond_type: str) -> Any:
    """The generator's conditions for a collated :class:`TokenDataset` batch."""
    if cond_type == "none":
        return None
    if cond_type == "class":
        return batch["label"]
    if cond_type == "text":
        return list(batch["caption"])
    if cond_type == "image":
        return batch["image"]
    if canonical_cond_type(cond_type) == "text+image":
        return {"text": list(batch["caption"]), "image": batch["image"]}
    raise ValueError(f"unknown cond_type {cond_type!r}")
