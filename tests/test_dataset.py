"""The PyTorch dataset over prepared shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vat3d.data import PreparedShapeDataset, load_prepared, make_shape, prepare_dataset, read_metadata
from vat3d.data.dataset import split_of
from vat3d.geometry import compute_occupancy, normalize_mesh

TENSOR_KEYS = {
    "surface_points": (64, 3),
    "surface_normals": (64, 3),
    "volume_points": (128, 3),
    "volume_labels": (128,),
    "near_points": (96, 3),
    "near_labels": (96,),
    "transform": (4,),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    prepare_dataset("procedural:20", root, num_surface=256, num_volume=1024, num_near=1024)
    # a failed shape must not show up in the dataset
    (root / "bad").mkdir()
    (root / "bad" / "empty.obj").write_bytes(b"")
    prepare_dataset(str(root / "bad"), root, num_surface=256, num_volume=1024, num_near=1024)
    return root


def _dataset(root, **kwargs) -> PreparedShapeDataset:
    return PreparedShapeDataset(root, num_surface=64, num_volume=128, num_near=96, **kwargs)


def test_item_keys_shapes_dtypes(prepared):
    dataset = _dataset(prepared, split="all")
    assert len(dataset) == 20
    item = dataset[0]
    assert set(item) == set(TENSOR_KEYS) | {"id", "caption", "family", "class"}
    for key, shape in TENSOR_KEYS.items():
        assert isinstance(item[key], torch.Tensor) and item[key].dtype == torch.float32, key
        assert tuple(item[key].shape) == shape, key
    assert set(torch.unique(item["volume_labels"]).tolist()) <= {0.0, 1.0}
    assert set(torch.unique(item["near_labels"]).tolist()) == {0.0, 1.0}
    assert torch.allclose(item["surface_normals"].norm(dim=1), torch.ones(64), atol=2e-3)
    assert isinstance(item["id"], str) and item["caption"] and item["family"] and item["class"] == item["family"]
    assert item["transform"][3] > 0


def test_split_disjoint_deterministic(prepared):
    train = _dataset(prepared, split="train", val_fraction=0.3)
    val = _dataset(prepared, split="val", val_fraction=0.3)
    assert len(val) > 0 and len(train) > 0
    assert set(train.ids).isdisjoint(val.ids)
    assert sorted(train.ids + val.ids) == sorted(_dataset(prepared, split="all").ids)
    assert _dataset(prepared, split="val", val_fraction=0.3).ids == val.ids
    assert all(split_of(i, 0.3) == "val" for i in val.ids)
    with pytest.raises(ValueError):
        _dataset(prepared, split="test")


def test_reproducible_and_epochs(prepared):
    a, b = _dataset(prepared, split="all", seed=1), _dataset(prepared, split="all", seed=1)
    for key in TENSOR_KEYS:
        assert torch.equal(a[3][key], b[3][key])
    before = a[3]["volume_points"].clone()
    a.set_epoch(1)
    assert not torch.equal(a[3]["volume_points"], before)
    a.set_epoch(0)
    assert torch.equal(a[3]["volume_points"], before)
    assert not torch.equal(_dataset(prepared, split="all", seed=2)[3]["volume_points"], before)
    val = _dataset(prepared, split="val", val_fraction=0.5)
    first = val[0]["near_points"].clone()
    val.set_epoch(5)
    assert torch.equal(val[0]["near_points"], first), "validation items do not change with the epoch"
    assert torch.equal(a.item(2, seed=11)["near_points"], b.item(2, seed=11)["near_points"])


def test_ids_filter_and_all_points(prepared):
    ids = _dataset(prepared, split="all").ids[:3]
    subset = PreparedShapeDataset(prepared, split="all", ids=ids, num_surface=None, num_volume=None, num_near=2000)
    assert subset.ids == ids
    item = subset[0]
    assert item["surface_points"].shape == (256, 3) and item["volume_points"].shape == (1024, 3)
    assert item["near_points"].shape == (2000, 3)  # more than stored: drawn with replacement


def test_dataloader_batches(prepared):
    loader = DataLoader(_dataset(prepared, split="all"), batch_size=4, shuffle=False)
    batch = next(iter(loader))
    assert batch["surface_points"].shape == (4, 64, 3) and batch["transform"].shape == (4, 4)
    assert len(batch["id"]) == 4 and isinstance(batch["caption"][0], str)


def test_stored_labels_are_right(prepared):
    row = read_metadata(prepared, status="done")[0]
    data = load_prepared(prepared / row["file"])
    seed = int(row["path"].split("=")[1])
    mesh, transform = normalize_mesh(make_shape(seed).mesh)
    np.testing.assert_allclose(data["transform"], transform.to_array())
    for key in ("volume", "near"):
        points = data[f"{key}_points"].astype(np.float64)
        assert np.array_equal(compute_occupancy(mesh, points), data[f"{key}_labels"])
    assert data["near_counts"].sum() == len(data["near_points"]) and data["near_sigmas"].tolist() == pytest.approx([0.005, 0.02])


def test_metadata_rows_carry_licences(prepared):
    rows = {row["id"]: row for row in read_metadata(prepared)}
    done = [row for row in rows.values() if row["status"] == "done"]
    assert len(done) == 20 and {row["licence"] for row in done} == {"Apache-2.0"}
    failed = [row for row in rows.values() if row["status"] == "failed"]
    assert failed and {row["licence"] for row in failed} == {"unknown"}
