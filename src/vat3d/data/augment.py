"""Seeded mesh augmentation: rotation, anisotropic scale, mirroring and unions of parts.

Every function here is pure: it returns a new mesh and never changes its input, and the same
``seed`` always gives the same result. Meshes are Y-up (as everywhere in vat3d); transforms
act about the origin (the data pipeline normalises shapes afterwards).

* :func:`augment_mesh` mirrors (with a probability), scales each axis and rotates (uniformly
  over SO(3), or about the up axis only). A mirroring map has a negative determinant, so the
  faces' winding is reversed with it: normals stay outward and the winding number stays +1
  inside.
* :func:`union_of_parts` places 2-4 meshes (scaled, rotated, each touching or reaching into
  one placed before it) into one mesh: a manifold3d boolean union when every part is a
  closed manifold, else a plain concatenation (the preparation pipeline labels occupancy
  with winding numbers, so overlapping closed parts are fine).
* :func:`parse_augment_spec` reads how a user asks for augmentation, e.g.
  ``"rot,aniso=0.7-1.3,mirror"`` or ``"rot=up,parts=2-3"``.

Each random choice has its own stream (rotation, scale, mirror, parts), so switching one
augmentation on or off does not change what the others draw for a seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import trimesh

AXES = "xyz"

_ROTATION_STREAM, _SCALE_STREAM, _MIRROR_STREAM, _PARTS_STREAM = 1, 2, 3, 4


#: In every augmented item's content hash: bump when the same seed and spec give another mesh.
AUGMENT_VERSION = 1


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, stream]))


def _rotation_mode(rotate: bool | str | None) -> str | None:
    """``True`` / ``"so3"``: uniform over SO(3); ``"up"``: about the up (Y) axis; else none."""
    if rotate is None or rotate is False or rotate == "none":
        return None
    if rotate is True or rotate == "so3":
        return "so3"
    if rotate in ("up", "y"):
        return "up"
    raise ValueError(f"rotate must be True, False, 'so3' or 'up', got {rotate!r}")


def random_rotation(rng: np.random.Generator, mode: str = "so3") -> np.ndarray:
    """A random 3x3 rotation: uniform over SO(3) (``"so3"``: a normalised Gaussian
    quaternion) or about the up (Y) axis by a uniform angle (``"up"``)."""
    if mode == "up":
        angle = float(rng.uniform(0.0, 2.0 * np.pi))
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    if mode != "so3":
        raise ValueError(f"rotation mode must be 'so3' or 'up', got {mode!r}")
    w, x, y, z = rng.normal(size=4)
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _scale_range(anisotropic: Sequence[float] | bool | None) -> tuple[float, float] | None:
    if anisotropic is None or anisotropic is False:
        return None
    if anisotropic is True:
        return (0.7, 1.3)
    low, high = (float(v) for v in anisotropic)
    if not (0.0 < low <= high and np.isfinite(high)):
        raise ValueError(f"anisotropic scale range must be (low, high) with 0 < low <= high, got {anisotropic!r}")
    return low, high


def _mirror_probability(mirror: bool | float) -> float:
    if mirror is True:
        return 0.5
    if mirror is False or mirror is None:
        return 0.0
    probability = float(mirror)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"mirror probability must be in [0, 1], got {mirror!r}")
    return probability


def transform_mesh(mesh: trimesh.Trimesh, matrix_33: np.ndarray, translation: Sequence[float] = (0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    """A new mesh with vertices ``matrix @ v + translation``; faces reversed when the map
    mirrors (negative determinant), so that normals stay outward."""
    matrix_33 = np.asarray(matrix_33, dtype=np.float64)
    vertices_V3 = np.asarray(mesh.vertices, dtype=np.float64) @ matrix_33.T + np.asarray(translation, dtype=np.float64)
    faces_F3 = np.asarray(mesh.faces, dtype=np.int64)
    if np.linalg.det(matrix_33) < 0:
        faces_F3 = faces_F3[:, ::-1]
    return trimesh.Trimesh(vertices_V3, np.ascontiguousarray(faces_F3), process=False)


def augment_mesh(
    mesh: trimesh.Trimesh,
    seed: int,
    *,
    rotate: bool | str | None = True,
    anisotropic: Sequence[float] | bool | None = (0.7, 1.3),
    mirror: bool | float = True,
) -> tuple[trimesh.Trimesh, dict[str, Any]]:
    """A seeded random mirror, per-axis scale and rotation of ``mesh`` (in that order).

    Args:
        rotate: ``True`` or ``"so3"``: uniform over SO(3); ``"up"``: about the up (Y) axis
            only; ``False`` / ``None``: no rotation.
        anisotropic: ``(low, high)``: each of the mesh's own axes is scaled by a factor drawn
            uniformly from that range (before the rotation); ``None`` / ``False``: no scale.
        mirror: ``True`` mirrors across a random axis plane with probability 1/2, a float is
            that probability, ``False`` never mirrors.

    Returns:
        ``(new mesh, info)``: ``info`` (JSON-friendly) holds ``seed``, ``rotation_mode``,
        ``rotation`` (3x3), ``scale`` (3 factors along x, y, z), ``mirror_axis`` ("x", "y",
        "z" or None), ``matrix`` (the 3x3 linear map applied: ``v' = matrix @ v``) and
        ``flipped_faces`` (whether the winding was reversed).
    """
    mode = _rotation_mode(rotate)
    scale_range = _scale_range(anisotropic)
    probability = _mirror_probability(mirror)

    mirror_rng = _rng(seed, _MIRROR_STREAM)
    mirror_draw, mirror_axis = float(mirror_rng.random()), int(mirror_rng.integers(3))
    flip_3 = np.ones(3)
    mirrored = mirror_draw < probability
    if mirrored:
        flip_3[mirror_axis] = -1.0
    scale_3 = np.ones(3)
    if scale_range is not None:
        scale_3 = _rng(seed, _SCALE_STREAM).uniform(scale_range[0], scale_range[1], size=3)
    rotation_33 = random_rotation(_rng(seed, _ROTATION_STREAM), mode) if mode else np.eye(3)
    matrix_33 = rotation_33 @ np.diag(scale_3 * flip_3)
    result = transform_mesh(mesh, matrix_33)
    info = {
        "seed": int(seed),
        "rotation_mode": mode,
        "rotation": rotation_33.tolist(),
        "scale": scale_3.tolist(),
        "mirror_axis": AXES[mirror_axis] if mirrored else None,
        "matrix": matrix_33.tolist(),
        "flipped_faces": bool(np.linalg.det(matrix_33) < 0),
    }
    return result, info


# --------------------------------------------------------------------------- unions of parts


def _as_manifold(mesh: trimesh.Trimesh):
    """The mesh as a manifold3d solid, or None when it is not a closed, oriented manifold."""
    from manifold3d import Error, Manifold, Mesh64

    if len(mesh.faces) == 0:
        return None
    merged = mesh.copy()
    merged.merge_vertices()  # files often repeat vertices per face
    solid = Manifold(Mesh64(vert_properties=np.ascontiguousarray(merged.vertices, dtype=np.float64),
                            tri_verts=np.ascontiguousarray(merged.faces, dtype=np.uint64)))
    if solid.status() != Error.NoError or solid.is_empty() or solid.volume() <= 0:
        return None
    return solid


def _from_manifold(solid) -> trimesh.Trimesh:
    mesh = solid.to_mesh64()
    return trimesh.Trimesh(np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3],
                           np.asarray(mesh.tri_verts, dtype=np.int64), process=False)


def union_of_parts(
    meshes: Sequence[trimesh.Trimesh],
    seed: int,
    *,
    count: int | tuple[int, int] | None = None,
    rotate: bool | str | None = True,
    scale: tuple[float, float] = (0.5, 1.0),
    overlap: tuple[float, float] = (0.0, 0.25),
    method: str = "auto",
) -> tuple[trimesh.Trimesh, dict[str, Any]]:
    """Place several of ``meshes`` into one mesh, each touching or reaching into another.

    Each part is centred (bounding box), scaled to a bounding-box diagonal drawn from
    ``scale`` (the first part: 1) and rotated (``rotate`` as in :func:`augment_mesh`). Part
    ``k >= 1`` is attached to a random earlier part along a random direction ``u``: its
    extreme point along ``-u`` is put at the earlier part's extreme point along ``u``, then
    pushed back along ``-u`` by a fraction (drawn from ``overlap``) of its own size, so the
    two touch (0) or overlap.

    Args:
        meshes: at least two meshes. With more than four (or when ``count`` is given), a
            seeded choice of ``count`` of them is used (default: 2-4).
        count: how many parts, or a ``(low, high)`` range to draw it from.
        method: ``"manifold"`` (a boolean union; every part must be a closed manifold),
            ``"concatenate"`` (the parts' meshes side by side, overlaps left in) or
            ``"auto"`` (manifold when possible, else concatenate).

    Returns:
        ``(mesh, info)``: ``info`` has ``seed``, ``method`` (the one used) and ``parts``: for
        each part its ``index`` into ``meshes``, ``scale``, ``rotation`` (3x3),
        ``translation`` and ``matrix`` (4x4 from the input mesh to its place).
    """
    if method not in ("auto", "manifold", "concatenate"):
        raise ValueError(f"method must be auto, manifold or concatenate, got {method!r}")
    if len(meshes) < 2:
        raise ValueError(f"union_of_parts needs at least two meshes, got {len(meshes)}")
    mode = _rotation_mode(rotate)
    rng = _rng(seed, _PARTS_STREAM)
    if count is None:
        low, high = (2, 4) if len(meshes) > 4 else (len(meshes), len(meshes))
    elif isinstance(count, (tuple, list)):
        low, high = int(count[0]), int(count[1])
    else:
        low = high = int(count)
    if not 2 <= low <= high:
        raise ValueError(f"part count must be at least 2 (low <= high), got {count!r}")
    n_parts = int(rng.integers(low, high + 1))
    if count is None and n_parts == len(meshes):
        chosen = np.arange(n_parts)  # all of them, in order
    else:  # a seeded choice; repeats only when asked for more parts than meshes
        chosen = rng.choice(len(meshes), size=n_parts, replace=n_parts > len(meshes))

    placed: list[trimesh.Trimesh] = []
    parts_info: list[dict[str, Any]] = []
    for k, index in enumerate(chosen):
        source = meshes[int(index)]
        vertices_V3 = np.asarray(source.vertices, dtype=np.float64)
        low_3, high_3 = vertices_V3.min(axis=0), vertices_V3.max(axis=0)
        diagonal = float(np.linalg.norm(high_3 - low_3))
        if diagonal <= 0:
            raise ValueError(f"mesh {int(index)} has no extent")
        size = 1.0 if k == 0 else float(rng.uniform(*scale))
        rotation_33 = random_rotation(rng, mode) if mode else np.eye(3)
        linear_33 = rotation_33 * (size / diagonal)
        centre_3 = (low_3 + high_3) / 2.0
        moved_V3 = (vertices_V3 - centre_3) @ linear_33.T
        offset_3 = np.zeros(3)
        if k > 0:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            anchor = placed[int(rng.integers(len(placed)))]
            anchor_point = anchor.vertices[int(np.argmax(anchor.vertices @ direction))]
            own_point = moved_V3[int(np.argmin(moved_V3 @ direction))]
            push = float(rng.uniform(*overlap)) * size
            offset_3 = anchor_point - own_point - direction * push
        part = trimesh.Trimesh(moved_V3 + offset_3, np.asarray(source.faces, dtype=np.int64), process=False)
        placed.append(part)
        translation_3 = offset_3 - linear_33 @ centre_3
        matrix_44 = np.eye(4)
        matrix_44[:3, :3], matrix_44[:3, 3] = linear_33, translation_3
        parts_info.append({"index": int(index), "scale": size, "rotation": rotation_33.tolist(),
                           "translation": translation_3.tolist(), "matrix": matrix_44.tolist()})

    used = "concatenate"
    result = None
    if method in ("auto", "manifold"):
        solids = [_as_manifold(part) for part in placed]
        if all(solid is not None for solid in solids):
            from manifold3d import Manifold, OpType

            result = _from_manifold(Manifold.batch_boolean(solids, OpType.Add))
            used = "manifold"
        elif method == "manifold":
            bad = [parts_info[i]["index"] for i, solid in enumerate(solids) if solid is None]
            raise ValueError(f"meshes {bad} are not closed manifolds; use method='concatenate' or 'auto'")
    if result is None:
        result = trimesh.util.concatenate(placed)
        result = trimesh.Trimesh(result.vertices, result.faces, process=False)
    return result, {"seed": int(seed), "method": used, "parts": parts_info}


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class AugmentSpec:
    """What augmentation a user asked for (see :func:`parse_augment_spec`)."""

    rotate: str | None = None  # "so3", "up" or None
    anisotropic: tuple[float, float] | None = None
    mirror: float = 0.0  # probability of mirroring
    parts: tuple[int, int] | None = None  # unions of this many parts (low, high)

    @property
    def enabled(self) -> bool:
        return bool(self.rotate or self.anisotropic or self.mirror or self.parts)

    def mesh_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`augment_mesh`."""
        return {"rotate": self.rotate or False, "anisotropic": self.anisotropic, "mirror": self.mirror}

    def __str__(self) -> str:
        words = []
        if self.rotate:
            words.append("rot" if self.rotate == "so3" else "rot=up")
        if self.anisotropic:
            words.append(f"aniso={self.anisotropic[0]:g}-{self.anisotropic[1]:g}")
        if self.mirror:
            words.append("mirror" if self.mirror == 0.5 else f"mirror={self.mirror:g}")
        if self.parts:
            low, high = self.parts
            words.append(f"parts={low}" if low == high else f"parts={low}-{high}")
        return ",".join(words) or "none"


_WORDS = {"rot": "rot", "rotate": "rot", "aniso": "aniso", "anisotropic": "aniso", "mirror": "mirror",
          "parts": "parts", "union": "parts"}
_HELP = ("rot[=so3|up], aniso[=LOW-HIGH] (default 0.7-1.3), mirror[=PROBABILITY] (default 0.5), "
         "parts[=N or LOW-HIGH] (default 2-4), or none")


def _range(text: str, word: str, *, integer: bool = False) -> tuple[Any, Any]:
    pieces = text.replace(":", "-").split("-")
    try:
        values = [int(piece) if integer else float(piece) for piece in pieces]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(np.isfinite(values)):
        kind = "N or LOW-HIGH (integers)" if integer else "LOW-HIGH (e.g. 0.7-1.3)"
        raise ValueError(f"augmentation {word}={text!r}: expected {kind}")
    return values[0], values[1]


def parse_augment_spec(spec: str | AugmentSpec | None) -> AugmentSpec:
    """Parse a comma-separated augmentation spec, e.g. ``"rot,aniso=0.7-1.3,mirror"``.

    Words (case-insensitive): ``rot`` / ``rotate`` (``=so3``, the default, or ``=up`` for the
    up axis only), ``aniso`` / ``anisotropic`` (``=LOW-HIGH``, default 0.7-1.3), ``mirror``
    (``=PROBABILITY``, default 0.5), ``parts`` / ``union`` (``=N`` or ``=LOW-HIGH`` parts per
    union, default 2-4, between 2 and 8). ``""`` or ``"none"`` asks for nothing. Raises
    ``ValueError`` naming the offending word for unknown words, repeats and bad values.
    """
    if isinstance(spec, AugmentSpec):
        return spec
    text = (spec or "").strip().lower()
    if text in ("", "none", "off"):
        return AugmentSpec()
    fields: dict[str, Any] = {}
    seen: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"empty item in augmentation spec {spec!r}")
        word, has_value, value = (part.strip() for part in item.partition("="))
        key = _WORDS.get(word)
        if key is None:
            raise ValueError(f"unknown augmentation {word!r} in {spec!r}; known: {_HELP}")
        if key in seen:
            raise ValueError(f"augmentation {word!r} given twice in {spec!r}")
        seen.add(key)
        if has_value and not value:
            raise ValueError(f"augmentation {word!r} has an empty value in {spec!r}")
        if key == "rot":
            if value in ("", "so3", "any"):
                fields["rotate"] = "so3"
            elif value in ("up", "y", "yaw"):
                fields["rotate"] = "up"
            else:
                raise ValueError(f"augmentation rot={value!r}: expected rot, rot=so3 or rot=up")
        elif key == "aniso":
            low, high = _range(value, word) if value else (0.7, 1.3)
            if not 0.0 < low <= high:
                raise ValueError(f"augmentation {word}={value!r}: need 0 < LOW <= HIGH")
            fields["anisotropic"] = (low, high)
        elif key == "mirror":
            try:
                probability = float(value) if value else 0.5
            except ValueError:
                raise ValueError(f"augmentation mirror={value!r}: expected a probability in [0, 1]") from None
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"augmentation mirror={value!r}: expected a probability in [0, 1]")
            fields["mirror"] = probability
        else:
            low, high = _range(value, word, integer=True) if value else (2, 4)
            if not 2 <= low <= high <= 8:
                raise ValueError(f"augmentation {word}={value!r}: need 2 <= LOW <= HIGH <= 8 parts")
            fields["parts"] = (low, high)
    return AugmentSpec(**fields)
