"""Thin shells and pipes: trays, cans, bent sheet metal, bent pipes and tees."""

from __future__ import annotations


import numpy as np
from manifold3d import CrossSection, Manifold, Mesh64

from vat3d.data.procedural._base import (
    _HOLE_SEGMENTS,
    _PIPE_SEGMENTS,
    _Params,
    _SEGMENTS,
    _article,
    _box,
    _circle2,
    _count_word,
    _extrude,
    _polygon2,
    _rect2,
    _revolve2,
    _rod,
    _rounded_rect2,
    _size_word,
    _union,
    _union2,
)

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
