"""Procedural shapes: parametric families with holes, thin parts and several parts.

Every shape is a pure function of an integer seed: ``make_shape(seed)`` picks the family
``FAMILIES[seed % len(FAMILIES)]`` (so consecutive seeds are balanced across families)
and draws the family's parameters from a generator seeded with ``(seed, family)``.
Solids are built with manifold3d's exact boolean operations, so every mesh is closed and
outward-oriented. Shapes are built Z-up and returned **Y-up** (glTF / Objaverse
convention); units are arbitrary (about one unit across) since the pipeline normalises.
Captions are short English phrases derived from the parameters.

The first 19 families (box ... snowman) are simple objects; the others are mechanical parts
(plates with bolt holes, extruded L/T/U/I/Z/box profiles, revolved vases, knobs, pulleys and
flanges, L brackets, robot-arm links, involute spur/helical gears, internal ring gears, gear
pairs and rack-and-pinions), thin shells (open boxes and trays, cups and tubes, bent sheet
metal, bent pipes, pipe tees; walls down to 1.5 % of the shape's size) and organic shapes
(noise-displaced rocks, metaball blobs and tubers, bones), built from CrossSection profiles
(extruded or revolved), booleans, ``warp`` displacements and swept tube meshes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trimesh
from manifold3d import CrossSection, JoinType, Manifold, Mesh64, OpType

#: Bump when any family's geometry or the seed -> family mapping changes: it is part of the
#: content hash of a shape. Versions 2-3 added the mechanical and organic families (19 -> 38).
GENERATOR_VERSION = 3

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


# --------------------------------------------------------------------------- families
# Each builder takes a _Params and returns (Z-up solid, caption).


def _make_box(p: _Params) -> tuple[Manifold, str]:
    sx, sy, sz = p.uniform("size_x", 0.2, 1.0), p.uniform("size_y", 0.2, 1.0), p.uniform("size_z", 0.1, 1.2)
    hole = p.flag("hole", 0.35)
    solid = _box(sx, sy, sz)
    if sz < 0.5 * min(sx, sy):
        shape = "flat box"
    elif sz > 1.6 * max(sx, sy):
        shape = "tall box"
    elif max(sx, sy, sz) < 1.3 * min(sx, sy, sz):
        shape = "cube-shaped box"
    else:
        shape = "long box"
    caption = _article(shape)
    if hole:
        radius = p.uniform("hole_radius_fraction", 0.15, 0.35) * min(sx, sy)
        solid = solid - _cylinder(sz * 2.0, radius, z0=-sz)
        caption += " with a round hole through it"
    return solid, caption


def _make_sphere(p: _Params) -> tuple[Manifold, str]:
    if p.flag("ellipsoid", 0.6):
        scale = (p.uniform("scale_x", 0.5, 1.5), p.uniform("scale_y", 0.5, 1.5), p.uniform("scale_z", 0.4, 1.6))
    else:
        scale = (1.0, 1.0, 1.0)
    radius = p.uniform("radius", 0.3, 0.7)
    solid = Manifold.sphere(radius, _SEGMENTS).scale(scale)
    horizontal = max(scale[0], scale[1])
    if max(scale) < 1.15 * min(scale):
        caption = "a round sphere"
    elif scale[2] < 0.75 * horizontal:
        caption = "a flattened ellipsoid"
    elif scale[2] > 1.3 * horizontal:
        caption = "a tall egg-shaped ellipsoid"
    else:
        caption = "an elongated ellipsoid"
    return solid, caption


def _make_cylinder(p: _Params) -> tuple[Manifold, str]:
    radius, height = p.uniform("radius", 0.1, 0.6), p.uniform("height", 0.1, 1.5)
    hollow = p.flag("hollow", 0.3)
    solid = _cylinder(height, radius)
    if height > 4.0 * radius:
        size = "tall thin"
    elif height < radius:
        size = "short wide"
    else:
        size = ""
    if hollow:
        wall = p.uniform("wall_fraction", 0.1, 0.35) * radius
        solid = solid - _cylinder(height * 2.0, radius - wall, z0=-height / 2.0)
        noun = "hollow tube"
    else:
        noun = "flat disc" if height < 0.4 * radius else "cylinder"
    return solid, _article(f"{size} {noun}".strip())


def _make_cone(p: _Params) -> tuple[Manifold, str]:
    radius, height = p.uniform("radius", 0.2, 0.6), p.uniform("height", 0.3, 1.5)
    truncated = p.flag("truncated", 0.4)
    top = p.uniform("top_fraction", 0.2, 0.6) * radius if truncated else 0.0
    solid = _cylinder(height, radius, top)
    size = "tall" if height > 2.5 * radius else ("short wide" if height < 1.2 * radius else "")
    noun = "truncated cone" if truncated else "pointed cone"
    return solid, _article(f"{size} {noun}".strip())


def _make_torus(p: _Params) -> tuple[Manifold, str]:
    major = p.uniform("major_radius", 0.3, 0.6)
    minor = p.uniform("minor_fraction", 0.1, 0.5) * major
    solid = _torus(major, minor)
    ratio = minor / major
    caption = "a thin ring-shaped torus" if ratio < 0.2 else ("a thick doughnut" if ratio > 0.35 else "a torus")
    return solid, caption


def _make_capsule(p: _Params) -> tuple[Manifold, str]:
    radius, length = p.uniform("radius", 0.1, 0.4), p.uniform("length", 0.2, 1.5)
    upright = p.flag("upright", 0.5)
    axis = np.array([0.0, 0.0, 1.0]) if upright else np.array([1.0, 0.0, 0.0])
    end = axis * length / 2.0
    solid = Manifold.batch_hull([_sphere(radius, *end), _sphere(radius, *(-end))])
    shape = "long thin capsule" if length > 3.0 * radius else ("short stubby capsule" if length < 1.2 * radius else "capsule")
    pose = "standing upright" if upright else "lying on its side"
    return solid, f"{_article(shape)} {pose}"


def _make_mug(p: _Params) -> tuple[Manifold, str]:
    radius, height = p.uniform("radius", 0.25, 0.45), p.uniform("height", 0.35, 0.9)
    wall = p.uniform("wall", 0.02, 0.05)
    handle = p.flag("handle", 0.85)
    solid = _cylinder(height, radius)
    if handle:
        handle_radius = p.uniform("handle_radius_fraction", 0.3, 0.45) * height
        handle_thickness = p.uniform("handle_thickness", 0.025, 0.05)
        ring = _torus(handle_radius, handle_thickness).rotate((90.0, 0.0, 0.0))
        solid = solid + ring.translate((radius, 0.0, height / 2.0))
    solid = solid - _cylinder(height, radius - wall, z0=wall)
    size = "tall" if height > 2.2 * radius else ("wide" if height < 1.3 * radius else "")
    if handle:
        return solid, _article(f"{size} mug with a handle".strip())
    return solid, _article(f"{size} cup without a handle".strip())


def _make_table(p: _Params) -> tuple[Manifold, str]:
    round_top = p.flag("round_top", 0.35)
    height = p.uniform("height", 0.3, 1.0)
    thickness = p.uniform("top_thickness", 0.03, 0.08)
    leg = p.uniform("leg_thickness", 0.03, 0.12)
    parts: list[Manifold] = []
    leg_height = height - thickness
    if round_top:
        radius = p.uniform("top_radius", 0.35, 0.7)
        parts.append(_cylinder(thickness, radius, z0=leg_height))
        legs = p.choice("legs", ["pedestal", "three", "four"])
        if legs == "pedestal":
            parts.append(_cylinder(leg_height, leg, z0=0.0))
            parts.append(_cylinder(thickness, 0.6 * radius, z0=0.0))
            leg_phrase = "a single central leg"
        else:
            count = 3 if legs == "three" else 4
            for k in range(count):
                angle = 2.0 * np.pi * k / count
                xy = 0.75 * radius * np.array([np.cos(angle), np.sin(angle)])
                parts.append(_box(leg, leg, leg_height, xy[0], xy[1], leg_height / 2.0))
            leg_phrase = f"{_count_word(count)} {'thin' if leg < 0.06 else 'thick'} legs"
        top_word = "round"
    else:
        width, depth = p.uniform("width", 0.8, 1.6), p.uniform("depth", 0.5, 1.0)
        p.values["legs"] = "four"
        parts.append(_box(width, depth, thickness, 0.0, 0.0, leg_height + thickness / 2.0))
        for sx in (-1, 1):
            for sy in (-1, 1):
                x, y = sx * (width / 2.0 - leg), sy * (depth / 2.0 - leg)
                parts.append(_box(leg, leg, leg_height, x, y, leg_height / 2.0))
        leg_phrase = f"four {'thin' if leg < 0.06 else 'thick'} legs"
        top_word = "rectangular"
    size = "low" if height < 0.5 else ("tall" if height > 0.8 else "")
    return _union(parts), _article(f"{size} {top_word} table with {leg_phrase}".strip())


def _make_chair(p: _Params) -> tuple[Manifold, str]:
    width, depth = p.uniform("seat_width", 0.4, 0.6), p.uniform("seat_depth", 0.4, 0.6)
    seat_height = p.uniform("seat_height", 0.35, 0.55)
    seat_thickness = p.uniform("seat_thickness", 0.03, 0.07)
    leg = p.uniform("leg_thickness", 0.025, 0.07)
    back = p.flag("back", 0.85)
    parts = [_box(width, depth, seat_thickness, 0.0, 0.0, seat_height - seat_thickness / 2.0)]
    leg_height = seat_height - seat_thickness
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (width / 2.0 - leg / 2.0), sy * (depth / 2.0 - leg / 2.0)
            parts.append(_box(leg, leg, leg_height, x, y, leg_height / 2.0))
    if not back:
        return _union(parts), f"a stool with four {'thin' if leg < 0.045 else 'thick'} legs"
    back_height = p.uniform("back_height", 0.2, 0.65)
    back_thickness = p.uniform("back_thickness", 0.025, 0.06)
    arms = p.flag("armrests", 0.3)
    parts.append(
        _box(width, back_thickness, back_height, 0.0, -depth / 2.0 + back_thickness / 2.0, seat_height + back_height / 2.0)
    )
    arm_height = 0.4 * back_height
    if arms:
        for sx in (-1, 1):
            x = sx * (width / 2.0 - leg / 2.0)
            parts.append(_box(leg, depth, leg, x, 0.0, seat_height + arm_height))
            parts.append(_box(leg, leg, arm_height, x, depth / 2.0 - leg / 2.0, seat_height + arm_height / 2.0))
    back_word = "tall" if back_height > 0.45 else ("low" if back_height < 0.3 else "")
    caption = f"a chair with a {back_word} back" + (" and armrests" if arms else "")
    return _union(parts), caption


def _make_bottle(p: _Params) -> tuple[Manifold, str]:
    body_radius = p.uniform("body_radius", 0.12, 0.35)
    body_height = p.uniform("body_height", 0.4, 1.0)
    shoulder = p.uniform("shoulder_height", 0.05, 0.2)
    neck_radius = p.uniform("neck_fraction", 0.25, 0.5) * body_radius
    neck_height = p.uniform("neck_height", 0.08, 0.4)
    wall = p.uniform("wall", 0.012, 0.03)
    top = body_height + shoulder + neck_height
    outer = [(0.0, 0.0), (body_radius, 0.0), (body_radius, body_height), (neck_radius, body_height + shoulder),
             (neck_radius, top), (0.0, top)]
    inner = [(0.0, wall), (body_radius - wall, wall), (body_radius - wall, body_height),
             (neck_radius - wall, body_height + shoulder), (neck_radius - wall, top + 1.0), (0.0, top + 1.0)]
    solid = _revolve(outer) - _revolve(inner)
    total_width = 2.0 * body_radius
    size = "tall narrow" if top > 3.0 * total_width else ("short wide" if top < 1.6 * total_width else "")
    caption = _article(f"{size} bottle".strip())
    if neck_height > 0.25:
        caption += " with a long neck"
    return solid, caption


def _make_lamp(p: _Params) -> tuple[Manifold, str]:
    base_radius = p.uniform("base_radius", 0.15, 0.3)
    base_thickness = p.uniform("base_thickness", 0.02, 0.06)
    stem_radius = p.uniform("stem_radius", 0.012, 0.035)
    stem_height = p.uniform("stem_height", 0.4, 1.0)
    shade = p.choice("shade", ["cone", "globe"])
    parts = [_cylinder(base_thickness, base_radius), _cylinder(stem_height, stem_radius, z0=base_thickness * 0.5)]
    top = base_thickness * 0.5 + stem_height
    if shade == "cone":
        shade_radius = p.uniform("shade_radius", 0.15, 0.35)
        shade_height = p.uniform("shade_height", 0.15, 0.35)
        wall = 0.015
        z0 = top - 0.5 * shade_height
        outer = _cylinder(shade_height, shade_radius, 0.45 * shade_radius, z0=z0)
        inner = _cylinder(shade_height + 0.002, shade_radius - wall, 0.45 * shade_radius - wall, z0=z0 - 0.001)
        parts.append(outer - inner)
        # spokes joining the stem to the shade
        parts.append(_box(2.0 * (0.725 * shade_radius - wall / 2.0), 0.015, 0.015, 0.0, 0.0, top))
        parts.append(_sphere(1.6 * stem_radius, 0.0, 0.0, top))
        shade_phrase = "a cone-shaped shade"
    else:
        globe = p.uniform("globe_radius", 0.08, 0.2)
        parts.append(_sphere(globe, 0.0, 0.0, top + 0.8 * globe))
        shade_phrase = "a round globe"
    stem = "thin stem" if stem_radius < 0.025 else "stem"
    size = "tall " if stem_height > 0.75 else ""
    return _union(parts), f"a {size}lamp with {shade_phrase} on a {stem}"


def _make_gear(p: _Params) -> tuple[Manifold, str]:
    teeth = p.integer("teeth", 8, 24)
    radius = 0.5
    depth = p.uniform("tooth_depth", 0.05, 0.12)
    thickness = p.uniform("thickness", 0.06, 0.4)
    bore = p.uniform("bore_radius", 0.06, 0.2)
    points = []
    step = 2.0 * np.pi / teeth
    for k in range(teeth):
        a = k * step
        for offset, r in ((0.0, radius - depth), (0.2, radius), (0.5, radius), (0.7, radius - depth)):
            angle = a + offset * step
            points.append((r * np.cos(angle), r * np.sin(angle)))
    outline = CrossSection([np.asarray(points)])
    solid = Manifold.extrude(outline, thickness) - _cylinder(thickness * 2.0, bore, z0=-thickness / 2.0)
    size = "thin" if thickness < 0.15 else "thick"
    return solid, f"a {size} gear with {teeth} teeth and a hole in the middle"


def _make_ring(p: _Params) -> tuple[Manifold, str]:
    outer = p.uniform("outer_radius", 0.3, 0.6)
    inner = p.uniform("inner_fraction", 0.4, 0.85) * outer
    height = p.uniform("height", 0.04, 0.5)
    solid = _cylinder(height, outer) - _cylinder(height * 2.0, inner, z0=-height / 2.0)
    if height < 0.3 * (outer - inner) or height < 0.08:
        caption = "a flat washer-like ring"
    elif height > outer:
        caption = "a tall ring like a short pipe"
    else:
        caption = "a thick ring" if (outer - inner) > 0.25 * outer else "a thin-walled ring"
    return solid, caption


def _make_bowl(p: _Params) -> tuple[Manifold, str]:
    radius = p.uniform("radius", 0.3, 0.6)
    depth_fraction = p.uniform("depth_fraction", 0.35, 1.0)
    wall = p.uniform("wall", 0.02, 0.05)
    foot = p.flag("foot", 0.5)
    depth = depth_fraction * radius
    outer = Manifold.sphere(1.0, _SEGMENTS).scale((radius, radius, depth))
    inner = Manifold.sphere(1.0, _SEGMENTS).scale((radius - wall, radius - wall, depth - wall))
    cut = _box(4.0 * radius, 4.0 * radius, 2.0 * depth, 0.0, 0.0, depth)
    solid = (outer - inner) - cut
    if foot:
        solid = solid + _cylinder(0.1 * depth + wall, 0.35 * radius, z0=-depth - 0.05 * depth)
    caption = "a shallow bowl" if depth_fraction < 0.6 else "a deep bowl"
    return solid, caption + (" on a small foot" if foot else "")


def _make_dumbbell(p: _Params) -> tuple[Manifold, str]:
    length = p.uniform("bar_length", 0.6, 1.2)
    bar = p.uniform("bar_radius", 0.025, 0.06)
    weights = p.choice("weights", ["round", "disc"])
    weight_radius = p.uniform("weight_radius", 0.12, 0.25)
    parts = [_cylinder(length, bar, z0=-length / 2.0)]
    for sign in (-1.0, 1.0):
        z = sign * length / 2.0
        if weights == "round":
            parts.append(_sphere(weight_radius, 0.0, 0.0, z))
        else:
            width = 0.6 * weight_radius
            parts.append(_cylinder(width, weight_radius, z0=z - width / 2.0))
    solid = _union(parts).rotate((0.0, 90.0, 0.0))  # lying along X
    return solid, f"a dumbbell with {'round' if weights == 'round' else 'disc'} weights on a thin bar"


def _make_shelf(p: _Params) -> tuple[Manifold, str]:
    width, height = p.uniform("width", 0.5, 1.2), p.uniform("height", 0.6, 1.8)
    depth = p.uniform("depth", 0.2, 0.4)
    board = p.uniform("board_thickness", 0.015, 0.04)
    shelves = p.integer("shelves", 2, 6)
    back = p.flag("back_panel", 0.5)
    parts = [_box(board, depth, height, sx * (width - board) / 2.0, 0.0, height / 2.0) for sx in (-1, 1)]
    for k in range(shelves):
        z = board / 2.0 + k * (height - board) / (shelves - 1)
        parts.append(_box(width, depth, board, 0.0, 0.0, z))
    if back:
        parts.append(_box(width, board, height, 0.0, -(depth - board) / 2.0, height / 2.0))
    size = "tall " if height > 1.2 else ("low " if height < 0.8 else "")
    caption = f"{_article(size + 'bookshelf')} with {_count_word(shelves)} shelves"
    return _union(parts), caption + (" and a back panel" if back else " and an open back")


def _make_arch(p: _Params) -> tuple[Manifold, str]:
    width, height = p.uniform("width", 0.6, 1.4), p.uniform("height", 0.4, 1.2)
    depth = p.uniform("depth", 0.15, 0.5)
    opening = p.uniform("opening_fraction", 0.4, 0.75) * width / 2.0
    spring = min(height - opening - 0.05, p.uniform("pillar_fraction", 0.2, 0.5) * height)
    spring = max(spring, 0.0)
    block = _box(width, depth, height, 0.0, 0.0, height / 2.0)
    round_cut = Manifold.cylinder(depth * 2.0, opening, opening, _SEGMENTS, center=True).rotate((90.0, 0.0, 0.0))
    cut = round_cut.translate((0.0, 0.0, spring)) + _box(2.0 * opening, depth * 2.0, spring + 0.02, 0.0, 0.0, spring / 2.0 - 0.01)
    shape = "wide low arch" if width > 1.4 * height else ("tall narrow arch" if height > 1.2 * width else "arch")
    return block - cut, _article(shape) + " with a round opening"


def _make_blocks(p: _Params) -> tuple[Manifold, str]:
    count = p.integer("count", 2, 5)
    parts, x = [], 0.0
    kinds = []
    for k in range(count):
        kind = p.choice(f"kind_{k}", ["box", "cylinder", "sphere"])
        size = p.uniform(f"size_{k}", 0.15, 0.4)
        gap = p.uniform(f"gap_{k}", 0.05, 0.2)
        x += size / 2.0
        if kind == "box":
            parts.append(_box(size, size, size, x, 0.0, size / 2.0))
        elif kind == "cylinder":
            parts.append(_cylinder(size, size / 2.0).translate((x, 0.0, 0.0)))
        else:
            parts.append(_sphere(size / 2.0, x, 0.0, size / 2.0))
        kinds.append(kind)
        x += size / 2.0 + gap
    solid = _union(parts)
    if len(set(kinds)) == 1:
        noun = {"box": "blocks", "cylinder": "cylinders", "sphere": "balls"}[kinds[0]]
    else:
        noun = "objects"
    return solid, f"a row of {_count_word(count)} separate {noun}"


def _make_snowman(p: _Params) -> tuple[Manifold, str]:
    count = p.integer("spheres", 2, 3)
    radius = p.uniform("bottom_radius", 0.25, 0.4)
    shrink = p.uniform("shrink", 0.6, 0.85)
    parts, z = [], radius
    for _ in range(count):
        parts.append(_sphere(radius, 0.0, 0.0, z))
        next_radius = radius * shrink
        z += 0.75 * (radius + next_radius)
        radius = next_radius
    return _union(parts), f"a snowman of {_count_word(count)} stacked spheres"


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


# --------------------------------------------------------------------------- mechanical families


def _make_plate(p: _Params) -> tuple[Manifold, str]:
    outline = p.choice("outline", ["rectangular", "rounded", "round", "obround"])
    thickness = p.uniform("thickness", 0.02, 0.12)
    hole = p.uniform("hole_radius", 0.025, 0.065)
    cutout_phrase = ""
    if outline == "round":
        radius = p.uniform("radius", 0.35, 0.6)
        count = p.integer("holes", 3, 10)
        bolt = p.uniform("bolt_circle_fraction", 0.62, 0.8) * radius
        hole = min(hole, 0.7 * (radius - bolt), 0.35 * 2.0 * np.pi * bolt / count)
        plate = _circle2(radius, segments=2 * _SEGMENTS)
        centres = _ring_points(count, bolt, p.uniform("phase", 0.0, np.pi))
        if p.flag("centre_hole", 0.7):
            plate = plate - _circle2(p.uniform("centre_fraction", 0.15, 0.45) * radius)
            cutout_phrase = " around a central hole"
        phrase = f"{_count_word(count)} bolt holes on a circle{cutout_phrase}"
    else:
        width, depth = p.uniform("width", 0.5, 1.2), p.uniform("depth", 0.3, 0.9)
        if outline == "obround":
            plate = _slot2(width, depth)
            pattern = "row"
        else:
            corner = p.uniform("corner_fraction", 0.08, 0.3) * min(width, depth) if outline == "rounded" else 0.0
            plate = _rounded_rect2(width, depth, corner)
            pattern = p.choice("pattern", ["corners", "grid", "row"])
        margin = max(2.0 * hole, 0.12 * min(width, depth))
        if outline == "obround":
            margin = max(margin, depth / 2.0)
        if pattern == "corners":
            centres = [(sx * (width / 2.0 - margin), sy * (depth / 2.0 - margin)) for sx in (-1, 1) for sy in (-1, 1)]
            cut = p.choice("cutout", ["none", "window", "slot", "hole"])
            inner_w, inner_d = width - 4.0 * margin, depth - 2.0 * margin
            if cut == "window" and inner_w > 0.1:
                frac = p.uniform("cutout_fraction", 0.4, 0.9)
                plate = plate - _rounded_rect2(frac * inner_w, frac * inner_d, 0.1 * frac * inner_d)
                cutout_phrase = " and a rectangular window"
            elif cut == "slot" and inner_w > 0.1:
                plate = plate - _slot2(p.uniform("cutout_fraction", 0.5, 0.9) * inner_w, 0.3 * inner_d)
                cutout_phrase = " and a long slot"
            elif cut == "hole":
                plate = plate - _circle2(p.uniform("cutout_fraction", 0.2, 0.4) * min(width, depth))
                cutout_phrase = " and a large central hole"
            phrase = f"four holes at the corners{cutout_phrase}"
        elif pattern == "grid":
            rows, cols = p.integer("rows", 2, 3), p.integer("columns", 2, 5)
            xs = np.linspace(-width / 2.0 + margin, width / 2.0 - margin, cols)
            ys = np.linspace(-depth / 2.0 + margin, depth / 2.0 - margin, rows)
            hole = min(hole, 0.35 * (xs[1] - xs[0]), 0.35 * (ys[1] - ys[0]))
            centres = [(float(x), float(y)) for x in xs for y in ys]
            phrase = f"a grid of {rows * cols} holes"
        else:
            count = p.integer("holes", 2, 6)
            xs = np.linspace(-width / 2.0 + margin, width / 2.0 - margin, count)
            hole = min(hole, 0.35 * (xs[1] - xs[0]), 0.3 * depth)
            centres = [(float(x), 0.0) for x in xs]
            phrase = f"a row of {_count_word(count)} holes"
    solid = _extrude(plate - _holes2(centres, hole), thickness)
    size = max(solid.bounding_box()[3] - solid.bounding_box()[0], solid.bounding_box()[4] - solid.bounding_box()[1])
    thin = "thin " if thickness < 0.04 * size else ("thick " if thickness > 0.12 * size else "")
    shape = {"rectangular": "rectangular plate", "rounded": "rectangular plate",
             "round": "round plate", "obround": "obround plate"}[outline]
    corners = "rounded corners and " if outline == "rounded" else ""
    return solid, f"{_article(thin + shape)} with {corners}{phrase}"


def _make_profile(p: _Params) -> tuple[Manifold, str]:
    kind = p.choice("profile", ["L", "T", "U", "I", "Z", "box"])
    width, height = p.uniform("width", 0.12, 0.4), p.uniform("height", 0.12, 0.4)
    wall = p.uniform("wall_fraction", 0.06, 0.2) * min(width, height)
    length = p.uniform("length", 0.6, 1.6)
    w, h, t = width, height, wall
    if kind == "L":
        section, hole_x, base = _union2([_span2(0, w, 0, t), _span2(0, t, 0, h)]), [(t + w) / 2.0], (0.0, t)
    elif kind == "T":
        section = _union2([_span2(-w / 2, w / 2, h - t, h), _span2(-t / 2, t / 2, 0, h - t + 1e-3)])
        hole_x, base = [-(w + t) / 4.0, (w + t) / 4.0], (h - t, h)
    elif kind == "U":
        section = _union2([_span2(-w / 2, w / 2, 0, t), _span2(-w / 2, -w / 2 + t, 0, h), _span2(w / 2 - t, w / 2, 0, h)])
        hole_x, base = [0.0], (0.0, t)
    elif kind == "I":
        section = _union2([_span2(-w / 2, w / 2, 0, t), _span2(-w / 2, w / 2, h - t, h), _span2(-t / 2, t / 2, 0, h)])
        hole_x, base = [-(w + t) / 4.0, (w + t) / 4.0], (0.0, h)
    elif kind == "Z":
        section = _union2([_span2(-w / 2, t / 2, 0, t), _span2(-t / 2, t / 2, 0, h), _span2(-t / 2, w / 2, h - t, h)])
        hole_x, base = [-(w + t) / 4.0], (0.0, t)
    else:
        section = _span2(-w / 2, w / 2, 0, h) - _span2(-w / 2 + t, w / 2 - t, t, h - t)
        hole_x, base = [0.0], (0.0, h)
    solid = _extrude(section, length, -length / 2.0)
    holes = p.integer("holes", 0, 6) if p.flag("drilled", 0.45) else 0
    if holes:
        radius = min(p.uniform("hole_radius", 0.015, 0.05), 0.3 * length / holes, 0.3 * (w - t) / len(hole_x))
        zs = (np.arange(holes) + 0.5) / holes * length - length / 2.0
        drills = [_rod((x, base[0] - 0.01, z), (x, base[1] + 0.01, z), radius, _HOLE_SEGMENTS) for x in hole_x for z in zs]
        solid = solid - _union(drills)
    solid = solid.rotate((0.0, 90.0, 0.0))  # lying along X
    name = {"L": "L-shaped angle profile", "T": "T-profile bar", "U": "U-channel beam", "I": "I-beam",
            "Z": "Z-profile bar", "box": "hollow rectangular tube"}[kind]
    size = _size_word(length / max(w, h), 3.0, 6.0, ("short", "long"))
    phrase = f"{size} {name}".strip()
    caption = ("an " if phrase[0] in "aeioLI" else "a ") + phrase  # "an L-shaped", "a U-channel"
    if holes:
        caption += f" with {'one hole' if holes == 1 else _count_word(holes) + ' holes'} along it"
    return solid, caption


def _make_vase(p: _Params) -> tuple[Manifold, str]:
    height = p.uniform("height", 0.5, 1.4)
    controls = p.integer("controls", 4, 6)
    radii = [p.uniform(f"radius_{k}", 0.08, 0.42) for k in range(controls)]
    wall_fraction = p.uniform("wall_fraction", 0.015, 0.05)
    samples = 24
    r_S = _catmull_rom(radii, samples)
    z_S = np.linspace(0.0, height, samples)
    size = max(height, 2.0 * float(r_S.max()))
    wall = wall_fraction * size
    r_S = np.maximum(r_S, max(wall + 0.035, 0.3 * float(r_S.max())))  # no waist pinched shut
    floor = 1.5 * wall
    inner_r = r_S - wall
    keep = z_S > floor
    bottom_inner = float(np.interp(floor, z_S, inner_r))
    outline = ([(0.0, 0.0)] + list(zip(r_S.tolist(), z_S.tolist()))
               + list(zip(inner_r[keep][::-1].tolist(), z_S[keep][::-1].tolist())) + [(bottom_inner, floor), (0.0, floor)])
    solid = _revolve2(_polygon2(outline), 2 * _SEGMENTS)
    belly = int(np.argmax(r_S[: int(0.75 * samples)]))
    neck = belly + int(np.argmin(r_S[belly:]))
    words = []
    if wall_fraction < 0.025:
        words.append("thin-walled")
    words.append(_size_word(height / (2.0 * r_S.max()), 0.8, 2.2, ("squat", "tall slender")))
    caption = _article(" ".join(w for w in words if w) + " vase")
    if neck < samples - 1 and r_S[neck] < 0.6 * r_S[belly]:
        caption += " with a narrow neck"
        if r_S[-1] > 1.4 * r_S[neck]:
            caption += " and a flared rim"
    elif r_S[-1] > 1.3 * r_S[: samples // 2].max():
        caption += " widening to its rim"
    elif belly > 2 and r_S[belly] > 1.3 * max(r_S[0], r_S[-1]):
        caption += " with a round belly"
    return solid, caption


def _make_knob(p: _Params) -> tuple[Manifold, str]:
    kind = p.choice("kind", ["control knob", "finial", "door knob"])
    if kind == "control knob":
        radius = p.uniform("radius", 0.2, 0.5)
        height = p.uniform("height_fraction", 0.4, 1.2) * radius
        top = p.uniform("top_fraction", 0.6, 1.0) * radius
        dome = p.uniform("dome_fraction", 0.05, 0.3) * height
        angles = np.linspace(0.0, np.pi / 2.0, 8)
        outline = [(0.0, 0.0), (radius, 0.0), (top, height - dome)]
        outline += [(top * float(np.cos(a)), height - dome + dome * float(np.sin(a))) for a in angles[1:]]
        solid = _revolve2(_polygon2(outline))
        flutes = p.integer("flutes", 8, 24) if p.flag("fluted", 0.6) else 0
        if flutes:
            groove = p.uniform("flute_fraction", 0.05, 0.1) * radius
            cutters = [_cylinder(height * 3.0, groove, z0=-height).translate((x, y, 0.0))
                       for x, y in _ring_points(flutes, (radius + top) / 2.0 + 0.5 * groove)]
            solid = solid - _union(cutters)
        shaft = p.uniform("shaft_fraction", 0.1, 0.25) * radius
        bore = _extrude(_circle2(shaft, segments=_HOLE_SEGMENTS) - _rect2(shaft, 2 * shaft, 1.2 * shaft), 0.6 * height, -0.01)
        solid = solid - bore
        pointer = p.flag("pointer", 0.5)
        if pointer:  # a groove across the dome, as deep as the dome is steep
            surface = height - dome + dome * float(np.sqrt(0.75))
            solid = solid - _box(0.6 * top, 0.08 * top, 0.1 * height + 0.4 * dome, 0.5 * top, 0.0, surface)
        caption = "a fluted control knob" if flutes else "a round control knob"
        if pointer:
            caption += " with a pointer line on top"
        return solid, caption
    if kind == "finial":
        height = p.uniform("height", 0.7, 1.5)
        controls = p.integer("controls", 5, 8)
        radii = [p.uniform(f"radius_{k}", 0.04, 0.22) for k in range(controls)]
        r_S = np.maximum(_catmull_rom(radii, 32), 0.03)
        z_S = np.linspace(0.0, height, 32)
        tip = p.choice("tip", ["point", "ball", "flat"])
        outline = [(0.0, 0.0)] + list(zip(r_S.tolist(), z_S.tolist()))
        if tip == "point":
            outline.append((0.0, height + 2.0 * float(r_S[-1])))
        elif tip == "ball":
            ball = 1.5 * float(r_S[-1])
            angles = np.linspace(-np.pi / 2.0, np.pi / 2.0, 12)[1:]
            outline += [(ball * float(np.cos(a)), height + ball + ball * float(np.sin(a))) for a in angles]
        else:
            outline.append((0.0, height))
        solid = _revolve2(_polygon2(outline))
        return solid, f"a turned finial with {'a pointed' if tip == 'point' else ('a ball' if tip == 'ball' else 'a flat')} top"
    base = p.uniform("base_radius", 0.15, 0.3)
    neck = p.uniform("neck_fraction", 0.25, 0.5) * base
    neck_length = p.uniform("neck_length", 0.1, 0.4)
    head = p.uniform("head_radius", 0.2, 0.4)
    flat = p.uniform("head_flatness", 0.4, 1.0)
    plate = p.uniform("plate_thickness", 0.03, 0.08)
    angles = np.linspace(-np.pi / 2.0, np.pi / 2.0, 16)
    zc = plate + neck_length + head * flat
    outline = [(0.0, 0.0), (base, 0.0), (base, plate), (neck, plate + 0.02), (neck, plate + neck_length)]
    ball = [(head * float(np.cos(a)), zc + head * flat * float(np.sin(a))) for a in angles]
    outline += [pt for pt in ball if pt[1] > plate + neck_length + 1e-3 and pt[0] > neck] + [(0.0, zc + head * flat)]
    solid = _revolve2(_polygon2(outline))
    shape = "mushroom-shaped" if flat < 0.6 else "round"
    return solid, f"a {shape} door knob on a narrow neck and a round base plate"


def _make_pulley(p: _Params) -> tuple[Manifold, str]:
    radius = 0.5
    width = p.uniform("rim_width", 0.12, 0.4)
    groove = p.choice("groove", ["V", "flat", "round"])
    grooves = p.integer("grooves", 1, 3) if groove == "V" else 1
    rim_depth = p.uniform("rim_depth", 0.06, 0.14)
    hub = p.uniform("hub_radius", 0.1, 0.2)
    bore = p.uniform("bore_fraction", 0.3, 0.6) * hub
    hub_length = width * p.uniform("hub_length_fraction", 1.0, 1.6)
    web = p.uniform("web_fraction", 0.25, 1.0) * width
    rim_inner = radius - rim_depth
    profile = _union2([_span2(rim_inner, radius, -width / 2, width / 2), _span2(hub - 0.01, rim_inner + 0.01, -web / 2, web / 2),
                       _span2(bore, hub, -hub_length / 2, hub_length / 2)])
    pitch = width / grooves
    if groove == "V":
        depth = min(0.6 * rim_depth, 0.8 * pitch)
        for k in range(grooves):
            zc = -width / 2 + (k + 0.5) * pitch
            profile = profile - _polygon2([(radius + 0.01, zc - 0.4 * pitch), (radius - depth, zc - 0.08 * pitch),
                                           (radius - depth, zc + 0.08 * pitch), (radius + 0.01, zc + 0.4 * pitch)])
    elif groove == "round":
        profile = profile - _circle2(0.35 * width, radius + 0.1 * width, 0.0)
        profile = profile + _span2(hub - 0.01, rim_inner + 0.01, -web / 2, web / 2)  # keep the web if the cut was deep
    solid = _revolve2(profile, 2 * _SEGMENTS)
    holes = p.integer("web_holes", 3, 6) if (p.flag("lightened", 0.5) and rim_inner - hub > 0.12) else 0
    if holes:
        mid = (hub + rim_inner) / 2.0
        hole = min(0.4 * (rim_inner - hub), 0.35 * 2 * np.pi * mid / holes)
        solid = solid - _extrude(_holes2(_ring_points(holes, mid), hole), 2 * width, -width)
    keyed = p.flag("keyway", 0.4)
    if keyed:
        solid = solid - _box(0.5 * bore, 0.6 * bore, 2 * hub_length, bore, 0.0, 0.0)
    name = {"V": f"{'' if grooves == 1 else _count_word(grooves) + '-groove '}V-belt pulley", "flat": "flat belt pulley",
            "round": "rope pulley with a round groove"}[groove]
    extras = []
    if holes:
        extras.append(f"{_count_word(holes)} holes in its web")
    if keyed:
        extras.append("a keyed bore")
    caption = _article(name)
    if extras:
        caption += (" and " if groove == "round" else " with ") + " and ".join(extras)
    return solid, caption


def _make_flange(p: _Params) -> tuple[Manifold, str]:
    radius = 0.5
    kind = p.choice("kind", ["weld neck", "slip-on", "blind"])
    thickness = p.uniform("thickness", 0.05, 0.16)
    bore = p.uniform("bore_radius", 0.1, 0.22) if kind != "blind" else 0.0
    neck_radius = bore + p.uniform("neck_wall", 0.04, 0.1)
    neck_length = p.uniform("neck_length", 0.1, 0.45) if kind == "weld neck" else 0.25 * thickness
    hub_base = neck_radius + p.uniform("hub_flare", 0.02, 0.1)
    bolts = int(p.choice("bolts", ["4", "6", "8", "10", "12"]))
    circle = (radius + hub_base) / 2.0
    hole = min(p.uniform("bolt_fraction", 0.2, 0.4) * (radius - hub_base), 0.35 * 2 * np.pi * circle / bolts)
    raised = p.flag("raised_face", 0.5)
    face = 0.15 * thickness if raised else 0.0
    face_radius = max(circle - hole - 0.02, hub_base + 0.01)
    outline = [(bore, -face), (face_radius if raised else radius, -face)]
    if raised:
        outline += [(face_radius, 0.0), (radius, 0.0)]
    outline += [(radius, thickness), (hub_base, thickness)]
    if kind == "weld neck":
        outline += [(neck_radius, thickness + neck_length), (bore, thickness + neck_length)]
    else:
        outline += [(hub_base, thickness + neck_length), (bore, thickness + neck_length)]
    if kind == "blind":
        outline = [(0.0, y) if x == bore else (x, y) for x, y in outline]
    solid = _revolve2(_polygon2(outline), 2 * _SEGMENTS)
    solid = solid - _extrude(_holes2(_ring_points(bolts, circle, np.pi / bolts), hole), 2 * thickness + 1, -1.0)
    name = {"weld neck": "weld-neck pipe flange", "slip-on": "slip-on pipe flange", "blind": "blind flange"}[kind]
    caption = f"{_article(name)} with {_count_word(bolts)} bolt holes"
    return solid, caption + (" and a raised face" if raised else "")


def _make_bracket(p: _Params) -> tuple[Manifold, str]:
    a, b = p.uniform("base_length", 0.35, 1.0), p.uniform("upright_length", 0.3, 1.0)
    width = p.uniform("width", 0.2, 0.8)
    t = p.uniform("thickness", 0.03, 0.1)
    fillet = p.uniform("fillet_fraction", 0.5, 2.5) * t if p.flag("fillet", 0.6) else 0.0
    corner = p.choice("outer_corner", ["square", "chamfer", "round"])
    profile = _union2([_span2(0, a, 0, t), _span2(0, t, 0, b)])
    if fillet:
        profile = profile + (_span2(t - 1e-3, t + fillet, t - 1e-3, t + fillet) - _circle2(fillet, t + fillet, t + fillet))
    if corner == "chamfer":
        c = 0.7 * t
        profile = profile - _polygon2([(-0.01, -0.01), (c, -0.01), (-0.01, c)])
    elif corner == "round":
        r = 0.9 * t
        profile = profile - (_span2(-0.01, r, -0.01, r) - _circle2(r, r, r))
    solid = _extrude(profile, width, -width / 2.0).rotate((90.0, 0.0, 0.0))  # profile in XZ, width along Y
    gussets = p.integer("gussets", 1, 2) if p.flag("gusseted", 0.4) else 0
    if gussets:
        g = p.uniform("gusset_fraction", 0.4, 0.8)
        gt = max(0.8 * t, 0.03)
        tri = _polygon2([(t - 1e-3, t - 1e-3), (t + g * (a - t), t - 1e-3), (t - 1e-3, t + g * (b - t))])
        ys = [0.0] if gussets == 1 else [-(width / 2 - gt), width / 2 - gt]
        for y in ys:
            solid = solid + _extrude(tri, gt, -y - gt / 2.0).rotate((90.0, 0.0, 0.0))
    slotted = p.flag("slotted", 0.35)
    hole = min(p.uniform("hole_radius", 0.02, 0.06), 0.2 * width)
    start = t + fillet + 2 * hole
    n_base = p.integer("base_holes", 1, 3)
    n_up = p.integer("upright_holes", 0, 2)
    cutters = []
    free_ys = [0.0] if gussets != 1 else [-width / 4.0, width / 4.0]
    if gussets == 1:
        hole = min(hole, 0.15 * width)
    for k in range(n_base):
        x = start + (k + 0.5) * (a - start) / n_base
        for y in free_ys:
            if slotted:
                cutters.append(_extrude(_slot2(min(4 * hole, 0.6 * (a - start) / n_base), 2 * hole, x, y), 3 * t, -t))
            else:
                cutters.append(_cylinder(3 * t, hole, z0=-t).translate((x, y, 0.0)))
    for k in range(n_up):
        z = start + (k + 0.5) * (b - start) / n_up
        for y in free_ys:
            if slotted:
                cut = _extrude(_slot2(min(4 * hole, 0.6 * (b - start) / n_up), 2 * hole), 3 * t, -t)
            else:
                cut = _cylinder(3 * t, hole, z0=-t)
            cutters.append(cut.rotate((0.0, 90.0, 0.0)).translate((0.0, y, z)))
    holes = len(cutters)
    solid = solid - _union(cutters)
    words = []
    if corner != "square":
        words.append("chamfered" if corner == "chamfer" else "rounded")
    caption = _article(" ".join(words)) + " L bracket" if words else "an L bracket"
    kind = "slotted holes" if slotted else "holes"
    details = [f"{_count_word(holes)} {kind}" if holes > 1 else ("a slotted hole" if slotted else "one hole")]
    if gussets:
        details.append("a stiffening gusset" if gussets == 1 else "two stiffening gussets")
    if fillet:
        details.append("a filleted inner corner")
    return solid, caption + " with " + ", ".join(details[:-1]) + (" and " if len(details) > 1 else "") + details[-1]


def _make_link(p: _Params) -> tuple[Manifold, str]:
    bosses = p.integer("bosses", 2, 3)
    length = p.uniform("length", 0.5, 1.0)
    r1 = p.uniform("boss_radius", 0.08, 0.2)
    r2 = r1 * p.uniform("far_boss_fraction", 0.55, 1.0)
    bar = p.choice("bar", ["straight", "tapered", "dogbone"])
    bar_fraction = p.uniform("bar_fraction", 0.45, 0.85)
    t = p.uniform("bar_thickness", 0.04, 0.12)
    boss_height = t * p.uniform("boss_height_fraction", 1.0, 2.2)
    bore = p.uniform("bore_fraction", 0.3, 0.6)
    centres = [(0.0, 0.0), (length, 0.0)]
    radii = [r1, r2]
    if bosses == 3:
        angle = np.radians(p.uniform("crank_angle", 60.0, 150.0))
        arm = length * p.uniform("arm_fraction", 0.5, 0.9)
        centres.append((arm * float(np.cos(angle)), arm * float(np.sin(angle))))
        radii.append(r2)
    arms = []
    for k in range(1, bosses):
        (x0, y0), (x1, y1) = centres[0], centres[k]
        ra, rb = radii[0] * bar_fraction, radii[k] * bar_fraction
        if bar == "straight":
            rb = ra = min(ra, rb)
        arm = CrossSection.batch_hull([_circle2(ra, x0, y0), _circle2(rb, x1, y1)])
        if bar == "dogbone":
            waist = 0.6 * min(ra, rb)
            mid = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
            arm = _union2([CrossSection.batch_hull([_circle2(ra, x0, y0), _circle2(waist, *mid)]),
                           CrossSection.batch_hull([_circle2(waist, *mid), _circle2(rb, x1, y1)])])
        arms.append(arm)
    outline = _union2(arms)
    slot = p.flag("slot", 0.5) and bosses == 2
    if slot:
        gap = length - r1 - r2
        slot_width = 0.8 * min(r1, r2) * bar_fraction * (0.6 if bar == "dogbone" else 1.0)
        if gap > 2 * slot_width:
            outline = outline - _slot2(0.8 * gap, slot_width, r1 + gap / 2.0, 0.0)
        else:
            slot = False
    solid = _extrude(outline, t, -t / 2.0)
    solid = solid + _union([_cylinder(boss_height, r, z0=-boss_height / 2.0).translate((x, y, 0.0))
                            for (x, y), r in zip(centres, radii)])
    solid = solid - _union([_cylinder(2 * boss_height, bore * r, z0=-boss_height).translate((x, y, 0.0))
                            for (x, y), r in zip(centres, radii)])
    if bosses == 3:
        caption = "a bell-crank link with three bored bosses"
    else:
        shape = {"straight": "straight", "tapered": "tapered", "dogbone": "waisted"}[bar]
        caption = f"a robot arm link with a {shape} bar between two bored bosses"
        if slot:
            caption += " and a slot in the bar"
    return solid, caption


def _make_spur_gear(p: _Params) -> tuple[Manifold, str]:
    teeth = p.integer("teeth", 10, 48)
    module = 1.0 / (teeth + 2)
    width = p.uniform("face_width", 0.06, 0.4)
    helical = p.flag("helical", 0.25)
    root = module * (teeth / 2.0 - 1.25)
    bore = p.uniform("bore_fraction", 0.1, 0.3) * 0.5
    outline = _involute_gear2(teeth, module, backlash=0.05 * module)
    if helical:
        helix = p.uniform("helix_degrees", 12.0, 30.0)
        twist = float(np.degrees(width * np.tan(np.radians(helix)) / (module * teeth / 2.0)))
        solid = _extrude(outline, width, -width / 2.0, n_divisions=6, twist_degrees=twist)
    else:
        solid = _extrude(outline, width, -width / 2.0)
    hub = p.flag("hub", 0.5)
    hub_radius = min(bore * p.uniform("hub_fraction", 1.5, 2.5), 0.8 * root)
    top = width / 2.0
    if hub:
        hub_height = p.uniform("hub_height", 0.05, 0.25)
        solid = solid + _cylinder(hub_height + 0.01, hub_radius, z0=top - 0.01)
        top += hub_height
    web = p.flag("recessed_web", 0.4) and root - hub_radius > 0.12 and width > 0.1
    if web:
        depth = width / 3.0
        ring = _circle2(root - 1.5 * module, segments=2 * _SEGMENTS) - _circle2(hub_radius + 0.02)
        solid = solid - _extrude(ring, depth, width / 2.0 - depth + 1e-3)
        solid = solid - _extrude(ring, depth, -width / 2.0 - 1e-3)
    holes = p.integer("web_holes", 4, 6) if (p.flag("lightened", 0.4) and root - hub_radius > 0.12) else 0
    if holes:
        mid = (root - 1.5 * module + hub_radius + 0.02) / 2.0
        hole = min(0.35 * (root - hub_radius), 0.3 * 2 * np.pi * mid / holes)
        solid = solid - _extrude(_holes2(_ring_points(holes, mid, np.pi / holes), hole), 2 * top + 1.0, -top - 0.5)
    keyed = p.flag("keyway", 0.4)
    bore_section = _circle2(bore, segments=_SEGMENTS)
    if keyed:
        bore_section = bore_section + _rect2(0.5 * bore, 0.5 * bore, bore, 0.0)
    solid = solid - _extrude(bore_section, 2 * top + 1.0, -top - 0.5)
    extras = []
    if hub:
        extras.append("a hub")
    if web:
        extras.append("a recessed web")
    if holes:
        extras.append(f"{_count_word(holes)} lightening holes")
    extras.append("a keyed bore" if keyed else "a round bore")
    caption = f"a {'helical' if helical else 'spur'} gear with {teeth} teeth"
    caption += "".join(", " + extra for extra in extras[:-1]) + " and " + extras[-1]
    return solid, caption


def _make_internal_gear(p: _Params) -> tuple[Manifold, str]:
    teeth = p.integer("teeth", 24, 60)
    module = p.uniform("module_scale", 0.6, 0.8) / teeth
    pitch = module * teeth / 2.0
    outer = 0.5
    thickness = p.uniform("thickness", 0.05, 0.3)
    hole = _involute_gear2(teeth, module, tip=pitch + 1.25 * module, root=pitch - module, backlash=-0.05 * module,
                           phase=np.pi / teeth)
    ring = _circle2(outer, segments=2 * _SEGMENTS) - hole
    rim = outer - (pitch + 1.25 * module)
    mounts = p.integer("mounting_holes", 4, 8) if (p.flag("mounted", 0.5) and rim > 0.06) else 0
    if mounts:
        circle = outer - rim / 2.0
        ring = ring - _holes2(_ring_points(mounts, circle, np.pi / mounts), min(0.3 * rim, 0.3 * 2 * np.pi * circle / mounts))
    solid = _extrude(ring, thickness, -thickness / 2.0)
    caption = f"an internal ring gear with {teeth} teeth"
    if mounts:
        caption += f" and {_count_word(mounts)} mounting holes"
    return solid, caption


def _make_gear_pair(p: _Params) -> tuple[Manifold, str]:
    kind = p.choice("kind", ["pair", "rack and pinion"])
    width = p.uniform("face_width", 0.05, 0.25)
    if kind == "pair":
        z1 = p.integer("teeth", 10, 30)
        z2 = int(np.clip(round(z1 * p.uniform("ratio", 1.0, 3.0)), 10, 60))
        p.values["teeth_2"] = z2
        module = 1.0 / (z1 + z2 + 4)
        distance = module * (z1 + z2) / 2.0
        g1 = _involute_gear2(z1, module, backlash=0.06 * module)
        # gear 1's tooth 0 points at gear 2 (angle 0), so gear 2 puts a gap at angle pi
        g2 = _involute_gear2(z2, module, backlash=0.06 * module, phase=np.pi + np.pi / z2).translate((distance, 0.0))
        bore = p.uniform("bore_fraction", 0.15, 0.35)
        parts = [_extrude(g1 - _circle2(bore * module * z1 / 2.0), width, -width / 2.0),
                 _extrude(g2 - _circle2(bore * module * z2 / 2.0, distance, 0.0), width, -width / 2.0)]
        solid = _union(parts)
        return solid, f"a pair of meshing spur gears with {z1} and {z2} teeth"
    module = p.uniform("module", 0.02, 0.045)
    z = p.integer("pinion_teeth", 10, 24)
    length = p.uniform("rack_length", 0.8, 1.4)
    pitch_step = np.pi * module
    count = int(length / pitch_step)
    height = p.uniform("rack_height", 2.0, 5.0) * module
    tan = np.tan(np.radians(20.0))
    backlash = 0.06 * module
    x_end = count * pitch_step / 2.0 + pitch_step / 2.0
    points = [(-x_end, -1.25 * module - height), (-x_end, -1.25 * module)]
    for k in range(count + 1):
        xc = (k - count / 2.0) * pitch_step  # tooth centres
        top_half = pitch_step / 4.0 - module * tan - backlash / 2.0
        root_half = pitch_step / 4.0 + 1.25 * module * tan - backlash / 2.0
        points += [(xc - root_half, -1.25 * module), (xc - top_half, module), (xc + top_half, module), (xc + root_half, -1.25 * module)]
    points += [(x_end, -1.25 * module), (x_end, -1.25 * module - height)]
    rack = _extrude(_polygon2(points), width, -width / 2.0)
    radius = module * z / 2.0
    gap_x = (count // 2 - count / 2.0) * pitch_step + pitch_step / 2.0  # a gap between two middle teeth
    pinion = _involute_gear2(z, module, backlash=backlash, phase=-np.pi / 2.0).translate((gap_x, radius))
    pinion = pinion - _circle2(0.3 * radius, gap_x, radius)
    solid = _union([rack, _extrude(pinion, width, -width / 2.0)])
    return solid, f"a rack and pinion: a {z}-tooth pinion on a straight toothed rack"


# --------------------------------------------------------------------------- thin shells and pipes


def _make_tray(p: _Params) -> tuple[Manifold, str]:
    width, depth, height = p.uniform("width", 0.4, 1.2), p.uniform("depth", 0.3, 1.0), p.uniform("height", 0.2, 0.8)
    wall = p.uniform("wall_fraction", 0.015, 0.04) * max(width, depth, height)
    corner = p.uniform("corner_fraction", 0.05, 0.3) * min(width, depth) if p.flag("rounded", 0.5) else 0.0
    taper = p.uniform("taper", 0.03, 0.2) if p.flag("tapered", 0.35) else 0.0
    grow = 1.0 + 2.0 * taper * height / width, 1.0 + 2.0 * taper * height / depth
    outer = _extrude(_rounded_rect2(width, depth, corner), height, scale_top=grow)
    slope = taper * height  # each side moves out by this much from bottom to top

    def inner_size(z: float) -> tuple[float, float]:
        return width - 2.0 * wall + 2.0 * slope * z / height, depth - 2.0 * wall + 2.0 * slope * z / height

    z0, z1 = wall, height + 0.1
    (w0, d0), (w1, d1) = inner_size(z0), inner_size(z1)
    inner = _extrude(_rounded_rect2(w0, d0, max(corner - wall, 0.0)), z1 - z0, z0, scale_top=(w1 / w0, d1 / d0))
    solid = outer - inner
    dividers = p.integer("dividers", 1, 3) if p.flag("divided", 0.35) else 0
    if dividers:
        xs = (np.arange(dividers) + 1.0) / (dividers + 1.0) * width - width / 2.0
        walls = _union([_box(wall, 2.0 * depth, height, float(x), 0.0, height / 2.0 - 0.01 * height) for x in xs])
        solid = solid + (walls ^ outer)
    lip = p.flag("rim", 0.3)
    if lip:
        top_w, top_d = width * grow[0], depth * grow[1]
        rim = p.uniform("rim_fraction", 0.04, 0.1) * max(width, depth)
        flange = _rounded_rect2(top_w + 2 * rim, top_d + 2 * rim, corner + rim) - _rounded_rect2(top_w - wall, top_d - wall, corner)
        solid = solid + _extrude(flange, wall, height - wall)
    if height < 0.3 * min(width, depth):
        noun = "shallow tray"
    elif taper:
        noun = "tapered bin"
    else:
        noun = "open-top box"
    words = ["thin-walled" if wall < 0.025 * max(width, depth, height) else ""]
    caption = _article(" ".join(w for w in words + [noun] if w))
    details = []
    if corner:
        details.append("rounded corners")
    if dividers:
        details.append("one divider" if dividers == 1 else f"{_count_word(dividers)} dividers")
    if lip:
        details.append("a flat rim")
    if details:
        caption += " with " + ", ".join(details[:-1]) + (" and " if len(details) > 1 else "") + details[-1]
    return solid, caption


def _make_can(p: _Params) -> tuple[Manifold, str]:
    kind = p.choice("kind", ["cup", "tube", "bucket", "pot"])
    radius, height = p.uniform("radius", 0.15, 0.5), p.uniform("height", 0.2, 1.2)
    wall = p.uniform("wall_fraction", 0.015, 0.04) * max(2.0 * radius, height)
    top = radius * (p.uniform("flare", 1.1, 1.45) if kind == "bucket" else 1.0)
    if kind == "tube":
        outline = [(radius - wall, 0.0), (radius, 0.0), (top, height), (top - wall, height)]
    else:
        outline = [(0.0, 0.0), (radius, 0.0), (top, height), (top - wall, height), (radius - wall, wall), (0.0, wall)]
    solid = _revolve2(_polygon2(outline), 2 * _SEGMENTS)
    rolled = kind == "bucket" and p.flag("rolled_rim", 0.6)
    if rolled:
        bead = 1.2 * wall
        solid = solid + CrossSection.circle(bead, 12).translate((top - wall / 2.0 + 0.5 * bead, height - bead)).revolve(2 * _SEGMENTS)
    if kind == "pot":
        lip = p.uniform("lip_fraction", 0.05, 0.15) * radius
        solid = solid + _extrude(_circle2(radius + lip, segments=2 * _SEGMENTS) - _circle2(radius - wall / 2.0, segments=2 * _SEGMENTS),
                                 wall, height - wall)
    shape = _size_word(height / (2.0 * radius), 0.6, 2.0, ("wide", "tall"))
    if kind == "tube":
        return solid, _article(f"{shape} thin open-ended tube".strip())
    if kind == "bucket":
        return solid, _article(f"{shape} tapered bucket".strip()) + (" with a rolled rim" if rolled else "")
    if kind == "pot":
        return solid, _article(f"{shape} thin-walled pot with a lip".strip())
    return solid, _article(f"{shape} thin-walled cup".strip())


def _make_sheet(p: _Params) -> tuple[Manifold, str]:
    pattern = p.choice("pattern", ["angle", "channel", "z", "hat", "zigzag"])
    t = p.uniform("thickness_fraction", 0.015, 0.04)
    width = p.uniform("width", 0.3, 1.0)
    turns = {"angle": [1], "channel": [1, 1], "z": [1, -1], "hat": [1, -1, -1, 1], "zigzag": [1, -1, 1, -1][: 2 + int(p.rng.integers(3))]}
    signs = turns[pattern]
    if pattern == "zigzag":
        p.values["bends"] = len(signs)
    angles = [s * p.uniform(f"bend_{k}", 70.0, 110.0) if pattern != "zigzag" else s * p.uniform(f"bend_{k}", 30.0, 70.0)
              for k, s in enumerate(signs)]
    if pattern == "zigzag":
        angles[0] /= 2.0  # start half-way so the zigzag runs straight on average
    lengths = [p.uniform(f"length_{k}", 0.15, 0.6) for k in range(len(signs) + 1)]
    pos, heading = np.zeros(2), 0.0
    pieces, segments = [], []
    for k, length in enumerate(lengths):
        d = np.array([np.cos(heading), np.sin(heading)])
        mid = pos + d * length / 2.0
        pieces.append(_rect2(length, t).rotate(float(np.degrees(heading))).translate(tuple(mid)))
        segments.append((mid, heading, length))
        pos = pos + d * length
        if k < len(angles):
            pieces.append(_circle2(t / 2.0, *pos, segments=16))
            heading += np.radians(angles[k])
    solid = _extrude(_union2(pieces), width, -width / 2.0)
    holes = 0
    if p.flag("holes", 0.6):
        radius = min(p.uniform("hole_radius", 0.02, 0.05), 0.2 * width)
        per = p.integer("holes_per_face", 1, 2)
        cutters = []
        for mid, heading, length in segments:
            if length < 5.0 * radius:
                continue
            n = np.array([-np.sin(heading), np.cos(heading), 0.0])
            zs = [0.0] if per == 1 else [-width / 4.0, width / 4.0]
            for z in zs:
                centre = np.array([mid[0], mid[1], z])
                cutters.append(_rod(centre - n * 2 * t, centre + n * 2 * t, radius, _HOLE_SEGMENTS))
        if cutters:
            holes = len(cutters)
            solid = solid - _union(cutters)
    solid = solid.rotate((90.0, 0.0, 0.0))  # the bent profile in XZ, the width along Y
    name = {"angle": "a bent sheet-metal angle", "channel": "a U-shaped sheet-metal channel", "z": "a Z-shaped bent sheet",
            "hat": "a hat-section sheet-metal profile", "zigzag": f"a zigzag sheet with {_count_word(len(signs))} bends"}[pattern]
    if holes:
        name += " and" if " with " in name else " with"
        name += " one hole" if holes == 1 else f" {_count_word(holes)} holes"
    return solid, name


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """The right-handed rotation by ``angle`` (radians) about the unit ``axis``."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _pipe_path(p: _Params, bends: int, outer: float) -> tuple[list[np.ndarray], list[float]]:
    """The centreline frames of a pipe: straight runs joined by arcs (elbows).

    Returns ``(frames, bend angles)``; each frame is a 3x4 array (centre, e1, e2, tangent as
    columns), sampled densely enough along the arcs for a smooth tube. The path is cut short
    before it would run into itself (so the tube never self-intersects).
    """
    planar = p.flag("planar", 0.5)
    centre = np.zeros(3)
    basis = np.eye(3)  # columns e1, e2, tangent
    frames: list[np.ndarray] = [np.column_stack([centre, basis])]
    pieces: list[int] = [0]  # the piece each frame ends (runs even, bends odd)
    angles: list[float] = []
    for k in range(bends + 1):
        length = p.uniform(f"run_{k}", 0.15, 0.5)
        steps = max(1, int(np.ceil(length / outer)))  # samples for the self-contact test only
        for step in range(1, steps + 1):
            frames.append(np.column_stack([centre + basis[:, 2] * length * step / steps, basis]))
            pieces.append(2 * k)
        centre = centre + basis[:, 2] * length
        if k == bends:
            break
        angle = 90.0 if p.flag(f"right_angle_{k}", 0.5) else p.uniform(f"bend_{k}", 30.0, 120.0)
        roll = np.pi * int(p.rng.integers(2)) if planar else p.uniform(f"roll_{k}", 0.0, 2.0 * np.pi)
        towards = _axis_rotation(basis[:, 2], roll) @ basis[:, 0]  # the bend's centre lies this way
        bend_radius = outer * p.uniform(f"bend_radius_{k}", 1.5, 3.0)
        axis = np.cross(basis[:, 2], towards)
        steps = max(3, int(round(angle / 10.0)))
        for step in range(1, steps + 1):
            phi = np.radians(angle) * step / steps
            point = centre + bend_radius * ((1.0 - np.cos(phi)) * towards + np.sin(phi) * basis[:, 2])
            frames.append(np.column_stack([point, _axis_rotation(axis, phi) @ basis]))
            pieces.append(2 * k + 1)
        rotation = _axis_rotation(axis, np.radians(angle))
        centre, basis = frames[-1][:, 0].copy(), rotation @ basis
        angles.append(angle)
    # self-contact: two centreline samples closer than the pipe's diameter (plus a margin)
    # that are far apart along the path; cut before the first run or bend that makes one
    points = np.array([f[:, 0] for f in frames])
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    near = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2) < 2.4 * outer
    far_along = np.abs(along[:, None] - along[None, :]) > 4.0 * outer
    clash = np.nonzero(np.tril(near & far_along, -1).any(axis=1))[0]  # samples that meet an earlier one
    if len(clash):
        last_run = pieces[int(clash[0])] - 1
        last_run = max(last_run - last_run % 2, 2)  # end on a whole run, after at least one bend
        keep = [i for i, piece in enumerate(pieces) if piece <= last_run]
        frames = [frames[i] for i in keep]
        angles = angles[: last_run // 2]
    return frames, angles


def _tube(frames: list[np.ndarray], radius: float, extend: float = 0.0, segments: int = _PIPE_SEGMENTS) -> Manifold:
    """A closed tube of ``radius`` through the frames' rings (end caps flat); ``extend``
    lengthens it past both ends (so a bore cut with it opens the pipe's ends)."""
    frames = list(frames)
    if extend:
        first, last = frames[0].copy(), frames[-1].copy()
        first[:, 0] -= first[:, 3] * extend
        last[:, 0] += last[:, 3] * extend
        frames = [first] + frames + [last]
    angles = 2.0 * np.pi * np.arange(segments) / segments
    ring_S2 = np.column_stack([np.cos(angles), np.sin(angles)])
    rings = [f[:, 0] + radius * (ring_S2 @ f[:, 1:3].T) for f in frames]
    n_rings = len(rings)
    vertices = np.vstack(rings + [frames[0][:, 0][None, :], frames[-1][:, 0][None, :]])
    j = np.arange(segments)
    jn = (j + 1) % segments
    faces = []
    for k in range(n_rings - 1):
        a, b = k * segments, (k + 1) * segments
        faces.append(np.column_stack([a + j, a + jn, b + jn]))
        faces.append(np.column_stack([a + j, b + jn, b + j]))
    start, end = n_rings * segments, n_rings * segments + 1
    faces.append(np.column_stack([np.full(segments, start), jn, j]))
    last = (n_rings - 1) * segments
    faces.append(np.column_stack([np.full(segments, end), last + j, last + jn]))
    mesh = Mesh64(vert_properties=np.ascontiguousarray(vertices, dtype=np.float64),
                  tri_verts=np.ascontiguousarray(np.vstack(faces), dtype=np.uint64))
    return Manifold(mesh)


def _make_pipe(p: _Params) -> tuple[Manifold, str]:
    bends = p.integer("bends", 1, 3)
    outer = p.uniform("radius", 0.04, 0.1)
    wall = p.uniform("wall_fraction", 0.12, 0.3) * outer
    frames, angles = _pipe_path(p, bends, outer)
    bends = len(angles)
    p.values["bends_kept"] = bends
    ends = p.choice("ends", ["plain", "flanged", "socket"])
    solid = _tube(frames, outer)
    if ends != "plain":
        collar = outer * (p.uniform("flange_fraction", 1.6, 2.4) if ends == "flanged" else 1.3)
        thick = outer * (0.4 if ends == "flanged" else 1.5)
        for frame, sign in ((frames[0], 1.0), (frames[-1], -1.0)):
            start = frame[:, 0]
            solid = solid + _rod(start, start + sign * frame[:, 3] * thick, collar, _PIPE_SEGMENTS)
    solid = solid - _tube(frames, outer - wall, extend=0.05)
    if all(abs(a - 90.0) < 1e-9 for a in angles):
        shape = "one right-angle elbow" if bends == 1 else f"{_count_word(bends)} right-angle elbows"
    else:
        shape = "one bend" if bends == 1 else f"{_count_word(bends)} bends"
    planar = "" if p.values["planar"] or bends == 1 else " turning in 3D"
    caption = f"a bent pipe{planar} with {shape}"
    if ends != "plain":
        caption += " and flanged ends" if ends == "flanged" else " and socket ends"
    return solid, caption


def _make_tee(p: _Params) -> tuple[Manifold, str]:
    kind = p.choice("kind", ["tee", "cross", "wye"])
    radius = p.uniform("radius", 0.1, 0.2)
    branch = radius * (p.uniform("branch_fraction", 0.5, 0.9) if p.flag("reducing", 0.4) else 1.0)
    wall = p.uniform("wall_fraction", 0.12, 0.3)
    half = p.uniform("run_length", 0.35, 0.7)
    reach = p.uniform("branch_length", 0.35, 0.7)
    ends = p.choice("ends", ["plain", "socket", "flanged"])
    angle = np.radians(p.uniform("wye_degrees", 40.0, 60.0)) if kind == "wye" else np.pi / 2.0
    arms = [(np.array([-half, 0.0, 0.0]), radius), (np.array([half, 0.0, 0.0]), radius),
            (reach * np.array([np.cos(angle), 0.0, np.sin(angle)]), branch)]  # the branch points up
    if kind == "cross":
        arms.append((np.array([0.0, 0.0, -reach]), branch))
    outer_parts = [_rod(arms[0][0], arms[1][0], radius, _PIPE_SEGMENTS)]
    outer_parts += [_rod(np.zeros(3), end, r, _PIPE_SEGMENTS) for end, r in arms[2:]]
    if ends != "plain":
        for end, r in arms:
            direction = end / np.linalg.norm(end)
            grow = 1.35 if ends == "socket" else p.uniform("flange_fraction", 1.6, 2.2)
            length = (1.2 if ends == "socket" else 0.35) * r
            outer_parts.append(_rod(end - direction * length, end, r * grow, _PIPE_SEGMENTS))
    solid = _union(outer_parts)
    bores = [_rod(arms[0][0] * 1.1, arms[1][0] * 1.1, radius * (1 - wall), _PIPE_SEGMENTS)]
    bores += [_rod(np.zeros(3), end * 1.1, r * (1 - wall), _PIPE_SEGMENTS) for end, r in arms[2:]]
    solid = solid - _union(bores)
    name = {"tee": "pipe tee", "cross": "four-way pipe cross", "wye": "Y-shaped pipe junction"}[kind]
    caption = _article(name)
    details = []
    if branch < radius:
        details.append("a smaller branch" if kind != "cross" else "smaller side branches")
    if ends != "plain":
        details.append("socket ends" if ends == "socket" else "flanged ends")
    if details:
        caption += " with " + " and ".join(details)
    return solid, caption


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


_BUILDERS: dict[str, Callable[[_Params], tuple[Manifold, str]]] = {
    "box": _make_box,
    "sphere": _make_sphere,
    "cylinder": _make_cylinder,
    "cone": _make_cone,
    "torus": _make_torus,
    "capsule": _make_capsule,
    "mug": _make_mug,
    "table": _make_table,
    "chair": _make_chair,
    "bottle": _make_bottle,
    "lamp": _make_lamp,
    "gear": _make_gear,
    "ring": _make_ring,
    "bowl": _make_bowl,
    "dumbbell": _make_dumbbell,
    "shelf": _make_shelf,
    "arch": _make_arch,
    "blocks": _make_blocks,
    "snowman": _make_snowman,
    # mechanical parts and organic shapes (generator version 2)
    "plate": _make_plate,
    "profile": _make_profile,
    "vase": _make_vase,
    "knob": _make_knob,
    "pulley": _make_pulley,
    "flange": _make_flange,
    "bracket": _make_bracket,
    "link": _make_link,
    "spur_gear": _make_spur_gear,
    "internal_gear": _make_internal_gear,
    "gear_pair": _make_gear_pair,
    "tray": _make_tray,
    "can": _make_can,
    "sheet": _make_sheet,
    "pipe": _make_pipe,
    "tee": _make_tee,
    "rock": _make_rock,
    "blob": _make_blob,
    "bone": _make_bone,
}

#: The procedural families, in the order ``make_shape`` cycles through them.
FAMILIES: list[str] = list(_BUILDERS)


def family_of_seed(seed: int) -> str:
    """The family ``make_shape(seed)`` builds."""
    return FAMILIES[int(seed) % len(FAMILIES)]


def _to_trimesh(solid: Manifold) -> trimesh.Trimesh:
    mesh = solid.to_mesh64() if hasattr(solid, "to_mesh64") else solid.to_mesh()
    vertices_V3 = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3]
    faces_F3 = np.asarray(mesh.tri_verts, dtype=np.int64)
    return trimesh.Trimesh(vertices_V3, faces_F3, process=False)


def make_family(family: str, seed: int) -> ProceduralShape:
    """Build a shape of ``family`` with parameters drawn from ``seed`` (deterministic)."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, zlib.crc32(family.encode()), _PARAM_STREAM]
    params = _Params(np.random.default_rng(np.random.SeedSequence(entropy)))
    solid, caption = _BUILDERS[family](params)
    if solid.is_empty():
        raise RuntimeError(f"procedural {family} with seed {seed} produced an empty solid")
    z_up_to_y_up = solid.rotate((-90.0, 0.0, 0.0))
    return ProceduralShape(
        mesh=_to_trimesh(z_up_to_y_up),
        family=family,
        params=dict(params.values),
        caption=" ".join(caption.split()),
        seed=int(seed),
    )


def make_shape(seed: int) -> ProceduralShape:
    """The procedural shape of ``seed``: family ``FAMILIES[seed % len(FAMILIES)]``."""
    return make_family(family_of_seed(seed), seed)
