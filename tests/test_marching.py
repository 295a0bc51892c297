"""Surface extraction: grid mapping, marching cubes orientation, coarse-to-fine == dense."""

import numpy as np
import pytest
import torch

from vat3d.geometry.marching import extract_surface, grid_coordinates, grid_points, marching_cubes_grid


def sphere(points):
    return 0.6 - torch.linalg.norm(points, dim=-1)


def torus(points):
    ring = torch.sqrt(points[:, 0] ** 2 + points[:, 1] ** 2) - 0.55
    return 0.2 - torch.sqrt(ring**2 + points[:, 2] ** 2)


def two_spheres(points):
    a = 0.35 - torch.linalg.norm(points - torch.tensor([0.45, 0.1, 0.0]), dim=-1)
    b = 0.3 - torch.linalg.norm(points - torch.tensor([-0.5, -0.2, 0.1]), dim=-1)
    return torch.maximum(a, b)


def thin_plate(points):
    """A 0.1-thick plate (about 1.5 coarse cells at 32^3) inside the box."""
    half_extent = torch.tensor([0.7, 0.05, 0.5])
    return -(torch.abs(points) - half_extent).max(dim=-1).values


def test_grid_points_mapping():
    axis = grid_coordinates(5)
    np.testing.assert_allclose(axis, [-1.0, -0.5, 0.0, 0.5, 1.0])
    points = grid_points(5)
    assert points.shape == (125, 3) and points.dtype == np.float32
    # "ij" order: the flat index of (i, j, k) is i*25 + j*5 + k
    np.testing.assert_allclose(points[1 * 25 + 2 * 5 + 3], [-0.5, 0.0, 0.5])


def test_plane_lands_where_it_should():
    """A plane at x = 0.5 must be extracted at x = 0.5 (index / (R - 1), not / R)."""
    resolution = 33
    values = (0.5 - grid_points(resolution)[:, 0]).reshape((resolution,) * 3)
    mesh = marching_cubes_grid(values)
    assert len(mesh.faces) > 0
    np.testing.assert_allclose(mesh.vertices[:, 0], 0.5, atol=1e-5)
    assert mesh.vertices[:, 1:].min() == pytest.approx(-1.0) and mesh.vertices[:, 1:].max() == pytest.approx(1.0)
    # outward = towards lower values = +x
    assert np.all(mesh.face_normals[:, 0] > 0.99)


def test_sphere_vertices_on_analytic_sphere_and_outward():
    resolution = 64
    mesh = extract_surface(sphere, resolution, dense=True)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    voxel = 2.0 / (resolution - 1)
    assert np.abs(radius - 0.6).max() < voxel
    assert mesh.is_watertight
    assert mesh.volume > 0  # outward normals
    assert mesh.volume == pytest.approx(4.0 / 3.0 * np.pi * 0.6**3, rel=0.02)
    # face normals point away from the centre
    assert np.mean(np.einsum("fd,fd->f", mesh.face_normals, mesh.triangles_center) > 0) > 0.99


@pytest.mark.parametrize("field", [sphere, torus, two_spheres, thin_plate], ids=lambda f: f.__name__)
@pytest.mark.parametrize("resolution", [64, 128])
def test_coarse_to_fine_equals_dense(field, resolution):
    dense = extract_surface(field, resolution, dense=True)
    fine = extract_surface(field, resolution, coarse_resolution=32, chunk_size=50_000)
    assert len(dense.faces) > 0
    np.testing.assert_array_equal(fine.vertices, dense.vertices)
    np.testing.assert_array_equal(fine.faces, dense.faces)
    stats = fine.metadata["extraction"]
    assert stats["points_evaluated"] < dense.metadata["extraction"]["points_evaluated"] == resolution**3
    assert 0 < stats["refined_fraction"] < 0.5


def test_default_coarse_resolution_and_numpy_input():
    def sphere_np(points):
        assert isinstance(points, np.ndarray) and points.dtype == np.float32
        return 0.6 - np.linalg.norm(points, axis=-1)

    dense = extract_surface(sphere_np, 96, dense=True, input_kind="numpy")
    fine = extract_surface(sphere_np, 96, input_kind="numpy")
    assert fine.metadata["extraction"]["coarse_resolution"] == 24
    np.testing.assert_array_equal(fine.faces, dense.faces)
    np.testing.assert_array_equal(fine.vertices, dense.vertices)


def test_module_occupancy_fn_and_chunking():
    class Field(torch.nn.Module):
        def forward(self, points):  # returns (P, 1)
            return sphere(points)[:, None]

    calls = []

    def counting(points):
        calls.append(len(points))
        return Field()(points)

    mesh = extract_surface(counting, 48, coarse_resolution=16, chunk_size=1000)
    assert max(calls) <= 1000 and sum(calls) == mesh.metadata["extraction"]["points_evaluated"]
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.6).max() < 2.0 / 47


def test_empty_fields_give_empty_meshes():
    for value in (-1.0, 1.0):
        mesh = extract_surface(lambda p: torch.full((len(p),), value), 32)
        assert len(mesh.faces) == 0 and len(mesh.vertices) == 0
        assert mesh.metadata["extraction"]["points_evaluated"] == 16**3  # coarse pass only
    assert len(marching_cubes_grid(np.zeros((8, 8, 8)), iso=0.5).faces) == 0


def test_resolution_512_small_band():
    """512^3 works; only a thin band is evaluated (the small sphere keeps it fast)."""
    small = lambda p: 0.05 - torch.linalg.norm(p, dim=-1)  # noqa: E731
    mesh = extract_surface(small, 512, coarse_resolution=64)
    stats = mesh.metadata["extraction"]
    assert stats["points_evaluated"] < 0.01 * 512**3
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.05).max() < 2.0 / 511


def test_features_smaller_than_a_coarse_cell_can_be_missed():
    """The documented limit: a blob between coarse samples is missed unless the coarse grid is finer."""
    centre = torch.zeros(3)  # the middle of a 16^3 grid cell (samples at +-0.067)
    blob = lambda p: 0.04 - torch.linalg.norm(p - centre, dim=-1)  # noqa: E731
    assert len(extract_surface(blob, 64, dense=True).faces) > 0
    assert len(extract_surface(blob, 64, coarse_resolution=16).faces) == 0
    dense = extract_surface(blob, 64, dense=True)
    finer = extract_surface(blob, 64, coarse_resolution=48)
    np.testing.assert_array_equal(finer.faces, dense.faces)


def rippled_sphere(points):
    """A sphere with ripples finer than a 32^3 coarse cell: its surface leaves the coarse band."""
    ripple = torch.sin(40 * points[:, 0]) * torch.sin(40 * points[:, 1]) * torch.sin(40 * points[:, 2])
    return 0.6 - torch.linalg.norm(points, dim=-1) + 0.025 * ripple


def test_band_grows_where_the_surface_leaves_it():
    dense = extract_surface(rippled_sphere, 128, dense=True)
    fine = extract_surface(rippled_sphere, 128, coarse_resolution=32)
    stats = fine.metadata["extraction"]
    assert stats["levels"] == [32, 64, 128]
    assert stats["grown_points"] > 0  # without growth this mesh would have holes
    np.testing.assert_array_equal(fine.vertices, dense.vertices)
    np.testing.assert_array_equal(fine.faces, dense.faces)
    assert stats["points_evaluated"] < 0.25 * 128**3


class GridSphere:
    """A field that answers both points and grid indices (like the tokenizer's), counting each."""

    def __init__(self):
        self.point_calls, self.grid_calls = 0, 0

    def __call__(self, points):
        self.point_calls += 1
        return sphere(points)

    def grid_evaluator(self, resolution):
        axis = torch.from_numpy(grid_coordinates(resolution))

        def fn(ijk):
            assert ijk.dtype == torch.int64 and ijk.shape[1] == 3
            self.grid_calls += 1
            return sphere(axis[ijk])

        return fn


def test_grid_evaluator_is_used_and_agrees_with_points():
    field = GridSphere()
    by_grid = extract_surface(field, 96, coarse_resolution=24, chunk_size=5000)
    assert field.grid_calls > 0 and field.point_calls == 0
    assert by_grid.metadata["extraction"]["grid_evaluator"]
    by_points = extract_surface(sphere, 96, coarse_resolution=24)
    np.testing.assert_array_equal(by_grid.faces, by_points.faces)
    np.testing.assert_array_equal(by_grid.vertices, by_points.vertices)
    # numpy inputs cannot use the torch grid evaluator: the point path is taken
    field_np = GridSphere()
    extract_surface(lambda p: field_np(torch.from_numpy(p)).numpy(), 32, input_kind="numpy")
    assert field_np.point_calls > 0 and field_np.grid_calls == 0


def test_shipped_tokenizer_field_coarse_to_fine_equals_dense():
    """On a real decoded field (the shipped model, an unseen procedural shape), exactly the dense mesh."""
    from vat3d.codec.api import decode_tokens, encode_mesh
    from vat3d.data.procedural import make_family
    from vat3d.pretrained import load_tokenizer

    model = load_tokenizer("default")
    tokens = encode_mesh(model, make_family("mug", 424242).mesh).tokens
    dense = decode_tokens(model, tokens, resolution=128, dense=True)
    fine = decode_tokens(model, tokens, resolution=128)
    assert len(dense.faces) > 1000
    np.testing.assert_array_equal(fine.faces, dense.faces)
    np.testing.assert_array_equal(fine.vertices, dense.vertices)
    stats = fine.metadata["extraction"]
    assert stats["grid_evaluator"] and stats["points_evaluated"] < 0.5 * 128**3


def test_band_finds_a_blob_the_coarse_grid_misses():
    centre = torch.zeros(3)
    blob = lambda p: 0.04 - torch.linalg.norm(p - centre, dim=-1)  # noqa: E731
    dense = extract_surface(blob, 64, dense=True)
    assert len(extract_surface(blob, 64, coarse_resolution=16).faces) == 0
    found = extract_surface(blob, 64, coarse_resolution=16, band=0.1)
    np.testing.assert_array_equal(found.faces, dense.faces)
    np.testing.assert_array_equal(found.vertices, dense.vertices)


def test_witnesses_keep_what_an_earlier_level_saw():
    """A blob on a 16^3 sample, between the 32^3 samples, and seen again at 64^3 (grids not nested)."""
    centre = torch.full((3,), -1 + 14 / 15)  # coarse sample i = 7
    blob = lambda p: 0.025 - torch.linalg.norm(p - centre, dim=-1)  # noqa: E731
    dense = extract_surface(blob, 64, dense=True)
    assert len(dense.faces) > 0
    fine = extract_surface(blob, 64, coarse_resolution=16)
    assert fine.metadata["extraction"]["levels"] == [16, 32, 64]
    assert fine.metadata["extraction"]["witness_cells"] > 0
    np.testing.assert_array_equal(fine.faces, dense.faces)
    np.testing.assert_array_equal(fine.vertices, dense.vertices)
