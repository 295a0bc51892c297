"""Generation evaluation: MMD / COV / 1-NNA from distance matrices, normalisation, family match, the
whole evaluation and ``vat3d eval-generation`` on a tiny prepared set with tiny random models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from conftest import TINY_TOKENIZER
from vat3d.data.prepare import prepare_dataset
from vat3d.data.procedural import FAMILIES
from vat3d.evaluation.generation import (GenerationEvalSettings, evaluate_generation, family_match,
                                         generation_metrics, load_references, normalize_clouds,
                                         per_family_summary, real_surface, reconstruction_ceiling)
from vat3d.evaluation.generation_report import write_generation_report
from vat3d.evaluation.metrics import fragmentation, is_degenerate, mmd_cov_1nna, pairwise_chamfer
from vat3d.models.generator import NextScaleGenerator
from vat3d.models.tokenizer import VATokenizer

N_POINTS = 256


def _clouds(kind: str, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        if kind == "sphere":
            mesh = trimesh.creation.icosphere(subdivisions=2, radius=rng.uniform(0.8, 1.0))
        else:
            mesh = trimesh.creation.box(extents=rng.uniform(0.3, 1.5, size=3))
        out.append(trimesh.sample.sample_surface(mesh, N_POINTS, seed=int(rng.integers(1 << 30)))[0])
    return np.asarray(out, dtype=np.float32)


def _metrics(gen, ref):
    return generation_metrics(pairwise_chamfer(ref, gen).numpy(), pairwise_chamfer(ref, ref).numpy(),
                              pairwise_chamfer(gen, gen).numpy())


def test_metrics_match_mmd_cov_1nna():
    gen, ref = _clouds("sphere", 5, 0), _clouds("box", 4, 1)
    ours, reference = _metrics(gen, ref), mmd_cov_1nna(gen, ref)
    for key in reference:
        assert ours[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-7)


def test_one_nna_behaviour():
    spheres, boxes = _clouds("sphere", 6, 2), _clouds("box", 6, 3)
    same = _metrics(spheres, spheres)  # a set against itself: every cloud's nearest is its twin
    assert same["1-NNA-CD"] == 0.0 and same["COV-CD"] == 1.0 and same["MMD-CD"] == pytest.approx(0.0, abs=1e-9)
    apart = _metrics(spheres, boxes)  # two separable families: 1-NNA = 1
    assert apart["1-NNA-CD"] == 1.0 and apart["MMD-CD"] > 0
    mixed = _metrics(np.concatenate([spheres[:3], boxes[:3]]), np.concatenate([spheres[3:], boxes[3:]]))
    assert mixed["1-NNA-CD"] < apart["1-NNA-CD"] and mixed["MMD-CD"] < apart["MMD-CD"]
    assert mixed["COV-CD"] >= apart["COV-CD"]


def test_normalize_clouds_is_per_cloud_and_invariant():
    cloud = _clouds("box", 1, 4)
    moved = cloud * 3.0 + np.array([5.0, -2.0, 1.0], dtype=np.float32)
    for mode in ("box", "sphere"):
        a, b = normalize_clouds(cloud, mode), normalize_clouds(moved, mode)
        np.testing.assert_allclose(a, b, atol=1e-4)
    box = normalize_clouds(moved, "box")[0]
    assert np.abs(box).max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(normalize_clouds(moved, "none"), moved)
    assert np.all(normalize_clouds(np.zeros((1, 10, 3)), "box") == 0)  # empty sample: only centred
    with pytest.raises(ValueError):
        normalize_clouds(cloud, "cube")


def test_family_match():
    d_gr = np.array([[0.1, 0.5, 0.9], [0.7, 0.2, 0.8], [0.3, 0.4, 0.1]])
    out = family_match(d_gr, ["mug", "lamp", "mug"], ["mug", "mug", ""])
    assert out["predicted"] == ["mug", "lamp", "mug"] and out["scored"] == 2 and out["rate"] == 0.5
    assert math.isnan(family_match(d_gr, ["a", "b", "c"], ["", "", ""])["rate"])


def test_reconstruction_ceiling_leaves_each_pair_out():
    spheres, boxes = _clouds("sphere", 4, 5), _clouds("box", 4, 6)
    refs = np.concatenate([spheres, boxes])
    families = ["sphere"] * 4 + ["box"] * 4
    d_rr = pairwise_chamfer(refs, refs).numpy()
    # perfect reconstructions: paired, each is its shape's twin (1-NNA 0); with the pair left out every
    # reconstruction is as near the other shapes as their own reconstructions are, which is chance (0.5),
    # and its family is the 1-NN classifier's leave-one-out answer
    exact = reconstruction_ceiling(d_rr, d_rr, d_rr, families)
    assert exact["1-NNA-CD_reconstructed"] == 0.0 and exact["1-NNA-CD_reconstructed_unpaired"] == 0.5
    loo = d_rr.astype(np.float64).copy()
    np.fill_diagonal(loo, np.inf)
    assert exact["family_match_reconstructed"] == np.mean([families[j] == f for j, f in zip(loo.argmin(1), families)])
    # reconstructions that all come out as boxes: easy to tell apart, and the spheres' family is lost
    recon = np.concatenate([_clouds("box", 4, 7), boxes])
    d_rc, d_cc = pairwise_chamfer(refs, recon).numpy(), pairwise_chamfer(recon, recon).numpy()
    boxy = reconstruction_ceiling(d_rc, d_rr, d_cc, families)
    assert boxy["1-NNA-CD_reconstructed_unpaired"] > 0.5
    assert boxy["family_match_reconstructed"] <= 0.5  # no sphere is found again


def test_fragmentation_is_the_area_outside_the_largest_piece():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    assert fragmentation(box) == 0.0
    # the same box as a triangle soup (no shared vertex indices) is still one piece
    soup = trimesh.Trimesh(box.triangles.reshape(-1, 3), np.arange(36).reshape(-1, 3), process=False)
    assert fragmentation(soup) == pytest.approx(0.0, abs=1e-12)
    speck = trimesh.creation.icosphere(subdivisions=2, radius=0.2)
    speck.apply_translation([3.0, 0.0, 0.0])
    torn = trimesh.util.concatenate([box, speck])
    assert fragmentation(torn) == pytest.approx(speck.area / (box.area + speck.area), rel=1e-9)
    halves = trimesh.util.concatenate([box, box.copy().apply_translation([5.0, 0, 0])])
    assert fragmentation(halves) == pytest.approx(0.5)  # two equal pieces: half is outside the largest
    assert math.isnan(fragmentation(trimesh.Trimesh()))


def test_degenerate_is_a_speck_or_a_handful_of_faces():
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    assert not is_degenerate(ball)
    assert is_degenerate(trimesh.creation.icosphere(subdivisions=3, radius=0.05))  # a speck
    assert is_degenerate(trimesh.creation.icosphere(subdivisions=0, radius=0.8))  # 20 faces
    assert not is_degenerate(trimesh.Trimesh())  # empty is counted as empty, not degenerate


def test_real_surface_meshes_the_held_out_shape_in_one_piece():
    from vat3d.data.procedural import make_shape
    from vat3d.geometry.normalize import normalize_mesh

    mesh = normalize_mesh(make_shape(7).mesh)[0]  # a table: top and legs joined by a union
    remeshed = real_surface({"mesh": mesh}, 32)
    assert len(remeshed.faces) > 100 and fragmentation(remeshed) < 0.01
    lo, hi = remeshed.bounds
    assert np.allclose(lo, mesh.bounds[0], atol=0.1) and np.allclose(hi, mesh.bounds[1], atol=0.1)
    assert real_surface({"mesh": None, "procedural_seed": None}, 32) is None  # no mesh to rebuild


def test_per_family_summary_counts_and_means():
    rows = [{"family": "mug", "empty": False, "degenerate": False, "fragmentation": 0.2, "predicted_family": "mug"},
            {"family": "mug", "empty": True, "degenerate": False, "fragmentation": float("nan"),
             "predicted_family": "table"},
            {"family": "table", "empty": False, "degenerate": True, "fragmentation": 0.4, "predicted_family": "table"}]
    refs = [{"family": "mug", "fragmentation_real": 0.0, "fragmentation_reconstructed": 0.1},
            {"family": "table", "fragmentation_real": 0.1, "fragmentation_reconstructed": 0.3}]
    out = per_family_summary(rows, refs)
    assert list(out) == ["mug", "table", "all"]
    assert out["mug"]["generated"] == 2 and out["mug"]["empty_fraction"] == 0.5
    assert out["mug"]["fragmentation_generated"] == pytest.approx(0.2)  # the empty sample has none
    assert out["mug"]["family_match"] == 0.5 and out["table"]["degenerate_fraction"] == 1.0
    assert out["all"]["fragmentation_generated"] == pytest.approx(0.3)
    assert out["all"]["fragmentation_real"] == pytest.approx(0.05) and out["all"]["references"] == 2


# ---- the whole evaluation on a tiny prepared set ------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen_eval")
    prepare_dataset("procedural:16", root / "data", num_surface=512, num_volume=256, num_near=256)
    torch.manual_seed(0)
    tok = VATokenizer(**TINY_TOKENIZER)
    gen = NextScaleGenerator.from_tokenizer(tok, cond_type="class", class_names=FAMILIES, width=32, depth=1, heads=2)
    tok.save_pretrained(root / "tok")
    gen.save_pretrained(root / "gen")
    return root, tok, gen


def _settings(**kwargs) -> GenerationEvalSettings:
    base = dict(split="all", num_conditions=6, n_points=N_POINTS, resolution=20, batch_size=4)
    return GenerationEvalSettings(**{**base, **kwargs})


def test_references(setup):
    root, _, _ = setup
    refs = load_references(root / "data", _settings())
    assert len(refs) == 6 and all(r["points"].shape == (N_POINTS, 3) for r in refs)
    assert all(r["family"] in FAMILIES and r["caption"] and r["procedural_seed"] is not None for r in refs)
    meshes = load_references(root / "data", _settings(reference="mesh"))
    for stored, rebuilt in zip(refs, meshes):  # the rebuilt mesh lies where the stored samples do
        assert rebuilt["mesh"] is not None
        assert np.allclose(rebuilt["points"].min(0), stored["points"].min(0), atol=0.05)
        assert np.allclose(rebuilt["points"].max(0), stored["points"].max(0), atol=0.05)
    with pytest.raises(ValueError, match="split"):
        load_references(root / "data", _settings(split="val", val_fraction=1e-9))


def test_evaluate_generation_in_range(setup, tmp_path):
    root, tok, gen = setup
    result = evaluate_generation(gen, tok, root / "data", _settings(samples_per_condition=2))
    s = result["summary"]
    assert s["num_references"] == 6 and s["num_generated"] == 12 and len(result["shapes"]) == 12
    assert s["MMD-CD"] >= 0 and 0 < s["COV-CD"] <= 1 and 0 <= s["1-NNA-CD"] <= 1
    assert 0 <= s["family_match"] <= 1 and s["family_match_scored"] == 12
    assert 0 <= s["family_match_reference"] <= 1 and 0 <= s["empty_fraction"] <= 1
    assert s["seconds_per_shape"] > 0 and s["seconds_per_shape_tokens"] > 0
    assert all(row["predicted_family"] in FAMILIES for row in result["shapes"])
    # what a user sees: fragmentation of generated and held-out shapes, degenerate rate, per family
    assert 0 <= s["degenerate_fraction"] <= 1
    frag = [row["fragmentation"] for row in result["shapes"] if not row["empty"]]
    assert s["fragmentation_generated"] == pytest.approx(np.mean(frag)) if frag else math.isnan(s["fragmentation_generated"])
    # held-out procedural shapes are remeshed at the same 20^3 (thin parts can break off there too)
    assert 0 <= s["fragmentation_real"] < 1
    assert 0 <= s["fragmentation_reconstructed"] < 1
    # the tokenizer's ceiling: its reconstructions of the held-out shapes scored as if generated
    assert 0 <= s["1-NNA-CD_reconstructed"] <= 1 and 0 < s["COV-CD_reconstructed"] <= 1
    assert s["MMD-CD_reconstructed"] >= 0
    assert 0 <= s["1-NNA-CD_reconstructed_unpaired"] <= 1 and 0 <= s["family_match_reconstructed"] <= 1
    families = result["per_family"]
    assert "all" in families and sum(f["generated"] for k, f in families.items() if k != "all") == 12
    json_path, md_path = write_generation_report(result, tmp_path)
    assert json.loads(json_path.read_text())["summary"]["num_generated"] == 12
    assert "1-NNA-CD" in md_path.read_text() and "Per family" in md_path.read_text()


def test_sample_sheet_has_a_row_per_condition(setup, tmp_path):
    from PIL import Image

    root, tok, gen = setup
    settings = _settings(samples_per_condition=2, sheet_shapes=3, reference_fragmentation=False)
    result = evaluate_generation(gen, tok, root / "data", settings, sheet_path=tmp_path / "sheet.png")
    assert math.isnan(result["summary"]["fragmentation_real"])  # not asked for
    assert "1-NNA-CD_reconstructed" not in result["summary"]
    width, height = Image.open(result["sheet"]).size
    size, pad = 160, 4  # 3 rows of 160 px cells + a header; held-out + 2 samples per row
    assert height > 3 * (size + pad) and height < 4 * (size + pad)
    assert width > 3 * (size + pad)
    again = evaluate_generation(gen, tok, root / "data", settings, sheet_path=tmp_path / "again.png")
    assert np.array_equal(np.asarray(Image.open(again["sheet"])), np.asarray(Image.open(result["sheet"])))


def test_eval_generation_cli(setup, tmp_path):
    root, _, _ = setup
    result = CliRunner().invoke(__import__("vat3d.cli", fromlist=["app"]).app, [
        "eval-generation", str(root / "gen"), "--tokenizer", str(root / "tok"), "--data", str(root / "data"),
        "--split", "all", "--num-samples", "4", "--n-points", str(N_POINTS), "--resolution", "20",
        "-o", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ev" / "eval_generation.json").read_text())["summary"]
    assert summary["num_generated"] == 4 and (tmp_path / "ev" / "eval_generation.md").is_file()
    assert (tmp_path / "ev" / "eval_generation.png").is_file() and "fragmentation_generated" in summary
    bad = CliRunner().invoke(__import__("vat3d.cli", fromlist=["app"]).app, [
        "eval-generation", str(root / "gen"), "--tokenizer", str(root / "tok"), "--data", str(tmp_path / "nothing")])
    assert bad.exit_code == 2


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Procedural shapes (captions, families) and two user meshes (folder source: no caption, no family)."""
    from vat3d.data.sources import list_source

    root = tmp_path_factory.mktemp("gen_eval_mixed")
    meshes = root / "meshes"
    meshes.mkdir()
    trimesh.creation.box(extents=(1.0, 0.6, 0.4)).export(meshes / "box.obj")
    trimesh.creation.icosphere(subdivisions=2).export(meshes / "ball.obj")
    items = list_source("procedural:6") + list_source(str(meshes))
    prepare_dataset(items, root / "data", num_surface=512, num_volume=256, num_near=256)
    torch.manual_seed(0)
    tok = VATokenizer(**TINY_TOKENIZER)
    families = [f for f in FAMILIES[:3]]  # a class model that knows only some families
    gen = NextScaleGenerator.from_tokenizer(tok, cond_type="class", class_names=families, width=32, depth=1, heads=2)
    return root, tok, gen, families


def test_shapes_without_the_condition_are_skipped_and_counted(mixed):
    root, tok, gen, families = mixed
    refs = load_references(root / "data", _settings(num_conditions=None))
    usable = [r for r in refs if r["class"] in families or r["family"] in families]
    assert 0 < len(usable) < len(refs) == 8
    result = evaluate_generation(gen, tok, root / "data", _settings(num_conditions=None))
    s = result["summary"]
    assert s["num_references"] == len(usable) and s["num_generated"] == len(usable)
    assert s["num_skipped"] == len(refs) - len(usable) and sum(s["skipped_reasons"].values()) == s["num_skipped"]
    assert {row["reference"] for row in result["shapes"]} == {r["id"] for r in usable}
    # only the user meshes: none has a class the generator knows -> a clear error
    with pytest.raises(ValueError, match="none of the 2 held-out shapes"):
        evaluate_generation(gen, tok, root / "data", _settings(num_conditions=None, sources=("folder",)))


def test_source_filter(mixed):
    root, _, _, _ = mixed
    refs = load_references(root / "data", _settings(num_conditions=None, sources=("folder",)))
    assert len(refs) == 2 and {r["source"] for r in refs} == {"folder"}
    assert len(load_references(root / "data", _settings(num_conditions=None, sources=("procedural",)))) == 6
    with pytest.raises(ValueError, match="sources present: folder, procedural"):
        load_references(root / "data", _settings(sources=("pybullet",)))


def test_prompt_kinds():
    from vat3d.evaluation.generation import prompt_kinds

    assert prompt_kinds("text+image") == "text" and prompt_kinds("image") == "image"
    assert prompt_kinds("text+image", "image") == "image" and prompt_kinds("text+image", "text+image") == "text+image"
    assert prompt_kinds("class") == "class" and prompt_kinds("image", "image") == "image"
    with pytest.raises(ValueError, match="cannot be evaluated with 'image'"):
        prompt_kinds("text", "image")
    with pytest.raises(ValueError, match="condition must be one of"):
        prompt_kinds("text+image", "sketch")


@pytest.mark.parametrize("condition,expected", [("text", "text: "), ("image", "image: rendered view"),
                                                ("text+image", "text: ")])
def test_text_image_generator_is_evaluated_with_the_asked_prompts(setup, monkeypatch, condition, expected):
    """A text+image generator gets captions, rendered views of the held-out shapes, or both: the
    conditions that reach the pipeline are the asked ones."""
    import vat3d.pipelines as pipelines

    root, tok, _ = setup
    torch.manual_seed(0)
    gen = NextScaleGenerator.from_tokenizer(tok, cond_type="text+image", width=32, depth=1, heads=2,
                                            conditioner_kwargs={"text": {"num_tokens": 1},
                                                                "image": {"image_size": 32, "grid": 2,
                                                                          "channels": [8, 16]}})
    seen = []
    real = pipelines.generate_meshes

    def spy(*args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("text", "image")})
        return real(*args, **kwargs)

    monkeypatch.setattr(pipelines, "generate_meshes", spy)
    settings = _settings(num_conditions=3, batch_size=2, reference_fragmentation=False, condition=condition)
    result = evaluate_generation(gen, tok, root / "data", settings)
    assert result["summary"]["num_generated"] == 3 and result["settings"]["condition"] == condition
    assert all(row["condition"].startswith(expected) for row in result["shapes"])
    texts = [t for call in seen for t in (call["text"] or [])]
    images = [im for call in seen for im in (call["image"] or [])]
    assert len(texts) == (0 if condition == "image" else 3)
    assert len(images) == (0 if condition == "text" else 3)
    for image in images:  # a real render of the held-out shape, at the conditioner's size
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 5
    with pytest.raises(ValueError, match="cannot be evaluated"):
        evaluate_generation(NextScaleGenerator.from_tokenizer(tok, cond_type="class", class_names=FAMILIES,
                                                              width=32, depth=1, heads=2),
                            tok, root / "data", _settings(condition="image"))
