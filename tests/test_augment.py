"""Mesh augmentation: determinism, what rotations, scales and mirrors preserve, unions of parts
and the spec parser."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from vat3d.data.augment import AugmentSpec, augment_mesh, parse_augment_spec, random_rotation, union_of_parts
from vat3d.data.procedural import make_family
from vat3d.geometry.occupancy import winding_number


@pytest.fixture(scope="module")
def mug() -> trimesh.Trimesh:
    return make_family("mug", 3).mesh  # not symmetric: a handle


def _interior_points(mesh: trimesh.Trimesh, depth: float = 1e-3) -> np.ndarray:
    """Points just inside the surface (vertices moved against their normals)."""
    return mesh.vertices - depth * mesh.vertex_normals


def test_deterministic_and_seed_dependent(mug):
    a, info_a = augment_mesh(mug, 7)
    b, info_b = augment_mesh(mug, 7)
    c, _ = augment_mesh(mug, 8)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces) and info_a == info_b
    assert not np.allclose(a.vertices, c.vertices)
    json.dumps(info_a)  # the record is JSON-friendly
    assert np.allclose(a.vertices, mug.vertices @ np.asarray(info_a["matrix"]).T)
    assert mug.vertices is not a.vertices and np.array_equal(mug.vertices, make_family("mug", 3).mesh.vertices)


def test_streams_are_independent(mug):
    """Switching mirroring or scaling off does not change the rotation drawn for a seed."""
    full = augment_mesh(mug, 5)[1]
    rot_only = augment_mesh(mug, 5, anisotropic=None, mirror=False)[1]
    assert full["rotation"] == rot_only["rotation"] and rot_only["scale"] == [1.0, 1.0, 1.0]


def test_rotation_preserves_volume_and_area(mug):
    for seed in range(3):
        rotated, info = augment_mesh(mug, seed, anisotropic=None, mirror=False)
        rotation = np.asarray(info["rotation"])
        assert np.allclose(rotation @ rotation.T, np.eye(3)) and np.linalg.det(rotation) == pytest.approx(1.0)
        assert rotated.volume == pytest.approx(mug.volume, rel=1e-9)
        assert rotated.area == pytest.approx(mug.area, rel=1e-9)
        assert not info["flipped_faces"]


def test_rotation_about_up_axis_only(mug):
    rotated, info = augment_mesh(mug, 4, rotate="up", anisotropic=None, mirror=False)
    assert info["rotation_mode"] == "up"
    assert np.allclose(rotated.vertices[:, 1], mug.vertices[:, 1])  # heights unchanged
    assert np.allclose(np.asarray(info["rotation"])[1], [0.0, 1.0, 0.0])


def test_so3_rotations_are_spread_uniformly():
    rng = np.random.default_rng(0)
    axes = np.array([random_rotation(rng)[:, 2] for _ in range(4000)])  # where +Z goes
    assert np.abs(axes.mean(axis=0)).max() < 0.05  # no preferred direction
    assert np.allclose((axes**2).mean(axis=0), 1.0 / 3.0, atol=0.03)


def test_mirroring_keeps_normals_outward(mug):
    mirrored_seeds = [s for s in range(20) if augment_mesh(mug, s)[1]["mirror_axis"] is not None]
    assert 3 <= len(mirrored_seeds) <= 17  # about half the seeds mirror
    always = [augment_mesh(mug, s, rotate=False, anisotropic=None, mirror=1.0) for s in range(3)]
    for mirrored, info in always:
        assert info["mirror_axis"] in ("x", "y", "z") and info["flipped_faces"]
        axis = "xyz".index(info["mirror_axis"])
        assert np.allclose(mirrored.vertices[:, axis], -mug.vertices[:, axis])
        assert mirrored.volume == pytest.approx(mug.volume, rel=1e-9) and mirrored.volume > 0
        assert mirrored.is_winding_consistent
        inside = winding_number(mirrored, _interior_points(mirrored)[:200])
        assert np.all(inside > 0.5), "winding number +1 inside after mirroring"
    never = augment_mesh(mug, 1, mirror=False)[1]
    assert never["mirror_axis"] is None


def test_anisotropic_scale_changes_extents_by_the_recorded_factors(mug):
    scaled, info = augment_mesh(mug, 9, rotate=False, anisotropic=(0.7, 1.3), mirror=False)
    factors = np.asarray(info["scale"])
    assert np.all((factors >= 0.7) & (factors <= 1.3)) and len(set(factors.round(6))) == 3
    assert np.allclose(scaled.extents, mug.extents * factors)
    assert scaled.volume == pytest.approx(mug.volume * np.prod(factors), rel=1e-9)


def _parts():
    return [trimesh.creation.box(extents=(1.0, 0.5, 0.3)), trimesh.creation.icosphere(subdivisions=2),
            trimesh.creation.cylinder(radius=0.3, height=1.0, sections=24), make_family("torus", 0).mesh]


def _placed(part: trimesh.Trimesh, record: dict) -> np.ndarray:
    matrix = np.asarray(record["matrix"])
    return part.vertices @ matrix[:3, :3].T + matrix[:3, 3]


def test_union_by_concatenation_contains_every_part():
    parts = _parts()
    union, info = union_of_parts(parts, 3, method="concatenate")
    assert info["method"] == "concatenate" and len(info["parts"]) == 4
    assert [p["index"] for p in info["parts"]] == [0, 1, 2, 3]
    for record in info["parts"]:
        placed = _placed(parts[record["index"]], record)
        rows = {tuple(v) for v in np.round(union.vertices, 9)}
        assert all(tuple(v) in rows for v in np.round(placed, 9))
    again, info_again = union_of_parts(parts, 3, method="concatenate")
    assert np.array_equal(again.vertices, union.vertices) and info_again == info


def test_manifold_union_is_one_closed_solid_around_all_parts():
    parts = _parts()
    for seed in range(3):
        union, info = union_of_parts(parts, seed)
        assert info["method"] == "manifold"
        assert union.is_watertight and union.is_winding_consistent and union.volume > 0
        placed = [_placed(parts[r["index"]], r) for r in info["parts"]]
        everything = np.vstack(placed)
        assert np.allclose(union.bounds, [everything.min(axis=0), everything.max(axis=0)], atol=1e-9)
        volumes = [parts[r["index"]].volume * r["scale"] ** 3 / np.linalg.norm(parts[r["index"]].extents) ** 3
                   for r in info["parts"]]
        assert max(volumes) * (1 - 1e-6) <= union.volume <= sum(volumes) * (1 + 1e-6)
        assert union.body_count == 1, "each part touches or overlaps one placed before it"
        for part, record in zip(parts, info["parts"]):
            moved = trimesh.Trimesh(_placed(parts[record["index"]], record), parts[record["index"]].faces)
            assert np.all(winding_number(union, _interior_points(moved, 1e-4)[::7]) > 0.5)


def test_union_picks_parts_and_falls_back_for_open_meshes():
    parts = _parts() * 2  # eight meshes: 2-4 of them are chosen
    sizes = {len(union_of_parts(parts, seed)[1]["parts"]) for seed in range(12)}
    assert sizes <= {2, 3, 4} and len(sizes) >= 2
    assert len(union_of_parts(parts[:2], 0, count=3)[1]["parts"]) == 3  # repeats when asked for more
    open_box = trimesh.creation.box()
    open_box.update_faces(np.arange(len(open_box.faces)) > 1)  # one side missing
    ball = trimesh.creation.icosphere()
    union, info = union_of_parts([open_box, ball], 0)
    assert info["method"] == "concatenate" and len(union.faces) == len(open_box.faces) + len(ball.faces)
    with pytest.raises(ValueError, match="not closed manifolds"):
        union_of_parts([open_box, trimesh.creation.icosphere()], 0, method="manifold")
    with pytest.raises(ValueError, match="at least two"):
        union_of_parts([open_box], 0)


def test_parse_augment_spec():
    spec = parse_augment_spec("rot,aniso=0.7-1.3,mirror")
    assert spec == AugmentSpec(rotate="so3", anisotropic=(0.7, 1.3), mirror=0.5)
    assert spec.mesh_kwargs() == {"rotate": "so3", "anisotropic": (0.7, 1.3), "mirror": 0.5}
    assert parse_augment_spec(str(spec)) == spec
    assert parse_augment_spec(" Rot=Up , aniso , union=3 ") == AugmentSpec(rotate="up", anisotropic=(0.7, 1.3), parts=(3, 3))
    assert parse_augment_spec("mirror=0.25,parts=2-4") == AugmentSpec(mirror=0.25, parts=(2, 4))
    assert parse_augment_spec("aniso=0.8:1.25").anisotropic == (0.8, 1.25)
    assert not parse_augment_spec("none").enabled and not parse_augment_spec("").enabled and parse_augment_spec("rot").enabled
    assert str(parse_augment_spec("none")) == "none"
    mesh, info = augment_mesh(trimesh.creation.box(), 0, **parse_augment_spec("rot=up").mesh_kwargs())
    assert info["rotation_mode"] == "up" and info["scale"] == [1.0, 1.0, 1.0] and info["mirror_axis"] is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rot,spin", "unknown augmentation 'spin'"),
        ("rotation", "unknown augmentation 'rotation'"),
        ("rot,rot=up", "given twice"),
        ("rot=sideways", "rot='sideways'"),
        ("aniso=1.3-0.7", "0 < LOW <= HIGH"),
        ("aniso=big", "expected LOW-HIGH"),
        ("aniso=", "empty value"),
        ("mirror=2", "probability in"),
        ("mirror=yes", "probability in"),
        ("parts=1", "2 <= LOW"),
        ("parts=2.5", "integers"),
        ("rot,,mirror", "empty item"),
    ],
)
def test_parse_augment_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_augment_spec(spec)


def test_augment_mesh_argument_errors(mug):
    with pytest.raises(ValueError, match="rotate"):
        augment_mesh(mug, 0, rotate="sideways")
    with pytest.raises(ValueError, match="anisotropic"):
        augment_mesh(mug, 0, anisotropic=(1.2, 0.8))
    with pytest.raises(ValueError, match="mirror"):
        augment_mesh(mug, 0, mirror=1.5)
