"""Mechanical parts: plates, profiles, vases, knobs, pulleys, flanges, brackets, links and gears."""

from __future__ import annotations


import numpy as np
from manifold3d import CrossSection, Manifold

from vat3d.data.procedural._base import (
    _HOLE_SEGMENTS,
    _Params,
    _SEGMENTS,
    _article,
    _box,
    _catmull_rom,
    _circle2,
    _count_word,
    _cylinder,
    _extrude,
    _holes2,
    _involute_gear2,
    _polygon2,
    _rect2,
    _revolve2,
    _ring_points,
    _rod,
    _rounded_rect2,
    _size_word,
    _slot2,
    _span2,
    _union,
    _union2,
)

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
