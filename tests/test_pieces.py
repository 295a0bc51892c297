"""Connected pieces of a surface: labels, areas, dropping floaters."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from vat3d.evaluation.metrics import fragmentation
from vat3d.geometry.pieces import drop_small_pieces, surface_pieces


def _scene():
    big = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    mid = trimesh.creation.box(extents=(0.4, 0.4, 0.4))
    mid.apply_translation((2.0, 0, 0))
    speck = trimesh.creation.box(extents=(0.05, 0.05, 0.05))
    speck.apply_translation((-2.0, 0, 0))
    # triangle soup: no shared vertex indices, as some exporters write it
    soup = trimesh.util.concatenate([big, mid, speck])
    soup = trimesh.Trimesh(soup.vertices[soup.faces].reshape(-1, 3), np.arange(len(soup.faces) * 3).reshape(-1, 3),
                           process=False)
    return soup, (6.0, 6 * 0.16, 6 * 0.0025)


def test_pieces_and_areas():
    mesh, areas = _scene()
    pieces = surface_pieces(mesh)
    assert sorted(pieces.area_P.tolist(), reverse=True) == pytest.approx(areas)
    assert pieces.total_area == pytest.approx(sum(areas))
    assert len(pieces.labels_F) == len(pieces.mesh.faces) == 36


def test_drop_small_pieces_keeps_the_big_ones():
    mesh, areas = _scene()
    total = sum(areas)
    kept = drop_small_pieces(mesh, 0.01)  # the speck is 0.04 % of the area, the middle box 14 %
    assert kept.area == pytest.approx(areas[0] + areas[1]) and len(kept.faces) == 24
    assert fragmentation(kept) == pytest.approx(areas[1] / (areas[0] + areas[1]))
    only = drop_small_pieces(mesh, 0.5)
    assert only.area == pytest.approx(areas[0]) and fragmentation(only) == 0.0
    assert len(only.vertices) == 8  # the dropped pieces' vertices are gone too
    assert drop_small_pieces(mesh, 0.0) is mesh
    assert fragmentation(mesh) == pytest.approx((areas[1] + areas[2]) / total)
    # the largest piece always stays, even when no piece reaches the share
    assert drop_small_pieces(mesh, 0.99).area == pytest.approx(areas[0])
    empty = trimesh.Trimesh()
    assert drop_small_pieces(empty, 0.1) is empty
    with pytest.raises(ValueError, match="min_share"):
        drop_small_pieces(mesh, 1.0)
