"""Procedural shapes: families, determinism, validity and captions."""

from __future__ import annotations

import collections
import subprocess
import sys

import numpy as np
import pytest

from vat3d.data import FAMILIES, make_family, make_shape
from vat3d.data.procedural import family_of_seed
from vat3d.geometry import validate_mesh

REQUIRED = {"box", "sphere", "cylinder", "cone", "torus", "capsule", "mug", "table", "chair", "bottle", "lamp", "gear", "ring"}


def test_families():
    assert len(FAMILIES) >= 12 and len(set(FAMILIES)) == len(FAMILIES)
    assert REQUIRED <= set(FAMILIES)


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
