"""The 19 simple families of generator version 1 (box ... snowman)."""

from __future__ import annotations


import numpy as np
from manifold3d import CrossSection, Manifold

from vat3d.data.procedural._base import (
    _Params,
    _SEGMENTS,
    _article,
    _box,
    _count_word,
    _cylinder,
    _revolve,
    _sphere,
    _torus,
    _union,
)

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
