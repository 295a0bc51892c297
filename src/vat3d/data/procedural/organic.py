"""Organic shapes: noise-displaced rocks, metaball blobs and tubers, bones."""

from __future__ import annotations

from typing import Any

import numpy as np
from manifold3d import Manifold

from vat3d.data.procedural._base import (
    _Params,
    _count_word,
    _metaball_field,
    _radial_blob,
    _wave_noise,
)

# --------------------------------------------------------------------------- organic families


def _waves(p: _Params, name: str, octaves: int, waves: int = 6) -> np.ndarray:
    """Random plane waves for :func:`_wave_noise` (drawn from the shape's generator)."""
    p.values[name] = f"{octaves}x{waves} waves"
    return p.rng.random((octaves, waves, 4))


def _blob_reach(balls: list[tuple[Any, Any, float, float]], half_length: float) -> float:
    """How far from the Z-axis segment the 1-level of :func:`_metaball_field` can reach.

    The field is below 1 farther than ``sum(weight * radius^4) ** (1/4)`` from every ball.
    """
    spread = 0.0
    for a, b, _, _ in balls:
        for point in (np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)):
            along = float(np.clip(point[2], -half_length, half_length))
            spread = max(spread, float(np.linalg.norm(point - np.array([0.0, 0.0, along]))))
    return spread + float(sum(max(w, 0.0) * r**4 for _, _, r, w in balls)) ** 0.25 + 0.05


def _make_rock(p: _Params) -> tuple[Manifold, str]:
    kind = p.choice("kind", ["pebble", "rock", "boulder"])
    scale = (p.uniform("scale_x", 0.7, 1.3), p.uniform("scale_y", 0.6, 1.2), p.uniform("scale_z", 0.35, 1.0))
    roughness = p.uniform("roughness", 0.03, 0.08) if kind == "pebble" else p.uniform("roughness", 0.08, 0.2)
    frequency = p.uniform("frequency", 1.0, 2.5)
    waves = _waves(p, "noise", 2 if kind == "pebble" else 4)
    base = Manifold.sphere(0.5, 56)

    def move(vertices_N3: np.ndarray) -> np.ndarray:
        v = np.asarray(vertices_N3, dtype=np.float64)
        direction = v / np.linalg.norm(v, axis=1, keepdims=True)
        radius = 0.5 * np.clip(1.0 + roughness * _wave_noise(waves, direction, frequency), 0.5, 1.8)
        return direction * radius[:, None] * np.asarray(scale)

    solid = base.warp_batch(move)
    cuts = p.integer("broken_faces", 1, 5) if kind != "pebble" and p.flag("broken", 0.6) else 0
    for k in range(cuts):
        normal = p.rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        reach = 0.5 * float(np.linalg.norm(normal * np.asarray(scale)))
        depth = p.uniform(f"cut_{k}", 0.55, 0.85) * reach
        solid = solid.trim_by_plane(tuple(-normal), -depth)  # keep n . x <= depth
    flat = scale[2] < 0.6 * max(scale[0], scale[1])
    if kind == "pebble":
        return solid, "a flat smooth pebble" if flat else "a smooth rounded pebble"
    words = "rough lumpy" if roughness > 0.14 else "lumpy"
    noun = "boulder" if kind == "boulder" else "rock"
    if cuts:
        return solid, f"an angular {noun} with {'one flat broken face' if cuts == 1 else _count_word(cuts) + ' flat broken faces'}"
    return solid, f"a {'flat ' if flat else ''}{words} {noun}"


def _make_blob(p: _Params) -> tuple[Manifold, str]:
    kind = p.choice("kind", ["tuber", "peanut", "blob"])
    balls: list[tuple[Any, Any, float, float]] = []
    if kind == "tuber":
        count = p.integer("lobes", 2, 4)
        length = p.uniform("spacing", 0.22, 0.38) * (count - 1)
        zs = np.linspace(-length / 2.0, length / 2.0, count)
        for k, z in enumerate(zs):
            r = p.uniform(f"lobe_{k}", 0.14, 0.26)
            x, y = p.uniform(f"jitter_x_{k}", -0.06, 0.06), p.uniform(f"jitter_y_{k}", -0.06, 0.06)
            balls.append(((x, y, float(z)), (x, y, float(z)), r, 1.0))
        half = length / 2.0
        waist = 0.5 * min(r for _, _, r, _ in balls)
    elif kind == "peanut":
        r1, r2 = p.uniform("radius_1", 0.16, 0.28), p.uniform("radius_2", 0.14, 0.26)
        length = p.uniform("length_fraction", 0.7, 1.3) * (r1 + r2)
        balls = [((0, 0, -length / 2), (0, 0, -length / 2), r1, 1.0), ((0, 0, length / 2), (0, 0, length / 2), r2, 1.0)]
        half = length / 2.0
        waist = p.uniform("waist_fraction", 0.4, 0.7) * min(r1, r2)
    else:
        count = p.integer("lobes", 3, 7)
        balls.append(((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), p.uniform("core", 0.22, 0.32), 1.0))
        for k in range(count - 1):
            d = p.rng.normal(size=3)
            d /= np.linalg.norm(d)
            c = tuple(d * p.uniform(f"offset_{k}", 0.2, 0.4))
            balls.append((c, c, p.uniform(f"lobe_{k}", 0.1, 0.22), 1.0))
        half, waist = 0.0, 0.0
    if waist:  # keeps the axis inside, so every ray starts inside the shape
        balls.append(((0.0, 0.0, -half), (0.0, 0.0, half), waist, 1.0))
    roughness = p.uniform("roughness", 0.0, 0.08)
    waves = _waves(p, "noise", 2)
    reach = _blob_reach(balls, half)
    solid = _radial_blob(lambda x: _metaball_field(x, balls), half, reach, base_radius=0.25, segments=40,
                         noise=(lambda x: roughness * _wave_noise(waves, x, 4.0)) if roughness > 0 else None)
    if kind != "blob":
        solid = solid.rotate((0.0, 90.0, 0.0))  # lying along X
    lumpy = "knobbly " if roughness > 0.05 else ""
    if kind == "tuber":
        return solid, f"a {lumpy}potato-like tuber with {_count_word(count)} lobes"
    if kind == "peanut":
        return solid, f"a {lumpy}peanut-shaped blob"
    return solid, f"a {lumpy or 'lumpy '}organic blob of {_count_word(len(balls))} merged lobes"


def _make_bone(p: _Params) -> tuple[Manifold, str]:
    kind = p.choice("kind", ["long bone", "cartoon bone"])
    length = p.uniform("length", 0.6, 1.2)
    shaft = p.uniform("shaft_radius", 0.035, 0.08)
    half = length / 2.0
    balls: list[tuple[Any, Any, float, float]] = [((0, 0, -half), (0, 0, half), shaft, 1.0)]
    if kind == "cartoon bone":
        knob = shaft * p.uniform("knob_fraction", 1.3, 2.0)
        spread = knob * p.uniform("spread", 0.7, 1.0)
        for z in (-half, half):
            for sx in (-1.0, 1.0):
                c = (sx * spread, 0.0, z + np.sign(z) * 0.3 * knob)
                balls.append((c, c, knob, 1.0))
    else:
        head = shaft * p.uniform("head_fraction", 1.4, 2.2)
        angle = np.radians(p.uniform("neck_degrees", 20.0, 50.0))
        c = (head * 0.8 * np.sin(angle), 0.0, half + head * 0.8 * np.cos(angle))
        balls.append((c, c, head, 1.0))
        tro = (-shaft * 1.2, 0.0, half - 0.2 * head)
        balls.append((tro, tro, shaft * 1.2, 0.6))
        condyle = shaft * p.uniform("condyle_fraction", 1.1, 1.6)
        for sx in (-1.0, 1.0):
            cc = (sx * condyle * 0.7, p.uniform(f"condyle_y_{int(sx > 0)}", -0.2, 0.2) * shaft, -half - 0.3 * condyle)
            balls.append((cc, cc, condyle, 1.0))
    roughness = p.uniform("roughness", 0.0, 0.06)
    waves = _waves(p, "noise", 2)
    reach = _blob_reach(balls, half)
    solid = _radial_blob(lambda x: _metaball_field(x, balls), half, reach, base_radius=max(shaft, 0.05), segments=32,
                         noise=(lambda x: roughness * _wave_noise(waves, x, 6.0)) if roughness > 0 else None)
    solid = solid.rotate((0.0, 90.0, 0.0))  # lying along X
    if kind == "cartoon bone":
        return solid, "a cartoon dog bone: a thin shaft between two double-knobbed ends"
    size = "long slender" if length / shaft > 16 else "stout"
    return solid, f"a {size} bone with a round head at one end and two knobby condyles at the other"
