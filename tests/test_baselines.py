"""Classical competitors: Draco, simplification + Draco under a byte budget, PLY sizes."""

import numpy as np
import pytest
import trimesh

from vat3d.evaluation.baselines import best_under_budget, draco_roundtrip, ply_bytes, simplify
from vat3d.evaluation.metrics import compare_meshes


@pytest.fixture(scope="module")
def bumpy():
    """A smooth organic-looking closed mesh with 5120 faces in the [-1, 1] box."""
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    v = mesh.vertices
    radius = 0.75 + 0.12 * np.sin(3 * v[:, 0]) * np.cos(2 * v[:, 1]) + 0.08 * np.sin(4 * v[:, 2])
    return trimesh.Trimesh(v * radius[:, None], mesh.faces, process=False)


def test_draco_roundtrip(bumpy):
    decoded, n_bytes = draco_roundtrip(bumpy, quantization_bits=14)
    assert n_bytes > 0 and n_bytes < ply_bytes(bumpy)
    assert len(decoded.faces) == len(bumpy.faces)
    assert compare_meshes(decoded, bumpy, n_points=5000)["fscore@0.01"] > 0.99
    sizes = [draco_roundtrip(bumpy, q)[1] for q in (6, 10, 14)]
    assert sizes[0] < sizes[1] < sizes[2]
    coarse, _ = draco_roundtrip(bumpy, quantization_bits=6)
    assert compare_meshes(coarse, bumpy, n_points=5000)["chamfer_l1"] > compare_meshes(decoded, bumpy, n_points=5000)["chamfer_l1"]


def test_simplify(bumpy):
    small = simplify(bumpy, 500)
    assert 400 <= len(small.faces) <= 500
    assert len(np.unique(small.faces)) == len(small.vertices)  # no unreferenced vertices
    assert compare_meshes(small, bumpy, n_points=5000)["fscore@0.05"] > 0.95
    assert len(simplify(bumpy, 10**6).faces) == len(bumpy.faces)


def test_ply_bytes(bumpy):
    n = ply_bytes(bumpy)
    payload = 12 * len(bumpy.vertices) + 13 * len(bumpy.faces)  # float32 xyz, uint8 count + 3 int32
    assert payload < n < payload + 1000


def test_best_under_budget_respects_budget_and_improves(bumpy):
    results = [best_under_budget(bumpy, budget, n_points=5000) for budget in (256, 512, 1024, 4096)]
    for budget, result in zip((256, 512, 1024, 4096), results):
        assert result["reachable"]
        assert 0 < result["bytes"] <= budget
        assert result["faces"] == len(result["mesh"].faces) > 0
        assert 6 <= result["qbits"] <= 14
        assert all(row[2] <= budget for row in result["candidates"])
    f = [r["fscore@0.02"] for r in results]
    assert f == sorted(f) and f[-1] > 0.95 and f[0] < f[-1]
    chamfer = [r["chamfer_l1"] for r in results]
    assert chamfer[0] > chamfer[-1]


def test_best_under_budget_unreachable(bumpy):
    result = best_under_budget(bumpy, 8, n_points=1000)
    assert result["reachable"] is False and result["mesh"] is None
    assert result["fscore@0.02"] == 0.0 and result["bytes"] is None


def test_best_under_budget_against_separate_gt(bumpy):
    noisy = bumpy.copy()
    noisy.vertices += np.random.default_rng(0).normal(scale=0.002, size=noisy.vertices.shape)
    result = best_under_budget(noisy, 4096, gt_mesh=bumpy, n_points=5000, qbits=(8, 12))
    assert result["bytes"] <= 4096 and result["qbits"] in (8, 12)
    assert result["fscore@0.02"] > 0.95


def test_welding_seams_helps_the_baseline(bumpy):
    """A mesh with split vertices (as UV seams make) must not be penalised: it is welded first."""
    split = trimesh.Trimesh(bumpy.vertices[bumpy.faces].reshape(-1, 3), np.arange(3 * len(bumpy.faces)).reshape(-1, 3), process=False)
    assert len(split.vertices) == 3 * len(bumpy.faces)
    welded = best_under_budget(split, 1024, gt_mesh=bumpy, n_points=3000, qbits=(8,))
    raw = best_under_budget(split, 1024, gt_mesh=bumpy, n_points=3000, qbits=(8,), merge_vertices=False)
    assert welded["fscore@0.02"] > raw["fscore@0.02"]
