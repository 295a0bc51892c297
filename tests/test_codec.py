"""Mesh <-> .vat codec: Python API and the ``vat3d encode`` / ``vat3d decode`` commands.

A tiny random tokenizer is saved in a temporary folder. Its decoded shapes are garbage, so the
coordinate handling is checked with a known occupancy field (a sphere) patched in for the model's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from conftest import TINY_TOKENIZER
from vat3d.cli import app
from vat3d.codec import (
    VatModelMismatch,
    VatTruncatedWarning,
    decode_file,
    decode_tokens,
    encode_mesh,
    read_tokens,
)
from vat3d.codec.bitpack import bits_for_codebook, packed_size
from vat3d.codec.vatfile import implicit_scale_sizes, schedule_kind, vat_overhead
from vat3d.models.quantizer import default_scale_sizes
from vat3d.models.tokenizer import VATokenizer

CENTER = np.array([10.0, -4.0, 2.5])
RADIUS = 3.0


def make_tokenizer(seed: int) -> VATokenizer:
    torch.manual_seed(seed)
    model = VATokenizer(**{**TINY_TOKENIZER, "num_points": 512}).eval()
    with torch.no_grad():  # spread the codebook so that different shapes get different tokens
        model.quantizer.codebook.weight.normal_()
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec")
    model = make_tokenizer(0)
    model.save_pretrained(root / "model")
    make_tokenizer(1).save_pretrained(root / "other")
    meshes = root / "meshes"
    (meshes / "sub").mkdir(parents=True)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS)
    sphere.apply_translation(CENTER)
    sphere.export(meshes / "sphere.obj")
    box = trimesh.creation.box(extents=(40.0, 10.0, 20.0))
    box.apply_translation((-100.0, 5.0, 0.0))
    box.export(meshes / "sub" / "box.ply")
    return {"root": root, "model": root / "model", "other": root / "other", "meshes": meshes,
            "sphere": meshes / "sphere.obj", "box": meshes / "sub" / "box.ply"}


@pytest.fixture(scope="module")
def model(files):
    return VATokenizer.from_pretrained(files["model"]).eval()


def sphere_field(radius: float = 0.95):
    """A known occupancy (positive inside a sphere of ``radius`` in the box)."""

    def occupancy_fn(self, indices, **kwargs):
        return lambda p: radius - torch.linalg.norm(torch.as_tensor(p, dtype=torch.float32), dim=-1)

    return occupancy_fn


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------------------- Python API


def test_saved_model_keeps_its_fingerprint(files, model):
    assert model.fingerprint() == make_tokenizer(0).fingerprint()


def test_api_round_trip_tokens_and_transform(files, model):
    shape = encode_mesh(model, files["sphere"])
    assert [len(t) for t in shape.tokens] == model.scale_sizes
    np.testing.assert_allclose(shape.transform.center, CENTER, atol=1e-3)
    assert shape.transform.scale == pytest.approx(0.95 / RADIUS, rel=1e-3)
    again = encode_mesh(model, files["sphere"])  # deterministic for a seed
    assert all(np.array_equal(a, b) for a, b in zip(shape.tokens, again.tokens))
    vat, transform = read_tokens(model, shape.data)
    assert vat.complete and len(vat.tokens) == len(model.scale_sizes)
    assert all(np.array_equal(a, b) for a, b in zip(shape.tokens, vat.tokens))
    # the file stores the centre to 2**-14 box units: 1 / (16384 * scale) original units
    assert np.abs(transform.center - shape.transform.center).max() <= 2.0**-14 / transform.scale * (1 + 1e-9)
    assert transform.scale == np.float32(shape.transform.scale)
    payload = sum(packed_size(n, bits_for_codebook(model.codebook_size)) for n in model.scale_sizes)
    assert shape.num_bytes == len(shape.data) == payload + 29  # header 22 (a 3 + 3 + 2 byte centre) + 7 checks


def test_decode_lands_in_original_coordinates(files, model, monkeypatch):
    monkeypatch.setattr(VATokenizer, "occupancy_fn", sphere_field(0.95))
    source = trimesh.load(files["sphere"], force="mesh")
    shape = encode_mesh(model, source)
    mesh = decode_tokens(model, shape.tokens, shape.transform, resolution=48)
    # the field's sphere has the normalised input's radius: the decoded mesh matches the input
    np.testing.assert_allclose(mesh.bounds, source.bounds, atol=0.1 * RADIUS)
    np.testing.assert_allclose(mesh.vertices.mean(0), CENTER, atol=0.05 * RADIUS)
    unit = decode_tokens(model, shape.tokens, None, resolution=48)  # no transform: the box
    assert np.abs(unit.bounds).max() < 1.0


def test_truncated_file_decodes_fewer_scales(files, model, tmp_path):
    data = encode_mesh(model, files["sphere"]).data
    K = len(model.scale_sizes)
    cut = tmp_path / "cut.vat"
    cut.write_bytes(data[:-1])  # the final check is incomplete: K - 1 scales survive
    with pytest.warns(VatTruncatedWarning):
        vat, _ = read_tokens(model, cut.read_bytes())
    assert len(vat.tokens) == K - 1 and not vat.complete
    with pytest.warns(VatTruncatedWarning):
        mesh, k = decode_file(model, cut, resolution=16)
    assert k == K - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, k = decode_file(model, cut, resolution=16, num_scales=2)  # a deliberate prefix: no warning
    assert k == 2


def test_wrong_model_is_an_error_naming_both(files, model):
    other = VATokenizer.from_pretrained(files["other"])
    data = encode_mesh(model, files["sphere"]).data
    with pytest.raises(VatModelMismatch) as info:
        read_tokens(other, data)
    # the file keeps the first 4 bytes of the model's fingerprint; the loaded model's is shown in full
    assert model.fingerprint()[:8] in str(info.value) and other.fingerprint() in str(info.value)


# ---------------------------------------------------------------------------- command line


def test_cli_round_trip_in_original_coordinates(files, model, tmp_path, monkeypatch):
    result = run("encode", files["model"], files["sphere"], "-o", tmp_path / "s.vat")
    assert result.exit_code == 0, result.output
    data = (tmp_path / "s.vat").read_bytes()
    assert data == encode_mesh(model, files["sphere"]).data  # same tokens and transform as the API
    monkeypatch.setattr(VATokenizer, "occupancy_fn", sphere_field(0.95))
    result = run("decode", files["model"], tmp_path / "s.vat", "-o", tmp_path / "s.ply", "--resolution", "48")
    assert result.exit_code == 0, result.output
    mesh = trimesh.load(tmp_path / "s.ply", force="mesh")
    source = trimesh.load(files["sphere"], force="mesh")
    np.testing.assert_allclose(mesh.bounds, source.bounds, atol=0.1 * RADIUS)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_cli_decode_of_a_folder_finishes_each_file_in_its_coordinates(files, model, tmp_path, monkeypatch):
    """A folder of files: each lands with its own transform and face budget, and a file that cannot be
    written fails alone (exit code 1)."""
    vats = tmp_path / "vats"
    vats.mkdir()
    source = trimesh.load(files["sphere"], force="mesh")
    for i, shift in enumerate((0.0, 5.0, 10.0)):
        moved = source.copy()
        moved.apply_translation((shift, 0.0, 0.0))
        (vats / f"{i}.vat").write_bytes(encode_mesh(model, moved).data)
    monkeypatch.setattr(VATokenizer, "occupancy_fn", sphere_field(0.95))
    out = tmp_path / "out"
    (out / "1.ply").mkdir(parents=True)  # a folder where file 1's mesh should go: its write fails
    result = run("decode", files["model"], vats, "-o", out, "--format", "ply", "--resolution", "48",
                 "--faces", "300")
    assert result.exit_code == 1 and "failed:" in result.output and "1.vat" in result.output
    assert "decoded 2 of 3 files" in result.output
    for i, shift in ((0, 0.0), (2, 10.0)):
        mesh = trimesh.load(out / f"{i}.ply", force="mesh")
        assert len(mesh.faces) <= 300
        np.testing.assert_allclose(mesh.vertices.mean(0), CENTER + np.array([shift, 0.0, 0.0]), atol=0.05 * RADIUS)


def test_cli_decode_precision(files, tmp_path):
    """--precision bf16 decodes (shipped model) to nearly the fp32 mesh; other values are refused."""
    assert run("encode", "default", files["sphere"], "-o", tmp_path / "s.vat").exit_code == 0
    meshes = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.ply"
        result = run("decode", "default", tmp_path / "s.vat", "-o", out, "--resolution", "48",
                     "--precision", precision)
        assert result.exit_code == 0, result.output
        meshes[precision] = trimesh.load(out, force="mesh")
    assert len(meshes["fp32"].faces) > 0
    np.testing.assert_allclose(meshes["bf16"].bounds, meshes["fp32"].bounds, atol=0.1 * RADIUS)
    result = run("decode", "default", tmp_path / "s.vat", "-o", tmp_path / "x.ply", "--precision", "fp16")
    assert result.exit_code != 0 and "auto, fp32 or bf16" in result.output
    # --dense and --band reach the extraction: the dense file is the API's dense mesh
    from vat3d.pretrained import load_tokenizer

    reference, _ = decode_file(load_tokenizer("default"), tmp_path / "s.vat", resolution=48, dense=True)
    for flag in (["--dense"], ["--band", "0.5"]):
        out = tmp_path / f"{flag[0][2:]}.ply"
        assert run("decode", "default", tmp_path / "s.vat", "-o", out, "--resolution", "48", "--precision", "fp32",
                   "--faces", "0", *flag).exit_code == 0
        np.testing.assert_allclose(trimesh.load(out, process=False).vertices, reference.vertices, rtol=0, atol=1e-6)
    assert run("decode", "default", tmp_path / "s.vat", "-o", tmp_path / "y.ply", "--band", "-1").exit_code != 0


def test_decoded_meshes_are_simplified_to_the_face_budget(files, tmp_path, monkeypatch):
    """--faces N (and decode_tokens(faces=N)) simplify the marching-cubes mesh; --faces 0 keeps it."""
    monkeypatch.setattr(VATokenizer, "occupancy_fn", sphere_field())
    model = VATokenizer.from_pretrained(files["model"])
    shape = encode_mesh(model, files["sphere"])
    full = decode_tokens(model, shape.tokens, shape.transform, resolution=64)
    small = decode_tokens(model, shape.tokens, shape.transform, resolution=64, faces=2000)
    assert len(full.faces) > 10_000 and 1500 <= len(small.faces) <= 2000
    np.testing.assert_allclose(small.bounds, full.bounds, atol=0.02 * RADIUS)
    assert run("encode", files["model"], files["sphere"], "-o", tmp_path / "s.vat").exit_code == 0
    for flag, check in ((["--faces", "2000"], lambda n: n <= 2000), (["--faces", "0"], lambda n: n == len(full.faces))):
        out = tmp_path / f"s{flag[1]}.ply"
        result = run("decode", files["model"], tmp_path / "s.vat", "-o", out, "--resolution", "64", *flag)
        assert result.exit_code == 0, result.output
        assert check(len(trimesh.load(out, process=False).faces))


def test_cli_batch_folder_goes_on_after_a_bad_file(files, tmp_path, monkeypatch):
    meshes = tmp_path / "in"
    (meshes / "sub").mkdir(parents=True)
    for name in ("sphere.obj", "sub/box.ply"):
        (meshes / name).write_bytes((files["meshes"] / name).read_bytes())
    (meshes / "broken.obj").write_text("this is not a mesh\n")
    result = run("encode", files["model"], meshes, "-o", tmp_path / "vats")
    assert result.exit_code != 0
    assert "broken.obj" in result.output and "encoded 2 of 3" in result.output
    assert sorted(p.relative_to(tmp_path / "vats").as_posix() for p in (tmp_path / "vats").rglob("*.vat")) == [
        "sphere.vat", "sub/box.vat"]
    # decode the folder, with one corrupt file among them
    bad = tmp_path / "vats" / "corrupt.vat"
    data = bytearray((tmp_path / "vats" / "sphere.vat").read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(VATokenizer, "occupancy_fn", sphere_field(0.5))
    result = run("decode", files["model"], tmp_path / "vats", "-o", tmp_path / "meshes", "--format", "glb",
                 "--resolution", "24")
    assert result.exit_code != 0
    assert "corrupt.vat" in result.output and "checksum" in result.output and "decoded 2 of 3" in result.output
    out = sorted(p.relative_to(tmp_path / "meshes").as_posix() for p in (tmp_path / "meshes").rglob("*.glb"))
    assert out == ["sphere.glb", "sub/box.glb"]
    box = trimesh.load(tmp_path / "meshes" / "sub" / "box.glb", force="mesh")
    assert box.bounds[0][0] < -100 < box.bounds[1][0]  # the box's position, in its own units


def test_cli_truncated_file_and_scales(files, model, tmp_path):
    full = encode_mesh(model, files["sphere"]).data
    (tmp_path / "cut.vat").write_bytes(full[:-1])
    result = run("decode", files["model"], tmp_path / "cut.vat", "-o", tmp_path / "cut.obj", "--resolution", "16")
    assert result.exit_code == 0, result.output
    K = len(model.scale_sizes)
    assert "truncated" in result.output and f"{K - 1} complete scales" in result.output
    assert (tmp_path / "cut.obj").exists()
    (tmp_path / "full.vat").write_bytes(full)
    result = run("decode", files["model"], tmp_path / "full.vat", "-o", tmp_path / "two.obj", "--scales", "2",
                 "--resolution", "16")
    assert result.exit_code == 0 and "warning" not in result.output
    result = run("decode", files["model"], tmp_path / "full.vat", "-o", tmp_path / "z.obj", "--scales", "0")
    assert result.exit_code != 0


def test_cli_wrong_model_names_both_fingerprints(files, model, tmp_path):
    (tmp_path / "s.vat").write_bytes(encode_mesh(model, files["sphere"]).data)
    other = VATokenizer.from_pretrained(files["other"]).fingerprint()
    result = run("decode", files["other"], tmp_path / "s.vat", "-o", tmp_path / "s.obj", "--resolution", "16")
    assert result.exit_code != 0
    assert model.fingerprint()[:8] in result.output and other in result.output
    assert not (tmp_path / "s.obj").exists()


def test_cli_never_overwrites_an_input(files, tmp_path):
    mesh = tmp_path / "m.obj"
    mesh.write_bytes(files["sphere"].read_bytes())
    before = mesh.read_bytes()
    result = run("encode", files["model"], mesh, "-o", mesh)
    assert result.exit_code != 0 and "overwrite" in result.output
    assert mesh.read_bytes() == before
    vat = tmp_path / "m.vat"
    assert run("encode", files["model"], mesh, "-o", vat).exit_code == 0
    data = vat.read_bytes()
    result = run("decode", files["model"], vat, "-o", vat)
    assert result.exit_code != 0 and "overwrite" in result.output
    assert vat.read_bytes() == data
    # a batch whose output "folder" is one of its inputs
    (tmp_path / "copy.obj").write_bytes(before)
    result = run("encode", files["model"], mesh, tmp_path / "copy.obj", "-o", mesh)
    assert result.exit_code != 0 and "overwrite" in result.output
    assert mesh.read_bytes() == before


def test_cli_bad_files_give_clear_errors(files, tmp_path):
    (tmp_path / "junk.vat").write_bytes(b"hello world")
    (tmp_path / "empty.vat").write_bytes(b"")
    result = run("decode", files["model"], tmp_path / "junk.vat", tmp_path / "empty.vat", "-o", tmp_path / "o")
    assert result.exit_code != 0
    assert "bad magic" in result.output and "empty data" in result.output
    assert run("decode", files["model"], tmp_path / "missing.vat", "-o", tmp_path / "o").exit_code != 0


def test_fingerprint_cache_follows_weight_changes(monkeypatch):
    from vat3d.codec.api import model_fingerprint_bytes

    model = make_tokenizer(3)
    first = model_fingerprint_bytes(model)
    assert first == bytes.fromhex(model.fingerprint())
    calls = []
    monkeypatch.setattr(model, "fingerprint", lambda: calls.append(1) or VATokenizer.fingerprint(model))
    assert model_fingerprint_bytes(model) == first and not calls  # cached: no re-hashing
    monkeypatch.undo()
    with torch.no_grad():
        model.quantizer.codebook.weight[0, 0] += 1.0
    assert model_fingerprint_bytes(model) == bytes.fromhex(model.fingerprint()) != first
    model.load_state_dict(make_tokenizer(3).state_dict())
    assert model_fingerprint_bytes(model) == first


# ---------------------------------------------------------------------------- .vat size and schedule


@pytest.mark.parametrize("mode", ["2d", "1d"])
def test_implicit_schedule_equals_the_model_rule(mode):
    """The .vat reader derives a schedule from its number of latents with the model's own rule."""
    listed = [1, 4, 16, 36, 64, 100, 144, 196, 256, 576, 1024]
    others = [side * side for side in range(1, 257)] if mode == "2d" else list(range(1, 3000)) + [65535, 65536]
    for m in listed + others:
        assert implicit_scale_sizes(m, mode) == tuple(default_scale_sizes(m, mode)), m
    with pytest.raises(ValueError):
        implicit_scale_sizes(50, "2d")
    with pytest.raises(ValueError):
        default_scale_sizes(50, "2d")


def test_model_schedules_are_stored_implicitly(model):
    assert schedule_kind(model.scale_sizes) == "2d"


def _shipped_tokenizer():
    from vat3d.pretrained import load_tokenizer, shipped_path

    if not (shipped_path("tokenizer") / "config.json").is_file():
        pytest.skip("the shipped tokenizer is not in the package")
    return load_tokenizer("default")


def test_shipped_model_file_is_at_most_512_bytes():
    """The issue's target: a raw .vat file of the default model <= 512 B, at most 32 B of it overhead, one
    more when the default effort turned the shape (its turn byte; only far-off centres reach 33)."""
    tokenizer = _shipped_tokenizer()
    meshes = [trimesh.creation.icosphere(subdivisions=3, radius=RADIUS).apply_translation(CENTER),
              trimesh.creation.box(extents=(40.0, 10.0, 20.0)).apply_translation((-100.0, 5.0, 0.0)),
              trimesh.creation.capsule(height=1.0, radius=0.3)]
    payload = sum(packed_size(n, bits_for_codebook(tokenizer.codebook_size)) for n in tokenizer.scale_sizes)
    for mesh in meshes:
        for effort in ("fast", "turned"):
            shape = encode_mesh(tokenizer, mesh, effort=effort)
            vat, transform = read_tokens(tokenizer, shape.data)
            assert vat.complete and all(np.array_equal(a, b) for a, b in zip(vat.tokens, shape.tokens))
            assert len(shape.data) <= 512
            turn_byte = int(transform.orientation != 0)
            assert len(shape.data) - payload == vat_overhead(vat.header) <= 32 + turn_byte
