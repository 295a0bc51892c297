"""What the procedural families share: the shape record, the parameter stream, solid and profile helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trimesh
from manifold3d import CrossSection, JoinType, Manifold, OpType

#: Part of every family's parameter stream; unlike GENERATOR_VERSION it stays fixed so that
#: ``make_family(family, seed)`` of the older families is unchanged when families are added.
_PARAM_STREAM = 1

_SEGMENTS = 40  # circular segments of round parts (small meshes keep preparation fast)


@dataclass
class ProceduralShape:
    """A generated shape: its Y-up mesh, family, parameters, caption and seed."""

    mesh: trimesh.Trimesh
    family: str
    params: dict[str, Any] = field(default_factory=dict)
    caption: str = ""
    seed: int = 0


class _Params:
    """Draws parameters from a generator and records them (rounded) for the caption."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.values: dict[str, Any] = {}

    def uniform(self, name: str, low: float, high: float) -> float:
        value = round(float(self.rng.uniform(low, high)), 4)
        self.values[name] = value
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        """An integer in ``[low, high]`` (inclusive)."""
        value = int(self.rng.integers(low, high + 1))
        self.values[name] = value
        return value

    def flag(self, name: str, probability: float) -> bool:
        value = bool(self.rng.random() < probability)
        self.values[name] = value
        return value

    def choice(self, name: str, options: list[str]) -> str:
        value = options[int(self.rng.integers(len(options)))]
        self.values[name] = value
        return value


# --------------------------------------------------------------------------- primitives


def _box(sx: float, sy: float, sz: float, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> Manifold:
    """An axis-aligned box of size (sx, sy, sz) centred at (x, y, z)."""
    return Manifold.cube((sx, sy, sz), center=True).translate((x, y, z))


def _cylinder(height: float, radius: float, radius_top: float | None = None, z0: float = 0.0) -> Manifold:
    """A Z-axis cylinder (or frustum) from ``z0`` to ``z0 + height``."""
    top = radius if radius_top is None else radius_top
    return Manifold.cylinder(height, radius, top, _SEGMENTS).translate((0.0, 0.0, z0))


def _sphere(radius: float, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> Manifold:
    return Manifold.sphere(radius, _SEGMENTS).translate((x, y, z))


def _torus(major: float, minor: float) -> Manifold:
    """A torus around the Z axis."""
    return CrossSection.circle(minor, _SEGMENTS // 2).translate((major, 0.0)).revolve(_SEGMENTS)


def _union(parts: list[Manifold]) -> Manifold:
    return Manifold.batch_boolean(parts, OpType.Add)


def _revolve(profile_P2: list[tuple[float, float]]) -> Manifold:
    """Revolve a closed (radius, height) polygon around the Z axis."""
    return CrossSection([np.asarray(profile_P2, dtype=np.float64)]).revolve(_SEGMENTS)


def _count_word(n: int) -> str:
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    return words[n] if 0 <= n < len(words) else str(n)


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase



# --------------------------------------------------------------------------- helpers of the newer families
# 2D profiles (CrossSection) are drawn in (x, y) and extruded along +Z or revolved about Z
# (``revolve`` reads x as the radius and y as the height).

_HOLE_SEGMENTS = 20  # small holes, bolts and slots
_PIPE_SEGMENTS = 28  # pipe cross-sections


def _circle2(radius: float, x: float = 0.0, y: float = 0.0, segments: int = _SEGMENTS) -> CrossSection:
    return CrossSection.circle(radius, segments).translate((x, y))


def _rect2(width: float, height: float, x: float = 0.0, y: float = 0.0) -> CrossSection:
    """An axis-aligned rectangle centred at (x, y)."""
    return CrossSection.square((width, height), center=True).translate((x, y))


def _span2(x0: float, x1: float, y0: float, y1: float) -> CrossSection:
    """The rectangle [x0, x1] x [y0, y1]."""
    return _rect2(x1 - x0, y1 - y0, (x0 + x1) / 2.0, (y0 + y1) / 2.0)


def _rounded_rect2(width: float, height: float, radius: float, x: float = 0.0, y: float = 0.0) -> CrossSection:
    radius = min(radius, 0.49 * min(width, height))
    if radius < 1e-3 * max(width, height):
        return _rect2(width, height, x, y)
    core = _rect2(width - 2.0 * radius, height - 2.0 * radius, x, y)
    return core.offset(radius, JoinType.Round, circular_segments=_SEGMENTS)


def _polygon2(points: Any) -> CrossSection:
    """A simple polygon, either orientation."""
    pts_P2 = np.asarray(points, dtype=np.float64)
    area = 0.5 * float(np.sum(pts_P2[:, 0] * np.roll(pts_P2[:, 1], -1) - np.roll(pts_P2[:, 0], -1) * pts_P2[:, 1]))
    return CrossSection([pts_P2 if area > 0 else pts_P2[::-1].copy()])


def _slot2(length: float, width: float, x: float = 0.0, y: float = 0.0, degrees: float = 0.0) -> CrossSection:
    """An obround slot (a stadium) of overall ``length`` along its axis at ``degrees``."""
    radius = width / 2.0
    half = max(length / 2.0 - radius, 1e-4)
    ends = [_circle2(radius, -half, 0.0, _HOLE_SEGMENTS), _circle2(radius, half, 0.0, _HOLE_SEGMENTS)]
    return CrossSection.batch_hull(ends).rotate(degrees).translate((x, y))


def _union2(parts: list[CrossSection]) -> CrossSection:
    return CrossSection.batch_boolean(parts, OpType.Add)


def _extrude(section: CrossSection, height: float, z0: float = 0.0, **kwargs: Any) -> Manifold:
    return Manifold.extrude(section, height, **kwargs).translate((0.0, 0.0, z0))


def _revolve2(section: CrossSection, segments: int = _SEGMENTS) -> Manifold:
    return section.revolve(segments)


def _rotation_to(direction: Any) -> np.ndarray:
    """A rotation matrix taking +Z to the unit vector along ``direction``."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    c = float(np.dot(z, d))
    if c < -1.0 + 1e-12:
        return np.diag([1.0, -1.0, -1.0])
    v = np.cross(z, d)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def _place(solid: Manifold, rotation_33: np.ndarray, offset: Any = (0.0, 0.0, 0.0)) -> Manifold:
    matrix_34 = np.column_stack([np.asarray(rotation_33, dtype=np.float64), np.asarray(offset, dtype=np.float64)])
    return solid.transform(matrix_34)


def _rod(start: Any, end: Any, radius: float, segments: int = _SEGMENTS) -> Manifold:
    """A cylinder of ``radius`` from ``start`` to ``end``."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    length = float(np.linalg.norm(end - start))
    return _place(Manifold.cylinder(length, radius, radius, segments), _rotation_to(end - start), start)


def _catmull_rom(values: Any, samples: int) -> np.ndarray:
    """``samples`` points of the Catmull-Rom spline through equally spaced ``values``."""
    v = np.asarray(values, dtype=np.float64)
    t = np.linspace(0.0, len(v) - 1.0, samples)
    i = np.clip(np.floor(t).astype(np.int64), 0, len(v) - 2)
    u = t - i
    p0, p1, p2, p3 = v[np.clip(i - 1, 0, len(v) - 1)], v[i], v[i + 1], v[np.clip(i + 2, 0, len(v) - 1)]
    return 0.5 * (2.0 * p1 + (p2 - p0) * u + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * u**2
                  + (3.0 * p1 - p0 - 3.0 * p2 + p3) * u**3)


def _ring_points(count: int, radius: float, phase: float = 0.0) -> list[tuple[float, float]]:
    angles = phase + 2.0 * np.pi * np.arange(count) / count
    return [(radius * float(np.cos(a)), radius * float(np.sin(a))) for a in angles]


def _holes2(centres: list[tuple[float, float]], radius: float) -> CrossSection:
    return _union2([_circle2(radius, x, y, _HOLE_SEGMENTS) for x, y in centres])


def _size_word(value: float, small: float, large: float, words: tuple[str, str]) -> str:
    """``words[0]`` below ``small``, ``words[1]`` above ``large``, else nothing."""
    return words[0] if value < small else (words[1] if value > large else "")


def _involute_gear2(teeth: int, module: float, *, tip: float | None = None, root: float | None = None,
                    backlash: float = 0.0, phase: float = 0.0, pressure_degrees: float = 20.0,
                    flank_points: int = 5) -> CrossSection:
    """The outline of an involute spur gear (tooth 0 centred at angle ``phase``).

    ``tip`` / ``root`` default to the standard addendum (module) and dedendum (1.25 module);
    ``backlash`` thins each tooth by that arc length at the pitch circle.
    """
    pitch = module * teeth / 2.0
    base = pitch * np.cos(np.radians(pressure_degrees))
    tip = pitch + module if tip is None else tip
    root = pitch - 1.25 * module if root is None else root

    def involute(r: np.ndarray) -> np.ndarray:
        phi = np.arccos(np.clip(base / r, -1.0, 1.0))
        return np.tan(phi) - phi

    half_pitch_angle = np.pi / (2.0 * teeth) - backlash / (2.0 * pitch)
    inv_pitch = float(involute(np.array([pitch]))[0])
    start = max(base, root)
    radii = np.linspace(start, tip, flank_points)
    half = half_pitch_angle + inv_pitch - involute(radii)  # flank's angle from the tooth centre
    keep = half > 0.15 * half_pitch_angle  # stop before the tooth would come to a point
    radii, half = radii[keep], half[keep]
    points: list[tuple[float, float]] = []
    step = 2.0 * np.pi / teeth
    for k in range(teeth):
        centre = phase + k * step
        angles = np.concatenate([[centre - half[0]], centre - half, centre + half[::-1], [centre + half[0]],
                                 [centre + step / 2.0]])
        rs = np.concatenate([[root], radii, radii[::-1], [root], [root]])
        points.extend(zip((rs * np.cos(angles)).tolist(), (rs * np.sin(angles)).tolist()))
    return _polygon2(points)


def _wave_noise(rng_values: np.ndarray, points_N3: np.ndarray, frequency: float) -> np.ndarray:
    """Smooth zero-mean noise in space: sums of random plane waves, halving in amplitude and
    doubling in frequency per octave (of order 1 in size).

    ``rng_values`` is a (octaves, waves, 4) array of uniforms in [0, 1): the wave directions
    (3) and phases (1), drawn once per shape so the noise is a pure function of the seed.
    """
    total = np.zeros(len(points_N3))
    for octave in range(len(rng_values)):
        waves = rng_values[octave]
        axes = waves[:, :3] * 2.0 - 1.0
        axes /= np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-9)
        phases = waves[:, 3] * 2.0 * np.pi
        f = frequency * 2.0**octave
        total += 0.5**octave * np.sin(f * points_N3 @ axes.T + phases).sum(axis=1) / np.sqrt(len(waves))
    return total


def _metaball_field(points_M3: np.ndarray, balls: list[tuple[Any, Any, float, float]]) -> np.ndarray:
    """Sum of ``weight * (radius / distance)^4`` over balls and segments ``(a, b, radius, weight)``.

    A lone ball's 1-level set is its sphere; nearby balls blend smoothly (the fourth power
    keeps lobes distinct where an inverse square would merge them into one round mass).
    """
    total = np.zeros(len(points_M3))
    for a, b, radius, weight in balls:
        a = np.asarray(a, dtype=np.float64)
        ab = np.asarray(b, dtype=np.float64) - a
        rel_M3 = points_M3 - a
        denom = float(ab @ ab)
        if denom > 0.0:
            rel_M3 -= np.clip(rel_M3 @ (ab / denom), 0.0, 1.0)[:, None] * ab
        ratio = radius**2 / (np.einsum("ij,ij->i", rel_M3, rel_M3) + 1e-12)
        total += weight * ratio * ratio
    return total


def _radial_blob(field: Callable[[np.ndarray], np.ndarray], half_length: float, reach: float, *,
                 base_radius: float, segments: int = 48, noise: Callable[[np.ndarray], np.ndarray] | None = None,
                 min_radius: float = 0.01, samples: int = 40) -> Manifold:
    """The outer 1-level surface of ``field`` seen from the Z-axis segment |z| <= ``half_length``.

    A capsule around the segment is refined and every vertex is moved along its ray from the
    nearest segment point to the outermost crossing of the level (searched up to ``reach``),
    Rays from a segment never cross, so the result is a
    closed, embedded, outward-oriented surface for any field (concavities the rays cannot see
    are filled). ``noise(points)`` (of the surface points) scales each ray's radius by
    ``1 + noise``. ``base_radius`` sets the base mesh's triangle density.
    """
    ends = [Manifold.sphere(base_radius, segments).translate((0.0, 0.0, z)) for z in (-half_length, half_length)]
    base = Manifold.batch_hull(ends) if half_length > 0 else ends[0]
    if half_length > 0:
        base = base.refine_to_length(2.0 * np.pi * base_radius / segments * 1.5)

    def move(vertices_N3: np.ndarray) -> np.ndarray:
        v = np.asarray(vertices_N3, dtype=np.float64)
        axis_N3 = np.zeros_like(v)
        axis_N3[:, 2] = np.clip(v[:, 2], -half_length, half_length)
        offset = v - axis_N3
        norm = np.maximum(np.linalg.norm(offset, axis=1, keepdims=True), 1e-12)
        direction = offset / norm
        t_S = np.linspace(0.0, reach, samples)
        points = axis_N3[:, None, :] + t_S[None, :, None] * direction[:, None, :]
        inside_NS = field(points.reshape(-1, 3)).reshape(len(v), samples) > 1.0
        any_inside = inside_NS.any(axis=1)
        last = samples - 1 - np.argmax(inside_NS[:, ::-1], axis=1)
        lo = t_S[last]
        hi = t_S[np.minimum(last + 1, samples - 1)]
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            inside = field(axis_N3 + mid[:, None] * direction) > 1.0
            lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
        radius = np.where(any_inside, 0.5 * (lo + hi), min_radius)
        if noise is not None:
            radius = radius * (1.0 + noise(axis_N3 + radius[:, None] * direction))
        radius = np.maximum(radius, min_radius)
        return axis_N3 + radius[:, None] * direction

    return base.warp_batch(move)
