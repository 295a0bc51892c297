"""Geometry: loading, normalisation, sampling and occupancy against analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from vat3d.geometry import (
    NO_INSIDE_REASON,
    MeshError,
    Transform,
    compute_occupancy,
    load_mesh,
    normalize_mesh,
    sample_near_surface,
    sample_occupancy,
    sample_surface,
    sample_volume,
    winding_number,
)


def _box(extents, offset=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=extents)
    mesh.apply_translation(offset)
    return mesh


def _in_box(points_N3, extents, offset=(0.0, 0.0, 0.0)) -> np.ndarray:
    return np.all(np.abs(points_N3 - np.asarray(offset)) < np.asarray(extents) / 2.0, axis=1)


# --------------------------------------------------------------------------- normalisation


def test_normalize_round_trip_and_box():
    rng = np.random.default_rng(0)
    mesh = trimesh.creation.icosphere(subdivisions=2)
    mesh.apply_scale((3.0, 1.0, 0.5))
    mesh.apply_translation((10.0, -4.0, 2.5))
    original = mesh.vertices.copy()
    normalized, transform = normalize_mesh(mesh, margin=0.1)

    assert np.array_equal(mesh.vertices, original), "input mesh must not be modified"
    lo, hi = normalized.bounds
    np.testing.assert_allclose((lo + hi) / 2.0, 0.0, atol=1e-12)
    assert np.isclose((hi - lo).max(), 2.0 * (1.0 - 0.1))
    points = rng.normal(size=(100, 3)) * 5.0
    np.testing.assert_allclose(transform.invert(transform.apply(points)), points, atol=1e-9)
    np.testing.assert_allclose(transform.invert(normalized.vertices), original, atol=1e-9)
    assert Transform.from_dict(transform.to_dict()) == transform
    assert Transform.from_array(transform.to_array()) == transform
    assert transform.to_array().shape == (4,)


def test_orientations_are_the_24_turns_of_the_cube_in_the_documented_order():
    from vat3d.geometry.normalize import ORIENTATIONS

    assert ORIENTATIONS.shape == (24, 3, 3) and ORIENTATIONS.dtype.kind == "i"
    assert np.array_equal(ORIENTATIONS[0], np.eye(3))
    assert np.array_equal(ORIENTATIONS[1], np.diag([1, -1, -1]))  # perm (0,1,2), signs (1,-1,-1): docs/vat-format.md
    assert np.array_equal(ORIENTATIONS[4], [[1, 0, 0], [0, 0, 1], [0, -1, 0]])  # perm (0,2,1), signs (1,1,-1)
    assert len({m.tobytes() for m in ORIENTATIONS}) == 24
    for m in ORIENTATIONS:
        assert np.array_equal(m @ m.T, np.eye(3)) and round(np.linalg.det(m)) == 1
    # closed under composition: a group, so every turn has its inverse among them
    keys = {m.tobytes() for m in ORIENTATIONS}
    assert all((a @ b).tobytes() in keys for a in ORIENTATIONS for b in ORIENTATIONS)


@pytest.mark.parametrize("orientation", [1, 7, 23])
def test_turned_transform_keeps_the_box_and_inverts(orientation):
    mesh = trimesh.creation.box(extents=(3.0, 1.0, 0.5))
    mesh.apply_translation((10.0, -4.0, 2.5))
    _, plain = normalize_mesh(mesh)
    turned = plain.turned(orientation)
    assert turned != plain and turned.orientation == orientation
    box = turned.apply(mesh.vertices)
    assert np.abs(box).max() <= 0.95 + 1e-9 and np.isclose(np.abs(box).max(), 0.95)
    np.testing.assert_allclose(box, plain.apply(mesh.vertices) @ turned.rotation.T, atol=1e-12)
    np.testing.assert_allclose(turned.invert(box), mesh.vertices, atol=1e-9)
    assert Transform.from_dict(turned.to_dict()) == turned
    assert "orientation" not in plain.to_dict()
    with pytest.raises(ValueError, match="turned transform"):
        turned.to_array()
    with pytest.raises(ValueError, match="orientation 24"):
        plain.turned(24)


def test_transform_rejects_bad_scale():
    with pytest.raises(ValueError):
        Transform(center=np.zeros(3), scale=0.0)


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("ext", ["obj", "ply", "stl", "off", "glb"])
def test_load_formats(tmp_path, ext):
    mesh = _box((1.0, 2.0, 3.0), offset=(1.0, 0.0, 0.0))
    path = tmp_path / f"box.{ext}"
    mesh.export(path)
    loaded = load_mesh(path)
    assert isinstance(loaded, trimesh.Trimesh)
    assert loaded.is_watertight
    np.testing.assert_allclose(loaded.bounds, mesh.bounds, atol=1e-5)
    assert np.isclose(loaded.volume, 6.0, rtol=1e-4)


def test_gltf_scene_is_flattened_with_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(_box((1.0, 1.0, 1.0)), node_name="a", transform=trimesh.transformations.translation_matrix((5, 0, 0)))
    scene.add_geometry(_box((1.0, 1.0, 1.0)), node_name="b", transform=trimesh.transformations.translation_matrix((0, 3, 0)))
    for name in ("scene.glb", "scene.gltf"):
        path = tmp_path / name
        scene.export(path)
        loaded = load_mesh(path)
        assert len(loaded.faces) == 24
        np.testing.assert_allclose(loaded.bounds, [[-0.5, -0.5, -0.5], [5.5, 3.5, 0.5]], atol=1e-5)


BAD_OBJ = {
    "zero faces": ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    "nan": ("v nan 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\nf 1 2 4\nf 2 3 4\n", "non-finite"),
    "flat": ("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3\nf 1 3 4\n", "zero volume"),
    "collinear": ("v 0 0 0\nv 1 0 0\nv 2 0 0\nv 3 0 0\nf 1 2 3\nf 2 3 4\n", "zero surface area"),
}


@pytest.mark.parametrize("case", sorted(BAD_OBJ))
def test_bad_meshes_raise(tmp_path, case):
    text, reason = BAD_OBJ[case]
    path = tmp_path / "bad.obj"
    path.write_text(text)
    with pytest.raises(MeshError, match=reason):
        load_mesh(path)


def test_bad_files_raise(tmp_path):
    with pytest.raises(MeshError, match="not found"):
        load_mesh(tmp_path / "missing.obj")
    empty = tmp_path / "empty.stl"
    empty.write_bytes(b"")
    with pytest.raises(MeshError, match="0 bytes"):
        load_mesh(empty)
    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(b"\x00\x01this is not a mesh\xff" * 10)
    with pytest.raises(MeshError):
        load_mesh(garbage)
    text = tmp_path / "notes.obj"
    text.write_text("hello, I am a shopping list\nmilk\neggs\n")
    with pytest.raises(MeshError):
        load_mesh(text)
    other = tmp_path / "x.txt"
    other.write_text("x")
    with pytest.raises(MeshError, match="unsupported"):
        load_mesh(other)


# --------------------------------------------------------------------------- sampling


def test_surface_samples_seeded_area_weighted_unit_normals():
    mesh = _box((2.0, 1.0, 1.0))
    points_a, normals_a = sample_surface(mesh, 20000, seed=3)
    points_b, normals_b = sample_surface(mesh, 20000, seed=3)
    points_c, _ = sample_surface(mesh, 20000, seed=4)
    assert np.array_equal(points_a, points_b) and np.array_equal(normals_a, normals_b)
    assert not np.array_equal(points_a, points_c)
    np.testing.assert_allclose(np.linalg.norm(normals_a, axis=1), 1.0, atol=1e-12)
    on_x_faces = np.isclose(np.abs(points_a[:, 0]), 1.0)
    assert np.all(on_x_faces | np.isclose(np.abs(points_a[:, 1]), 0.5) | np.isclose(np.abs(points_a[:, 2]), 0.5))
    # area of the two x faces: 2 of 10 square units
    assert abs(on_x_faces.mean() - 0.2) < 0.015
    # normals point outward
    assert np.all((points_a * normals_a).sum(axis=1) > 0)


def test_volume_and_near_samples():
    volume = sample_volume(1000, seed=0)
    assert volume.shape == (1000, 3) and np.abs(volume).max() <= 1.0
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    near, sigma = sample_near_surface(sphere, 10001, sigmas=(0.005, 0.02), seed=0)
    assert near.shape == (10001, 3) and list(np.unique(sigma)) == [0.005, 0.02]
    radial = np.linalg.norm(near, axis=1) - 0.5
    assert abs(radial[sigma == 0.005].std() - 0.005) < 0.001
    assert abs(radial[sigma == 0.02].std() - 0.02) < 0.003


# --------------------------------------------------------------------------- occupancy


def test_occupancy_sphere_analytic():
    radius = 0.8
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    points = sample_volume(20000, seed=1)
    labels = compute_occupancy(sphere, points)
    distance = np.linalg.norm(points, axis=1)
    clear = np.abs(distance - radius) > 2e-3  # the polygon is within 1e-3 of the sphere
    assert np.array_equal(labels[clear], distance[clear] < radius)


def test_occupancy_box_analytic_and_inverted():
    extents = (1.2, 0.6, 0.9)
    box = _box(extents)
    points = np.concatenate([sample_volume(20000, seed=2), sample_near_surface(box, 20000, seed=2)[0]])
    truth = _in_box(points, extents)
    assert np.array_equal(compute_occupancy(box, points), truth)
    inverted = trimesh.Trimesh(box.vertices, box.faces[:, ::-1], process=False)
    assert np.array_equal(compute_occupancy(inverted, points), truth)


def test_occupancy_non_watertight_overlapping_parts():
    """Two overlapping closed boxes (not unioned) with one triangle deleted."""
    a_ext, b_ext, b_off = (1.0, 0.6, 0.6), (0.5, 1.2, 0.5), (0.3, 0.2, 0.1)
    a, b = _box(a_ext), _box(b_ext, b_off)
    vertices = np.vstack([a.vertices, b.vertices])
    faces = np.vstack([a.faces, b.faces + len(a.vertices)])
    mesh = trimesh.Trimesh(vertices, np.delete(faces, [0, 17], axis=0), process=False)
    assert not mesh.is_watertight
    points = np.concatenate([sample_volume(30000, seed=5), sample_surface(mesh, 10000, seed=5)[0] * 1.01])
    truth = _in_box(points, a_ext) | _in_box(points, b_ext, b_off)
    labels = compute_occupancy(mesh, points)
    assert (labels != truth).mean() < 1e-3
    # the overlap counts twice in the winding number but is inside, not "outside by parity"
    overlap = _in_box(points, a_ext) & _in_box(points, b_ext, b_off)
    assert overlap.sum() > 100 and labels[overlap].all()


def test_winding_methods_agree():
    mesh = trimesh.creation.torus(major_radius=0.6, minor_radius=0.2)
    points = sample_volume(5000, seed=7)
    fast = winding_number(mesh, points, method="fast")
    exact = winding_number(mesh, points, method="exact")
    auto = winding_number(mesh, points, method="auto", exact_max_faces=0)
    assert np.array_equal(fast > 0.5, exact > 0.5) and np.array_equal(auto > 0.5, exact > 0.5)


def test_auto_winding_skips_a_split_that_would_explode(monkeypatch):
    from vat3d.geometry import occupancy

    box = trimesh.creation.box(extents=(1.6, 1.6, 0.1))  # 12 long faces
    vertices, faces = occupancy._mesh_arrays(box)
    max_edge = 0.03 * float(np.linalg.norm(np.ptp(vertices, axis=0)))  # auto's default split length
    estimate = occupancy._split_face_estimate(vertices, faces, max_edge)
    assert estimate >= len(occupancy._split_long_edges(vertices, faces, max_edge)[1]) > len(faces)
    points = sample_volume(3000, seed=3)
    exact = winding_number(box, points, method="exact")

    def no_split(*args):
        raise AssertionError("split despite the face budget")

    monkeypatch.setattr(occupancy, "_split_long_edges", no_split)
    skipped = winding_number(box, points, method="auto", exact_max_faces=0, max_split_faces=estimate - 1)
    assert np.array_equal(skipped > 0.5, exact > 0.5)
    with pytest.raises(AssertionError, match="split despite"):
        winding_number(box, points, method="auto", exact_max_faces=0, max_split_faces=estimate)


def test_open_sheet_has_no_inside():
    u, v = np.meshgrid(np.linspace(-1, 1, 20), np.linspace(-1, 1, 20))
    heights = 0.2 * np.sin(2 * u) * np.cos(2 * v)
    vertices = np.stack([u.ravel(), v.ravel(), heights.ravel()], axis=1)
    idx = np.arange(400).reshape(20, 20)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], axis=-1).reshape(-1, 4)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    sheet, _ = normalize_mesh(trimesh.Trimesh(vertices, faces, process=False))
    with pytest.raises(MeshError, match=NO_INSIDE_REASON.replace("(", r"\(").replace(")", r"\)")):
        sample_occupancy(sheet, num_volume=2000, num_near=2000, seed=0)


def test_sample_occupancy_labels_match_stored_float16_points():
    mesh, _ = normalize_mesh(trimesh.creation.icosphere(subdivisions=3))
    samples = sample_occupancy(mesh, num_volume=4000, num_near=4001, seed=0)
    assert samples.volume_points.dtype == np.float16 and samples.near_points.dtype == np.float16
    assert samples.near_counts.tolist() == [2001, 2000]
    recomputed = compute_occupancy(mesh, samples.near_points.astype(np.float64))
    assert np.array_equal(recomputed, samples.near_labels)
    assert 0.4 < samples.near_labels.mean() < 0.6
    expected_fraction = (4 / 3 * np.pi * 0.95**3) / 8.0
    assert abs(samples.inside_fraction - expected_fraction) < 0.03
    again = sample_occupancy(mesh, num_volume=4000, num_near=4001, seed=0)
    assert np.array_equal(again.near_points, samples.near_points)


def test_mesh_files_lists_loadable_meshes_of_one_folder(tmp_path):
    from vat3d.geometry.io import mesh_files

    for name in ("b.OBJ", "a.ply", "notes.txt", "c.vat"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.obj").write_text("x")  # not recursive
    assert [p.name for p in mesh_files(tmp_path)] == ["a.ply", "b.OBJ"]
