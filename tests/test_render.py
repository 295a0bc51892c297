"""CPU ray-cast rendering and comparison sheets."""

import numpy as np
import pytest
import trimesh
from PIL import Image

from vat3d.renderers import camera_pose, make_sheet, render_mesh, render_views, save_sheet

SIZE = 96


@pytest.fixture(scope="module")
def shape():
    """An asymmetric shape: a box with a sphere on one side, so azimuth changes the image."""
    box = trimesh.creation.box(extents=(1.2, 0.5, 0.6))
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.35)
    ball.apply_translation((0.6, 0.3, 0.0))
    return trimesh.util.concatenate([box, ball])


def _foreground(image):
    return np.any(image < 250, axis=-1)


def test_image_shape_dtype_and_centred(shape):
    image = render_mesh(shape, size=SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    mask = _foreground(image)
    assert 0.05 < mask.mean() < 0.6
    assert mask[SIZE // 2, SIZE // 2]  # the centre pixel sees the object
    # nothing touches the border: the object is fully in view
    assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    rows, cols = np.nonzero(mask)
    assert abs(rows.mean() - SIZE / 2) < SIZE * 0.15 and abs(cols.mean() - SIZE / 2) < SIZE * 0.15
    # shaded: several grey levels on the object
    assert len(np.unique(image[mask][:, 0])) > 3


def test_whole_box_fits_from_any_view():
    cube = trimesh.creation.box(extents=(2.0, 2.0, 2.0))
    for elevation, azimuth in [(0, 0), (20, 45), (60, 200), (-35, 300), (90, 0)]:
        mask = _foreground(render_mesh(cube, size=SIZE, elevation_deg=elevation, azimuth_deg=azimuth))
        assert mask.any()
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_up_is_up():
    """A shape that is larger at +y must look larger at the top of the image."""
    cone = trimesh.creation.cone(radius=0.8, height=1.6)  # apex at +z
    cone.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))  # apex to -y
    mask = _foreground(render_mesh(cone, size=SIZE, elevation_deg=0.0))
    widths = mask.sum(axis=1)
    rows = np.nonzero(widths)[0]
    top, bottom = widths[rows[: len(rows) // 4]].mean(), widths[rows[-len(rows) // 4 :]].mean()
    assert top > 2 * bottom


def test_azimuths_differ_and_rendering_is_deterministic(shape):
    a = render_mesh(shape, size=SIZE, azimuth_deg=30)
    b = render_mesh(shape, size=SIZE, azimuth_deg=120)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 3
    np.testing.assert_array_equal(a, render_mesh(shape.copy(), size=SIZE, azimuth_deg=30))
    smooth = render_mesh(shape, size=SIZE, smooth=True, supersample=2)
    assert smooth.shape == (SIZE, SIZE, 3)


def test_empty_mesh_gives_background():
    image = render_mesh(trimesh.Trimesh(), size=32)
    assert (image == 255).all()
    assert (render_mesh(None, size=32) == 255).all()


def test_render_views_seeded(shape):
    images, cameras = render_views(shape, 4, size=48, elevations=(10.0, 40.0), seed=7)
    assert len(images) == len(cameras) == 4
    assert [c["elevation_deg"] for c in cameras] == [10.0, 40.0, 10.0, 40.0]
    again, cameras_again = render_views(shape, 4, size=48, elevations=(10.0, 40.0), seed=7)
    assert [c["azimuth_deg"] for c in cameras] == [c["azimuth_deg"] for c in cameras_again]
    for x, y in zip(images, again):
        np.testing.assert_array_equal(x, y)
    other, cameras_other = render_views(shape, 4, size=48, elevations=(10.0, 40.0), seed=8)
    assert cameras_other[0]["azimuth_deg"] != cameras[0]["azimuth_deg"]
    eye = np.array(cameras[0]["eye"])
    assert np.linalg.norm(eye) == pytest.approx(cameras[0]["distance"])
    assert np.allclose(camera_pose(10.0, cameras[0]["azimuth_deg"], cameras[0]["distance"])[0], eye)


def test_random_lighting_varies_the_light_but_not_the_cameras(shape):
    fixed, cams_fixed = render_views(shape, 3, size=48, seed=5)
    lit, cams_lit = render_views(shape, 3, size=48, seed=5, lighting="random")
    assert [c["azimuth_deg"] for c in cams_lit] == [c["azimuth_deg"] for c in cams_fixed]
    assert "lighting" in cams_lit[0] and "lighting" not in cams_fixed[0]
    lights = [tuple(c["lighting"]["light"]) for c in cams_lit]
    assert len(set(lights)) == 3 and all(abs(np.linalg.norm(l) - 1) < 1e-9 for l in lights)
    for image_f, image_l in zip(fixed, lit):
        silhouette_f, silhouette_l = (image_f != 255).any(-1), (image_l != 255).any(-1)
        assert np.array_equal(silhouette_f, silhouette_l)  # same camera: same silhouette
        assert np.abs(image_f.astype(int) - image_l.astype(int))[silhouette_f].mean() > 1  # other shading
    again, _ = render_views(shape, 3, size=48, seed=5, lighting="random")
    assert all(np.array_equal(a, b) for a, b in zip(lit, again))
    with pytest.raises(ValueError, match="lighting"):
        render_views(shape, 1, size=48, lighting="studio")


def test_sheet(shape, tmp_path):
    image = render_mesh(shape, size=64)
    rows = [[shape, image, None], [trimesh.Trimesh(), image[:32, :32], shape]]
    sheet = make_sheet(rows, row_labels=["gt", "pred"], col_labels=["a", "b", "c"], size=64)
    assert isinstance(sheet, Image.Image)
    assert sheet.width > 3 * 64 and sheet.height > 2 * 64
    path = save_sheet(tmp_path / "sub" / "sheet.png", rows, row_labels=["gt", "pred"], col_labels=["a", "b", "c"], size=64)
    assert path.exists() and Image.open(path).size == sheet.size
