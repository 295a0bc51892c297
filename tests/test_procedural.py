"""Procedural shapes: families, determinism, validity and captions."""

from __future__ import annotations

import collections
import subprocess
import sys

import numpy as np
import pytest

from vat3d.data import FAMILIES, make_family, make_shape
from vat3d.data.procedural import GENERATOR_VERSION, family_of_seed
from vat3d.geometry import validate_mesh

REQUIRED = {"box", "sphere", "cylinder", "cone", "torus", "capsule", "mug", "table", "chair", "bottle", "lamp", "gear", "ring"}
MECHANICAL = {"plate", "profile", "vase", "knob", "pulley", "flange", "bracket", "link", "spur_gear", "internal_gear",
              "gear_pair", "tray", "can", "sheet", "pipe", "tee"}
ORGANIC = {"rock", "blob", "bone"}
THIN = {"vase", "tray", "can", "sheet", "pipe"}  # walls of 1.5-4 % of the shape's size


def test_families():
    assert len(FAMILIES) >= 29 and len(set(FAMILIES)) == len(FAMILIES)
    assert REQUIRED | MECHANICAL | ORGANIC <= set(FAMILIES)
    assert FAMILIES[:19] == ["box", "sphere", "cylinder", "cone", "torus", "capsule", "mug", "table", "chair", "bottle",
                             "lamp", "gear", "ring", "bowl", "dumbbell", "shelf", "arch", "blocks", "snowman"]


def test_older_families_unchanged_by_new_ones():
    """Adding families bumps GENERATOR_VERSION (content hashes) but keeps make_family's shapes."""
    mug = make_family("mug", 0)
    assert mug.params == {"radius": 0.389, "height": 0.559, "wall": 0.0212, "handle": True,
                          "handle_radius_fraction": 0.3585, "handle_thickness": 0.0284}
    assert mug.mesh.volume == pytest.approx(0.03860031559016749, rel=1e-9)
    assert make_family("gear", 5).params == {"teeth": 22, "tooth_depth": 0.0512, "thickness": 0.3742, "bore_radius": 0.143}
    assert GENERATOR_VERSION >= 3


def test_family_balance():
    counts = collections.Counter(family_of_seed(seed) for seed in range(len(FAMILIES) * 5))
    assert set(counts) == set(FAMILIES) and set(counts.values()) == {5}
    assert all(make_shape(seed).family == family_of_seed(seed) for seed in range(len(FAMILIES)))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_a_valid_solid_with_a_caption(family):
    for seed in (0, 1, 2):
        shape = make_family(family, seed)
        mesh = shape.mesh
        validate_mesh(mesh)
        assert shape.family == family and shape.seed == seed and shape.params
        assert mesh.is_watertight and mesh.is_winding_consistent
        assert mesh.volume > 0, "outward orientation"
        assert isinstance(shape.caption, str) and len(shape.caption.split()) >= 2
        assert shape.caption == " ".join(shape.caption.split())  # no stray spaces
        assert shape.caption[0].islower() and not shape.caption.endswith(".")
        assert len(mesh.faces) < 60_000
        assert np.all(mesh.extents > 1e-3) and mesh.extents.max() < 3.0


def _mesh_bytes(shape) -> bytes:
    return shape.mesh.vertices.tobytes() + shape.mesh.faces.tobytes()


def test_same_seed_same_bytes_different_seeds_differ():
    n = len(FAMILIES)
    for seed in range(n):
        assert _mesh_bytes(make_shape(seed)) == _mesh_bytes(make_shape(seed))
        assert make_shape(seed).params == make_shape(seed).params
        assert _mesh_bytes(make_shape(seed)) != _mesh_bytes(make_shape(seed + n)), FAMILIES[seed]


def test_deterministic_across_processes():
    code = (
        "import hashlib; from vat3d.data import make_shape\n"
        "h = hashlib.sha256()\n"
        "for s in range(40):\n"
        "    m = make_shape(s).mesh; h.update(m.vertices.tobytes()); h.update(m.faces.tobytes())\n"
        "print(h.hexdigest())\n"
    )
    import hashlib

    local = hashlib.sha256()
    for seed in range(40):
        mesh = make_shape(seed).mesh
        local.update(mesh.vertices.tobytes())
        local.update(mesh.faces.tobytes())
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == local.hexdigest()


def _find(family, predicate, tries=200):
    for seed in range(tries):
        shape = make_family(family, seed)
        if predicate(shape.params):
            return shape
    raise AssertionError(f"no {family} seed satisfies the predicate")


def test_captions_reflect_parameters():
    assert "handle" in _find("mug", lambda p: p["handle"]).caption
    assert "without a handle" in _find("mug", lambda p: not p["handle"]).caption
    assert "single central leg" in _find("table", lambda p: p.get("legs") == "pedestal").caption
    assert "low" in _find("table", lambda p: p["height"] < 0.45).caption
    assert "four" in _find("table", lambda p: not p["round_top"]).caption
    assert _find("chair", lambda p: not p["back"]).caption.startswith("a stool")
    assert "armrests" in _find("chair", lambda p: p["back"] and p.get("armrests")).caption
    gear = make_family("gear", 3)
    assert f"{gear.params['teeth']} teeth" in gear.caption
    shelf = make_family("shelf", 4)
    assert "shelves" in shelf.caption
    assert "hole" in _find("box", lambda p: p["hole"]).caption
    assert "hollow" in _find("cylinder", lambda p: p["hollow"]).caption
    height = lambda p: p["body_height"] + p["shoulder_height"] + p["neck_height"]  # noqa: E731
    assert "tall narrow" in _find("bottle", lambda p: height(p) > 7.0 * p["body_radius"]).caption
    assert "short wide" in _find("bottle", lambda p: height(p) < 3.0 * p["body_radius"]).caption
    assert "long neck" in _find("bottle", lambda p: p["neck_height"] > 0.3).caption


def test_multi_part_and_holes():
    blocks = make_family("blocks", 0)
    assert blocks.mesh.body_count == blocks.params["count"] >= 2
    gear = make_family("gear", 0)
    assert gear.mesh.euler_number == 0  # one through-hole: genus 1
    mug = _find("mug", lambda p: p["handle"])
    assert mug.mesh.euler_number == 0  # the handle makes a loop


def test_unknown_family():
    with pytest.raises(ValueError):
        make_family("spaceship", 0)
    assert np.isfinite(make_shape(10**12).mesh.vertices).all()


@pytest.mark.parametrize("family", sorted(MECHANICAL | ORGANIC))
def test_new_families_deterministic_and_varied(family):
    first, again, other = make_family(family, 11), make_family(family, 11), make_family(family, 12)
    assert np.array_equal(first.mesh.vertices, again.mesh.vertices) and np.array_equal(first.mesh.faces, again.mesh.faces)
    assert first.params == again.params and first.caption == again.caption
    assert first.params != other.params
    assert first.mesh.vertices.shape != other.mesh.vertices.shape or not np.allclose(first.mesh.vertices, other.mesh.vertices)


def test_captions_are_family_specific():
    owners = collections.defaultdict(set)
    for family in FAMILIES:
        captions = {make_family(family, seed).caption for seed in range(4)}
        for caption in captions:
            owners[caption].add(family)
    assert all(len(families) == 1 for families in owners.values()), {c: f for c, f in owners.items() if len(f) > 1}


@pytest.mark.parametrize("family", sorted(THIN))
def test_thin_families_are_thin(family):
    for seed in range(4):
        mesh = make_family(family, seed).mesh
        thickness = 2.0 * mesh.volume / mesh.area  # a thin shell's mean wall thickness
        assert thickness < 0.06 * mesh.extents.max(), seed
        assert mesh.volume < 0.4 * np.prod(mesh.extents), seed


def test_new_captions_reflect_parameters():
    gear = make_family("spur_gear", 2)
    assert f"{gear.params['teeth']} teeth" in gear.caption
    assert ("helical" in gear.caption) == gear.params["helical"]
    ring = make_family("internal_gear", 1)
    assert ring.caption.startswith("an internal ring gear with") and f"{ring.params['teeth']} teeth" in ring.caption
    pair = _find("gear_pair", lambda p: p["kind"] == "pair")
    assert f"{pair.params['teeth']} and {pair.params['teeth_2']} teeth" in pair.caption
    assert pair.mesh.body_count == 2  # two meshing gears that do not touch
    rack = _find("gear_pair", lambda p: p["kind"] == "rack and pinion")
    assert f"{rack.params['pinion_teeth']}-tooth pinion" in rack.caption and rack.mesh.body_count == 2
    flange = _find("flange", lambda p: p["kind"] == "blind")
    assert flange.caption.startswith("a blind flange") and flange.mesh.euler_number == 2 - 2 * int(flange.params["bolts"])
    assert "slot" in _find("link", lambda p: p["bosses"] == 2 and p["slot"]).caption
    assert "three bored bosses" in _find("link", lambda p: p["bosses"] == 3).caption
    pipe = _find("pipe", lambda p: p["ends"] == "flanged")
    assert "flanged ends" in pipe.caption and pipe.mesh.euler_number == 0  # one bore through a single body
    assert "cross" in _find("tee", lambda p: p["kind"] == "cross").caption
    assert "dividers" in _find("tray", lambda p: p.get("dividers", 0) >= 2).caption
    assert "tuber" in _find("blob", lambda p: p["kind"] == "tuber").caption
    assert "broken face" in _find("rock", lambda p: p.get("broken_faces", 0) >= 1).caption
    assert "U-channel" in _find("profile", lambda p: p["profile"] == "U").caption
    for seed in range(30):  # articles: "an L-shaped", "an L bracket", "a U-channel"
        for family in ("profile", "bracket"):
            caption = make_family(family, seed).caption
            assert not caption.startswith(("a L", "an U", "a I")), caption
    assert _find("bracket", lambda p: p["outer_corner"] == "square").caption.startswith("an L bracket")


def test_organic_shapes_are_single_smooth_bodies():
    for family in ("rock", "blob", "bone"):
        for seed in range(3):
            mesh = make_family(family, seed).mesh
            assert mesh.body_count == 1 and mesh.euler_number == 2, (family, seed)  # a sphere's topology
