"""Reconstruction metrics (Chamfer-L1, F-score, IoU) and PointFlow set metrics."""

import math

import numpy as np
import pytest
import torch
import trimesh

from vat3d.evaluation.metrics import (
    chamfer_l1,
    compare_meshes,
    fscore,
    iou,
    mmd_cov_1nna,
    pairwise_chamfer,
    point_to_surface_distance,
    sample_surface_points,
)


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=4, radius=0.5)


def test_sampling_is_seeded_and_on_surface(sphere):
    a = sample_surface_points(sphere, 1000, seed=3)
    b = sample_surface_points(sphere, 1000, seed=3)
    assert a.shape == (1000, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample_surface_points(sphere, 1000, seed=4))
    assert point_to_surface_distance(a, sphere).max() < 1e-9
    assert sample_surface_points(trimesh.Trimesh(), 10).shape == (0, 3)


def test_identical_meshes(sphere):
    result = compare_meshes(sphere, sphere.copy(), n_points=5000)
    assert result["chamfer_l1"] < 1e-9
    for tau in (0.01, 0.02, 0.05):
        assert result[f"fscore@{tau:g}"] == 1.0
    assert result["pred_empty"] == 0.0


def test_sphere_vs_larger_sphere(sphere):
    bigger = trimesh.creation.icosphere(subdivisions=4, radius=0.53)  # 0.03 further out
    result = chamfer_l1(bigger, sphere, n=10_000)
    assert result["chamfer_l1"] == pytest.approx(0.03, abs=0.002)
    assert result["accuracy"] == pytest.approx(0.03, abs=0.002)
    assert result["completeness"] == pytest.approx(0.03, abs=0.002)
    f = fscore(bigger, sphere, taus=(0.02, 0.05), n=10_000)
    assert f["fscore@0.02"] < 0.01  # every point is 0.03 away
    assert f["fscore@0.05"] == 1.0


def test_partial_prediction_precision_and_recall(sphere):
    upper = sphere.submesh([sphere.triangles_center[:, 2] > 0], append=True)  # an open upper half
    result = compare_meshes(upper, sphere, n_points=20_000, taus=(0.01,))
    assert result["precision@0.01"] > 0.99  # everything predicted lies on the gt
    assert result["recall@0.01"] == pytest.approx(upper.area / sphere.area, abs=0.03)  # about half
    assert result["completeness"] > 10 * result["accuracy"]


def test_empty_prediction(sphere):
    result = compare_meshes(trimesh.Trimesh(), sphere, n_points=1000)
    assert result["pred_empty"] == 1.0
    assert result["fscore@0.02"] == 0.0 and result["recall@0.02"] == 0.0
    assert math.isinf(result["chamfer_l1"])
    assert compare_meshes(None, sphere, n_points=100, empty_distance=10.0)["chamfer_l1"] == 10.0


def test_iou_known_values():
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[:2] = True  # 8 cells
    b[1:3] = True  # 8 cells, 4 shared
    assert iou(a, b) == pytest.approx(4 / 12)
    assert iou(a, a) == 1.0
    assert iou(torch.tensor(a), torch.tensor(~a)) == 0.0
    assert iou(np.zeros(5, bool), np.zeros(5, bool)) == 1.0
    with pytest.raises(ValueError):
        iou(np.zeros(3, bool), np.zeros(4, bool))


@pytest.mark.parametrize("backend", ["torch", "kdtree", "auto"])
def test_pairwise_chamfer_matches_brute_force(backend):
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 50, 3, generator=gen)
    b = torch.rand(4, 60, 3, generator=gen)
    d = pairwise_chamfer(a, b, batch_size=3, backend=backend)
    assert d.shape == (3, 4) and d.dtype == torch.float32
    for i in range(3):
        for j in range(4):
            sq = ((a[i][:, None] - b[j][None]) ** 2).sum(-1)
            expected = sq.min(1).values.mean() + sq.min(0).values.mean()
            assert d[i, j].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    assert torch.allclose(pairwise_chamfer(a, a, backend=backend).diagonal(), torch.zeros(3), atol=1e-5)
    # a set against itself (the k-d tree path computes one direction and transposes it)
    same = pairwise_chamfer(b, b.clone(), backend=backend)
    for i in range(4):
        for j in range(4):
            sq = ((b[i][:, None] - b[j][None]) ** 2).sum(-1)
            expected = sq.min(1).values.mean() + sq.min(0).values.mean()
            assert same[i, j].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def _cloud_set(shapes, n_points, seed, shift=0.0):
    """Point clouds sampled on the given meshes (one sampling per seed)."""
    return np.stack([sample_surface_points(m, n_points, seed=seed + i) + shift for i, m in enumerate(shapes)])


def test_mmd_cov_1nna_sanity():
    shapes = [
        trimesh.creation.box(extents=(0.4 + 0.1 * i, 0.6, 0.3 + 0.05 * i)) for i in range(6)
    ] + [trimesh.creation.icosphere(subdivisions=2, radius=0.2 + 0.05 * i) for i in range(6)]
    ref = _cloud_set(shapes, 256, seed=0)
    same = _cloud_set(shapes, 256, seed=1000)  # the same shapes, sampled independently
    shifted = _cloud_set(shapes, 256, seed=1000, shift=np.array([0.3, 0.0, 0.0]))

    good = mmd_cov_1nna(same, ref)
    bad = mmd_cov_1nna(shifted, ref)
    assert set(good) >= {"MMD-CD", "COV-CD", "1-NNA-CD"}
    assert good["MMD-CD"] < bad["MMD-CD"]
    assert good["COV-CD"] > 0.8 and good["COV-CD"] >= bad["COV-CD"]
    # independent samplings of the same shapes: each cloud's nearest neighbour is its twin in the other
    # set, so 1-NNA is at or below chance level (0.5); a shifted set is told apart perfectly.
    assert good["1-NNA-CD"] <= 0.5
    assert bad["1-NNA-CD"] == 1.0  # shifted clouds are perfectly separable
