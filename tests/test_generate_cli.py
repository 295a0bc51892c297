"""``vat3d generate``: files written, clear errors, empty samples (tiny random models)."""

from __future__ import annotations

import json

import pytest
import torch
import trimesh
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_TOKENIZER
from vat3d.cli import app
from vat3d.models.generator import NextScaleGenerator
from vat3d.models.tokenizer import VATokenizer

TINY_GEN = dict(width=32, depth=1, heads=2)
runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tok = VATokenizer(**TINY_TOKENIZER)
    tok.save_pretrained(root / "tok")
    NextScaleGenerator.from_tokenizer(tok, cond_type="class", class_names=["chair", "mug"], **TINY_GEN
                                      ).save_pretrained(root / "gen")
    NextScaleGenerator.from_tokenizer(tok, cond_type="image", conditioner_kwargs=dict(grid=2, image_size=32,
                                      channels=[8, 8]), **TINY_GEN).save_pretrained(root / "gen_image")
    return root


def _run(*args):
    result = runner.invoke(app, ["generate", *map(str, args)])
    return result, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.mark.parametrize("fmt", ["obj", "glb"])
def test_generate_writes_meshes_tokens_and_sheet(models, tmp_path, fmt):
    out = tmp_path / "out"
    result, text = _run(models / "gen", "--tokenizer", models / "tok", "--class", "mug", "-n", 2, "-o", out,
                        "--resolution", 24, "--format", fmt, "--seed", 1, "--cfg", 2.0, "--top-k", 10,
                        "--top-p", 0.9, "--temperature", 0.8)
    assert result.exit_code == 0, text
    for i in range(2):
        mesh_path = out / f"sample_{i:03d}.{fmt}"
        assert mesh_path.is_file() and (out / f"sample_{i:03d}.vat").is_file()
        assert str(mesh_path) in text
        loaded = trimesh.load(mesh_path, force="mesh")
        assert isinstance(loaded, trimesh.Trimesh)
    sheet = Image.open(out / "sample_sheet.png")
    assert sheet.size[0] > 192 and sheet.size[1] > 2 * 192
    record = json.loads((out / "sample.json").read_text())
    assert record["settings"]["seed"] == 1 and record["settings"]["top_k"] == 10 and record["label"] == "mug"
    assert record["settings"]["min_piece"] == 0.0


def test_generate_min_piece_keeps_one_piece(models, tmp_path):
    from vat3d.evaluation.metrics import fragmentation

    result, text = _run(models / "gen", "--tokenizer", models / "tok", "--class", "mug", "-n", 1, "-o", tmp_path,
                        "--resolution", 24, "--views", 0, "--min-piece", 0.9)
    assert result.exit_code == 0, text
    assert json.loads((tmp_path / "sample.json").read_text())["settings"]["min_piece"] == 0.9
    mesh = trimesh.load(tmp_path / "sample_000.obj", force="mesh")
    assert len(mesh.faces) > 0 and fragmentation(mesh) == 0.0
    result, text = _run(models / "gen", "--tokenizer", models / "tok", "--class", "mug", "-n", 1, "-o",
                        tmp_path / "raw", "--resolution", 24, "--views", 0)  # the same sample, every piece kept
    assert result.exit_code == 0, text
    assert fragmentation(trimesh.load(tmp_path / "raw" / "sample_000.obj", force="mesh")) > 0.1


def test_generate_image_and_unconditional(models, tmp_path):
    Image.new("RGB", (40, 30), (90, 120, 200)).save(tmp_path / "view.png")
    result, text = _run(models / "gen_image", "-t", models / "tok", "--image", tmp_path / "view.png", "-n", 1,
                        "-o", tmp_path / "a", "--resolution", 20, "--views", 0, "--format", "ply")
    assert result.exit_code == 0, text
    assert (tmp_path / "a" / "sample_000.ply").is_file() and not (tmp_path / "a" / "sample_sheet.png").exists()
    result, text = _run(models / "gen", "-t", models / "tok", "--unconditional", "-n", 1, "-o", tmp_path / "b",
                        "--resolution", 20, "--no-save-tokens")
    assert result.exit_code == 0, text
    assert (tmp_path / "b" / "sample_000.obj").is_file() and not (tmp_path / "b" / "sample_000.vat").exists()


def test_generate_errors(models, tmp_path):
    result, text = _run(models / "gen", "-t", models / "tok", "--text", "a mug with a handle", "-o", tmp_path)
    assert result.exit_code == 2 and "'class'-conditioned" in text and "not text" in text
    result, text = _run(models / "gen", "-t", models / "tok", "-o", tmp_path)  # no condition given
    assert result.exit_code != 0 and "--class" in text
    result, text = _run(models / "gen", "-t", models / "tok", "--class", "sofa", "-o", tmp_path)
    assert result.exit_code == 2 and "unknown class 'sofa'" in text
    result, text = _run(models / "gen", "-t", models / "tok", "--class", "mug", "--format", "stl", "-o", tmp_path)
    assert result.exit_code != 0
    result, text = _run(tmp_path / "nowhere", "-t", models / "tok", "--class", "mug", "-o", tmp_path)
    assert result.exit_code != 0


def test_generate_default_models_missing_is_a_clear_error(tmp_path, monkeypatch):
    import vat3d.pretrained as pretrained

    monkeypatch.setattr(pretrained, "shipped_path", lambda kind: tmp_path / "none" / kind)
    result, text = _run("--unconditional", "-o", tmp_path / "out")  # MODEL and --tokenizer default to "default"
    assert result.exit_code == 2 and "no shipped generator" in text


def test_generate_reports_empty_samples(tmp_path):
    torch.manual_seed(0)
    tok = VATokenizer(**TINY_TOKENIZER)
    last = [m for m in tok.decoder.mlp.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-5.0)
    tok.save_pretrained(tmp_path / "tok")
    NextScaleGenerator.from_tokenizer(tok, cond_type="none", **TINY_GEN).save_pretrained(tmp_path / "gen")
    result, text = _run(tmp_path / "gen", "-t", tmp_path / "tok", "-n", 2, "-o", tmp_path / "out", "--resolution", 20)
    assert result.exit_code == 0, text
    assert "sample 0 is empty" in text and (tmp_path / "out" / "sample_001.obj").is_file()
    assert json.loads((tmp_path / "out" / "sample.json").read_text())["empty"] == [0, 1]
    assert (tmp_path / "out" / "sample_sheet.png").is_file()


def test_generate_candidates_and_mend_options(models, tmp_path):
    result, text = _run(models / "gen", "--tokenizer", models / "tok", "--class", "mug", "-n", 2, "-o", tmp_path,
                        "--resolution", 24, "--views", 0, "--candidates", 2, "--mend", "0.05,0.1")
    assert result.exit_code == 0, text
    settings = json.loads((tmp_path / "sample.json").read_text())["settings"]
    assert settings["candidates"] == 2 and settings["mend"] == [0.05, 0.1]
    assert len(settings["chosen"]) == 2 and all(len(s) == 2 for s in settings["candidate_scores"])
    assert all(level in (0.0, -0.05, -0.1) for level in settings["levels"])
    result, text = _run(models / "gen", "--tokenizer", models / "tok", "--class", "mug", "-n", 1, "-o", tmp_path,
                        "--resolution", 24, "--views", 0, "--mend", "off", "--candidates", 1)
    assert result.exit_code == 0, text
    settings = json.loads((tmp_path / "sample.json").read_text())["settings"]
    assert settings["mend"] == [] and settings["levels"] == [0.0] and "chosen" not in settings
    for bad in ("0.5,x", "-1"):
        result, text = _run(models / "gen", "--tokenizer", models / "tok", "--class", "mug", "-o", tmp_path,
                            "--mend", bad)
        assert result.exit_code == 2 and "--mend" in text
