"""`vat3d demo` end to end on tiny random models (the shipped-model run is `make demo`)."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from conftest import TINY_TOKENIZER
from vat3d.cli import app
from vat3d.models.generator import NextScaleGenerator
from vat3d.models.tokenizer import VATokenizer


def test_demo_writes_every_output(tmp_path):
    torch.manual_seed(0)
    tok = VATokenizer(**TINY_TOKENIZER)
    gen = NextScaleGenerator.from_tokenizer(tok, cond_type="text+image", width=32, depth=1, heads=2,
                                            conditioner_kwargs={"image": dict(grid=2, image_size=32, channels=[8, 8])})
    tok.save_pretrained(tmp_path / "tok")
    gen.save_pretrained(tmp_path / "gen")
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "-t", str(tmp_path / "tok"), "-g", str(tmp_path / "gen"),
                                      "--shapes", "2", "--resolution", "32", "--samples", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    vats = sorted((out / "tokens").glob("*.vat"))
    assert len(vats) == 2 and all(v.stat().st_size > 0 for v in vats)
    assert len(list((out / "decoded").glob("*.obj"))) == 2
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert len(report["shapes"]) == 2 and "simplify_draco" in report["summary"]
    assert (out / "eval" / "eval.png").stat().st_size > 0
    # two captions and one image, each with its sheet
    assert {p.name for p in (out / "generated").iterdir() if p.is_dir()} == {"text-1", "text-2", "image-1"}
    assert all((out / "generated" / d / "sample_sheet.png").is_file() for d in ("text-1", "text-2", "image-1"))
    assert "outputs" in result.output and str(out / "tokens") in result.output.replace("\n", "")
