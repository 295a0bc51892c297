"""CPU rendering of meshes by ray casting (no OpenGL): shaded views and labelled comparison sheets.

A pinhole camera on a sphere around the origin looks at the origin; by default its distance is chosen so
that the whole ``[-1, 1]^3`` box (its bounding sphere, radius sqrt(3)) is in view. One ray per pixel (or
``supersample^2``) is cast with trimesh's Embree intersector (``embreex``) when available, falling back to
trimesh's pure-numpy intersector with a warning. Shading is Lambert (one directional light given in camera
coordinates) plus ambient, two-sided, on a white background. Rendering is deterministic.

World "up" is +Y by default (glTF / Objaverse / the pybullet bunny and duck); pass ``up_axis="z"`` for
Z-up data. Azimuth 0 looks at the front (from +Z for Y-up, from -Y for Z-up); positive azimuths turn the
camera towards +X.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import trimesh
from PIL import Image, ImageDraw, ImageFont

__all__ = ["camera_pose", "render_mesh", "render_views", "make_sheet", "save_sheet"]

_AXES = {  # up, front, right
    "y": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
    "z": ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0)),
}
_warned_no_embree = False


def _default_distance(fov_deg: float, radius: float = math.sqrt(3.0), margin: float = 1.02) -> float:
    """Camera distance at which a sphere of ``radius`` around the origin just fits the field of view."""
    return margin * radius / math.sin(math.radians(fov_deg) / 2.0)


def camera_pose(
    elevation_deg: float, azimuth_deg: float, distance: float, up_axis: str = "y"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Camera ``(eye, forward, right, up)`` unit frame (eye is a position) looking at the origin."""
    up_w, front_w, right_w = (np.asarray(v) for v in _AXES[up_axis])
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    eye = distance * (math.cos(el) * (math.cos(az) * front_w + math.sin(az) * right_w) + math.sin(el) * up_w)
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, up_w)
    if np.linalg.norm(right) < 1e-8:  # looking straight up or down
        right = right_w.astype(float)
    right = right / np.linalg.norm(right)
    up = np.cross(right, forward)
    return eye, forward, right, up


def _intersector(mesh: trimesh.Trimesh):
    """The mesh's cached ray intersector (Embree when ``embreex`` is installed; warns once otherwise).

    ``mesh.ray`` is cached on the mesh, so rendering several views of one mesh builds its BVH once.
    """
    global _warned_no_embree
    if not trimesh.ray.has_embree and not _warned_no_embree:
        warnings.warn("embreex is not available: rendering with trimesh's slow pure-numpy ray intersector")
        _warned_no_embree = True
    return mesh.ray


def render_mesh(
    mesh: trimesh.Trimesh | None,
    size: int = 224,
    elevation_deg: float = 20.0,
    azimuth_deg: float = 45.0,
    distance: float | None = None,
    light: Sequence[float] = (-0.4, 0.6, 0.7),
    fov_deg: float = 30.0,
    ambient: float = 0.3,
    diffuse: float = 0.7,
    color: Sequence[float] = (0.72, 0.76, 0.84),
    background: Sequence[int] = (255, 255, 255),
    smooth: bool = False,
    supersample: int = 1,
    up_axis: str = "y",
    fit_radius: float = math.sqrt(3.0),
) -> np.ndarray:
    """Render ``mesh`` to a ``(size, size, 3)`` uint8 image.

    Args:
        mesh: the mesh (``None`` or an empty mesh gives a blank image).
        size: image side in pixels.
        elevation_deg, azimuth_deg: camera direction (see the module docstring).
        distance: camera distance from the origin; ``None`` fits a sphere of ``fit_radius`` around the
            origin in view (the default radius sqrt(3) holds the whole ``[-1, 1]^3`` box from any view;
            about 1.0 frames a normalised shape more tightly but may clip box corners).
        light: direction towards the light in camera coordinates (x right, y up, z towards the viewer).
        fov_deg: vertical (= horizontal) field of view.
        ambient, diffuse: shading weights, ``color * (ambient + diffuse * max(0, n.l))``.
        color: surface albedo (RGB in [0, 1]).
        background: background RGB.
        smooth: interpolate vertex normals (otherwise flat shading by face normals).
        supersample: cast ``supersample^2`` rays per pixel and average (anti-aliasing).
        up_axis: ``"y"`` or ``"z"``.
        fit_radius: see ``distance``.
    """
    bg = np.asarray(background, dtype=np.float64) / 255.0
    side = size * supersample
    image_HW3 = np.broadcast_to(bg, (side, side, 3)).copy()
    if mesh is not None and len(mesh.faces) > 0:
        if distance is None:
            distance = _default_distance(fov_deg, fit_radius)
        eye, forward, right, up = camera_pose(elevation_deg, azimuth_deg, distance, up_axis)
        half = math.tan(math.radians(fov_deg) / 2.0)
        ticks = (np.arange(side) + 0.5) / side * 2.0 - 1.0
        px_x, px_y = np.meshgrid(ticks, -ticks)  # rows top to bottom, y up
        dirs_P3 = forward + half * (px_x.reshape(-1, 1) * right + px_y.reshape(-1, 1) * up)
        dirs_P3 /= np.linalg.norm(dirs_P3, axis=1, keepdims=True)
        origins_P3 = np.broadcast_to(eye, dirs_P3.shape)
        intersector = _intersector(mesh)
        if smooth:
            tri_H, ray_H, hit_H3 = intersector.intersects_id(
                origins_P3, dirs_P3, multiple_hits=False, return_locations=True
            )
            bary_H3 = trimesh.triangles.points_to_barycentric(mesh.triangles[tri_H], hit_H3)
            normal_H3 = np.einsum("hk,hkd->hd", bary_H3, mesh.vertex_normals[mesh.faces[tri_H]])
        else:
            tri_P = intersector.intersects_first(origins_P3, dirs_P3)
            ray_H = np.flatnonzero(tri_P >= 0)
            tri_H = tri_P[ray_H]
            normal_H3 = mesh.face_normals[tri_H]
        normal_H3 = normal_H3 / np.maximum(np.linalg.norm(normal_H3, axis=1, keepdims=True), 1e-12)
        # two-sided: make normals face the camera
        facing_H = np.einsum("hd,hd->h", normal_H3, dirs_P3[ray_H])
        normal_H3 = np.where(facing_H[:, None] > 0, -normal_H3, normal_H3)
        light_w = np.asarray(light, dtype=np.float64)
        light_w = light_w[0] * right + light_w[1] * up - light_w[2] * forward
        light_w /= np.linalg.norm(light_w)
        lambert_H = np.clip(normal_H3 @ light_w, 0.0, 1.0)
        shade_H3 = np.asarray(color)[None, :] * (ambient + diffuse * lambert_H)[:, None]
        image_HW3.reshape(-1, 3)[ray_H] = np.clip(shade_H3, 0.0, 1.0)
    if supersample > 1:
        image_HW3 = image_HW3.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return np.round(image_HW3 * 255.0).astype(np.uint8)


#: Ranges of ``lighting="random"`` (per view, seeded): light direction in camera coordinates, ambient
#: weight, and a grey-level change of the albedo.
RANDOM_LIGHT_X, RANDOM_LIGHT_Y, RANDOM_LIGHT_Z = (-0.8, 0.8), (0.1, 0.9), (0.3, 1.0)
RANDOM_AMBIENT, RANDOM_ALBEDO_SCALE = (0.15, 0.45), (0.85, 1.1)


def random_lighting(rng: np.random.Generator, base_color: Sequence[float] = (0.72, 0.76, 0.84)) -> dict:
    """One view's lighting drawn from the ``RANDOM_*`` ranges: ``light``, ``ambient``, ``diffuse``, ``color``
    (the default fixed lighting, (-0.4, 0.6, 0.7), 0.3 and 0.7, lies inside them)."""
    light = np.array([rng.uniform(*RANDOM_LIGHT_X), rng.uniform(*RANDOM_LIGHT_Y), rng.uniform(*RANDOM_LIGHT_Z)])
    ambient = float(rng.uniform(*RANDOM_AMBIENT))
    scale = float(rng.uniform(*RANDOM_ALBEDO_SCALE))
    return {"light": (light / np.linalg.norm(light)).tolist(), "ambient": ambient, "diffuse": 1.0 - ambient,
            "color": np.clip(np.asarray(base_color) * scale, 0.0, 1.0).tolist()}


def render_views(
    mesh: trimesh.Trimesh | None,
    n_views: int,
    size: int = 224,
    elevations: Sequence[float] = (20.0, -10.0, 45.0),
    seed: int = 0,
    lighting: str = "fixed",
    **render_kwargs,
) -> tuple[list[np.ndarray], list[dict]]:
    """``n_views`` renders: view ``k`` uses elevation ``elevations[k % len(elevations)]`` and an azimuth
    drawn uniformly in [0, 360) from ``np.random.default_rng(seed)``.

    ``lighting="random"`` also varies each view's light direction, ambient/diffuse balance and albedo
    brightness (:func:`random_lighting`, from a second stream of the same seed, so the azimuths are
    those of ``"fixed"``), for image conditions that do not depend on one lighting set-up.

    Returns the images and, per view, the camera parameters (``elevation_deg``, ``azimuth_deg``,
    ``distance``, ``fov_deg``, ``up_axis``, ``eye``) and, with random lighting, its ``lighting``.
    """
    if lighting not in ("fixed", "random"):
        raise ValueError(f"lighting must be 'fixed' or 'random', got {lighting!r}")
    rng = np.random.default_rng(seed)
    azimuths = rng.uniform(0.0, 360.0, size=n_views)
    light_rng = np.random.default_rng([seed, 1])
    fov_deg = render_kwargs.get("fov_deg", 30.0)
    distance = render_kwargs.pop("distance", None) or _default_distance(
        fov_deg, render_kwargs.get("fit_radius", math.sqrt(3.0))
    )
    up_axis = render_kwargs.get("up_axis", "y")
    images, cameras = [], []
    for k in range(n_views):
        elevation = float(elevations[k % len(elevations)])
        azimuth = float(azimuths[k])
        view_kwargs = dict(render_kwargs)
        light = None
        if lighting == "random":
            light = random_lighting(light_rng, render_kwargs.get("color", (0.72, 0.76, 0.84)))
            view_kwargs.update(light)
        images.append(render_mesh(mesh, size=size, elevation_deg=elevation, azimuth_deg=azimuth, distance=distance,
                                  **view_kwargs))
        eye = camera_pose(elevation, azimuth, distance, up_axis)[0]
        camera = {"elevation_deg": elevation, "azimuth_deg": azimuth, "distance": distance, "fov_deg": fov_deg,
                  "up_axis": up_axis, "eye": eye.tolist()}
        if light is not None:
            camera["lighting"] = light
        cameras.append(camera)
    return images, cameras


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _cell_image(item, size: int, render_kwargs: dict) -> Image.Image:
    if item is None or (isinstance(item, trimesh.Trimesh) and len(item.faces) == 0):
        cell = Image.new("RGB", (size, size), (245, 245, 245))
        draw = ImageDraw.Draw(cell)
        font = _font(max(10, size // 12))
        draw.text((size / 2, size / 2), "empty", fill=(150, 150, 150), font=font, anchor="mm")
        return cell
    if isinstance(item, trimesh.Trimesh):
        return Image.fromarray(render_mesh(item, size=size, **render_kwargs))
    array = np.asarray(item)
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    cell = Image.fromarray(array)
    return cell.convert("RGB").resize((size, size), Image.BILINEAR) if cell.size != (size, size) else cell.convert("RGB")


def make_sheet(
    rows: Sequence[Sequence[np.ndarray | trimesh.Trimesh | None]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    size: int = 224,
    pad: int = 4,
    font_size: int = 14,
    label_width: int | None = None,
    **render_kwargs,
) -> Image.Image:
    """A labelled grid of images; meshes are rendered on the fly (``render_kwargs`` go to
    :func:`render_mesh`), ``None`` or empty meshes become grey cells marked "empty"."""
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    font = _font(font_size)
    if label_width is None:
        longest = max((len(s) for s in row_labels), default=0) if row_labels else 0
        label_width = 0 if not row_labels else max(40, int(0.62 * font_size * longest) + 2 * pad)
    header = 0 if not col_labels else font_size + 3 * pad
    width = label_width + n_cols * (size + pad) + pad
    height = header + n_rows * (size + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(col_labels or []):
        x = label_width + pad + c * (size + pad) + size / 2
        draw.text((x, header / 2), str(label), fill=(0, 0, 0), font=font, anchor="mm")
    for r, row in enumerate(rows):
        y = header + pad + r * (size + pad)
        if row_labels and r < len(row_labels):
            draw.text((pad, y + size / 2), str(row_labels[r]), fill=(0, 0, 0), font=font, anchor="lm")
        for c, item in enumerate(row):
            sheet.paste(_cell_image(item, size, render_kwargs), (label_width + pad + c * (size + pad), y))
    return sheet


def save_sheet(path: str | Path, rows, row_labels=None, col_labels=None, size: int = 224, **kwargs) -> Path:
    """:func:`make_sheet` saved to ``path`` (format from the suffix, e.g. ``.png``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_sheet(rows, row_labels=row_labels, col_labels=col_labels, size=size, **kwargs).save(path)
    return path
