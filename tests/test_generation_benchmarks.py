"""benchmarks/sampling_sweep.py, generator_study.py, generation_floor.py and candidate_ranking.py end to end on
tiny models and data."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import numpy as np
import torch

from conftest import TINY_TOKENIZER
from vat3d.data import prepare_dataset
from vat3d.data.tokens import tokenize_dataset
from vat3d.models.generator import NextScaleGenerator
from vat3d.models.tokenizer import VATokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import candidate_ranking  # noqa: E402
import generation_floor  # noqa: E402
import generator_study  # noqa: E402
import sampling_sweep  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("genbench")
    prepare_dataset("procedural:10", root / "data", num_surface=256, num_volume=128, num_near=128)
    torch.manual_seed(0)
    tok_dir = VATokenizer(**TINY_TOKENIZER, num_points=256).save_pretrained(root / "tok")
    tokenizer = VATokenizer.from_pretrained(tok_dir)
    gen = NextScaleGenerator.from_tokenizer(tokenizer, cond_type="text", width=32, depth=1, heads=2,
                                            conditioner_kwargs={"num_tokens": 1})
    gen_dir = gen.save_pretrained(root / "gen")
    return root, tok_dir, gen_dir, tokenizer


def test_settings_to_try_and_the_choice_rule():
    tried = sampling_sweep.settings_to_try()
    assert tried[0] == sampling_sweep.BASE and len(tried) == len({json.dumps(t, sort_keys=True) for t in tried})
    assert {t["cfg_schedule"] for t in tried} == {"linear", "constant"} and len(tried) == 1 + 7 + 6
    row = lambda nna, match, empty, frag=0.1: {"1-NNA-CD": nna, "family_match": match,  # noqa: E731
                                               "family_match_reference": 0.8, "empty_fraction": empty,
                                               "fragmentation_generated": frag}
    rows = [row(0.55, 0.8, 0.1), row(0.60, 0.75, 0.0), row(0.58, 0.6, 0.0), row(0.60, 0.76, 0.0, 0.05)]
    assert sampling_sweep.choose(rows) is rows[3]  # no empties, match >= 0.72; 1-NNA tie -> fragmentation
    assert sampling_sweep.choose([rows[0], rows[2]]) is rows[0]  # none passes: lowest 1-NNA


def test_sampling_sweep_end_to_end(tiny, tmp_path):
    root, tok_dir, gen_dir, _ = tiny
    out = tmp_path / "sweep.json"
    result = sampling_sweep.main(["--generator", str(gen_dir), "--tokenizer", str(tok_dir), "--data",
                                  str(root / "data"), "--split", "all", "--num-samples", "4", "--resolution", "16",
                                  "--n-points", "128", "--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["cfg_scale"] for r in saved["rows"]] == [3.0, 1.0, 5.0]
    assert all(r["num_generated"] == 4 and 0 <= r["1-NNA-CD"] <= 1 for r in saved["rows"])
    # the held-out shapes are meshed once and shared: the same real fragmentation in every row
    assert len({r["fragmentation_real"] for r in saved["rows"]}) == 1
    assert saved["chosen"] in [{k: r[k] for k in sampling_sweep.BASE} for r in saved["rows"]]
    assert result["chosen"] == saved["chosen"] and out.with_suffix(".md").read_text().count("**chosen**") == 1


def test_generator_study_end_to_end(tiny, tmp_path):
    root, tok_dir, _, tokenizer = tiny
    tokenize_dataset(tokenizer, root / "data", root / "tokens", num_views=1, image_size=32,
                     model_ref=str(tok_dir))
    out, work = tmp_path / "study.json", tmp_path / "work"
    args = ["--tokens", str(root / "tokens"), "--data", str(root / "data"), "--config", "tiny", "--only",
            "small_seq", "--minutes", "0.000001", "--min-steps", "4", "--threads", "1", "--work", str(work),
            "--eval-args", "--split all --num-samples 3 --n-points 128 --resolution 16 --no-sheet", "--out", str(out)]
    result = generator_study.main(args)
    (row,) = result["rows"]
    assert row["name"] == "small_seq" and row["steps"] == 4 and row["s_per_step"] > 0
    assert row["num_generated"] == 3 and 0 <= row["1-NNA-CD"] <= 1 and row["val_loss"] > 0
    model_cfg = json.loads((work / "small_seq" / "model" / "config.json").read_text())
    assert model_cfg["conditioner_kwargs"]["text"]["features"] == "tokens"  # the override reached the model
    # a second report with the run folder gone keeps the scored row
    import shutil

    shutil.rmtree(work / "small_seq")
    again = generator_study.main(args[:-2] + ["--out", str(out), "--stage", "report"])
    assert again["rows"][0]["1-NNA-CD"] == row["1-NNA-CD"] and not math.isnan(row["1-NNA-CD"])


def test_generation_sheet_end_to_end(tmp_path):
    """benchmarks/generation_sheet.py: one caption row and one image row on a tiny text+image model."""
    import generation_sheet
    from PIL import Image

    torch.manual_seed(0)
    tokenizer = VATokenizer.from_pretrained(VATokenizer(**TINY_TOKENIZER, num_points=256).save_pretrained(tmp_path / "tok"))
    gen = NextScaleGenerator.from_tokenizer(tokenizer, cond_type="text+image", width=32, depth=1, heads=2,
                                            conditioner_kwargs={"text": {"num_tokens": 1},
                                                                "image": {"image_size": 32, "grid": 2,
                                                                          "channels": [8, 16]}})
    gen_dir = gen.save_pretrained(tmp_path / "gen")
    out = tmp_path / "sheet.png"
    record = generation_sheet.main(["--generator", str(gen_dir), "--tokenizer", str(tmp_path / "tok"),
                                    "--caption", "a mug with a handle", "--image-seed", "9000014", "-n", "2",
                                    "--resolution", "24", "--size", "48", "--out", str(out)])
    assert [p["prompt"] for p in record["prompts"]] == ['"a mug with a handle"', "image: snowman (seed 9000014)"]
    for row in record["prompts"]:
        assert 0 <= row["empty"] <= 2 and row["seconds_per_shape"] > 0
        assert row["fragmentation"] is None or 0.0 <= row["fragmentation"] < 1.0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["prompts"] == record["prompts"] and "--caption" in saved["command"]
    sheet = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    header, pad, size = 14 + 3 * 4, 4, 48
    assert sheet.shape[0] == header + 2 * (size + pad) + pad  # two rows: the caption and the image
    # the image row's first cell shows the rendered prompt (not the blank of the caption row's first cell)
    label_width = sheet.shape[1] - 3 * (size + pad) - pad
    def cell(row, col):
        y, x = header + pad + row * (size + pad), label_width + pad + col * (size + pad)
        return sheet[y:y + size, x:x + size]
    assert cell(1, 0).std() > 5.0 and cell(1, 0).std() > cell(0, 0).std()


def test_generation_floor_end_to_end(tiny, tmp_path):
    root, tok_dir, _, _ = tiny
    out = tmp_path / "floor.json"
    result = generation_floor.main(["--tokenizer", str(tok_dir), "--data", str(root / "data"), "--split", "all",
                                    "--num-samples", "5", "--resolution", "16", "--n-points", "128",
                                    "--out", str(out), "--sheet", str(tmp_path / "floor.png"),
                                    "--sheet-families", "mug,table,chair"])
    saved = json.loads(out.read_text())
    assert saved["num_references"] == 5 and saved["summary"] == result["summary"]
    summary = saved["summary"]
    for key in ("1-NNA-CD_reconstructed", "1-NNA-CD_reconstructed_unpaired", "family_match_reconstructed",
                "family_match_reference"):
        assert 0 <= summary[key] <= 1
    per_family = saved["family_match_reconstructed_per_family"]
    assert per_family and all(0 <= v <= 1 for v in per_family.values())
    drawn = {"mug", "table", "chair"} & set(per_family)
    assert ("sheet" in saved) == bool(drawn) and (not drawn or Path(saved["sheet"]).stat().st_size > 0)


def test_candidate_ranking_end_to_end_and_resumes(tiny, tmp_path):
    root, tok_dir, gen_dir, _ = tiny
    args = ["--generator", str(gen_dir), "--tokenizer", str(tok_dir), "--data", str(root / "data"), "--split",
            "all", "--num-samples", "4", "--candidates", "2", "--resolution", "16", "--n-points", "128",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "ranking.json")]
    result = candidate_ranking.main(args)
    assert result["num_captions"] == 4 and result["candidates"] == 2
    assert len(result["family_match_per_draw"]) == 2
    assert result["family_match_any_draw"] >= max(result["family_match_per_draw"])
    rules = result["rules"]
    assert "whole at the highest level (shipped)" in rules and "first draw" in rules
    assert all(0 <= r["1-NNA-CD"] <= 1 and 0 <= r["family_match"] <= 1 for r in rules.values())
    draws = np.load(tmp_path / "work" / "draws.npz")
    assert int(draws["done"]) == 4 and draws["ll_cond"].shape == (4, 2) and (draws["ll_cond"] < 0).all()
    # a rerun reuses the saved draws and distances and scores the same
    assert candidate_ranking.main(args)["rules"] == rules
