"""vat3d.pipelines: generate_meshes for every conditioner kind, image inputs, clear errors, empty
meshes, reconstruct. Tiny random models only (a few seconds in all)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from conftest import TINY_TOKENIZER
from vat3d.models.conditioners import TextConditioner
from vat3d.models.generator import NextScaleGenerator
from vat3d.models.tokenizer import VATokenizer
from vat3d.pipelines import (GeneratedMeshes, build_conditions, generate_meshes, load_image, reconstruct,
                             tokens_to_mesh)

TINY_GEN = dict(width=32, depth=1, heads=2)
IMAGE_KW = dict(grid=2, image_size=32, channels=[8, 8])
RES = 24
PLAIN = dict(candidates=1, mend=())  # plain sampling and meshing (the defaults draw 4 and mend torn shapes)


def _tokenizer(seed: int = 0) -> VATokenizer:
    """A random tiny tokenizer whose surface is never empty: its field is dominated by the learned plane
    tokens (position), nearly the same for any tokens, so shifting the last bias by the field's median
    puts about half of the box inside for every token sequence."""
    torch.manual_seed(seed)
    tok = VATokenizer(**TINY_TOKENIZER).eval()
    grid = torch.linspace(-1, 1, 16)
    points = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    tokens = [torch.randint(tok.codebook_size, (1, n), generator=torch.Generator().manual_seed(seed))
              for n in tok.scale_sizes]
    last = [m for m in tok.decoder.mlp.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias -= tok.occupancy_fn(tokens)(points).median()
    return tok


@pytest.fixture(scope="module")
def tok() -> VATokenizer:
    return _tokenizer()


@pytest.fixture(scope="module")
def class_gen(tok) -> NextScaleGenerator:
    torch.manual_seed(1)
    return NextScaleGenerator.from_tokenizer(tok, cond_type="class", class_names=["chair", "mug", "lamp"], **TINY_GEN)


@pytest.fixture
def fake_text(monkeypatch):
    """Deterministic caption embeddings instead of the MiniLM encoder (keeps these tests fast)."""

    def embed(self, captions):
        captions = [captions] if isinstance(captions, str) else list(captions)
        rows = [torch.randn(self.embed_dim, generator=torch.Generator().manual_seed(sum(map(ord, c))))
                for c in captions]
        return torch.stack(rows)

    monkeypatch.setattr(TextConditioner, "embed", embed)


def test_class_generation_outputs_meshes_and_tokens(tok, class_gen):
    meshes = generate_meshes(class_gen, tok, class_label="mug", n=2, seed=3, resolution=RES, **PLAIN)
    assert isinstance(meshes, GeneratedMeshes) and len(meshes) == 2
    assert all(isinstance(m, trimesh.Trimesh) for m in meshes)
    assert [tuple(t.shape) for t in meshes.tokens] == [(2, n) for n in tok.scale_sizes]
    assert all(t.dtype == torch.int64 and int(t.max()) < tok.codebook_size for t in meshes.tokens)
    assert meshes.meshes == list(meshes) and meshes.seconds_tokens > 0
    assert meshes.settings["seed"] == 3 and meshes.settings["resolution"] == RES
    # same seed -> same tokens; a class id works like its name
    again = generate_meshes(class_gen, tok, class_label=1, n=2, seed=3, resolution=RES, **PLAIN)
    assert all(torch.equal(a, b) for a, b in zip(meshes.tokens, again.tokens))
    # the meshes are the tokens' meshes, inside the box
    for i, mesh in enumerate(meshes):
        ref = tokens_to_mesh(tok, meshes.sample_tokens(i), resolution=RES)
        assert len(mesh.faces) > 0 and len(ref.faces) == len(mesh.faces)
        assert np.abs(mesh.vertices).max() <= 1.0 + 1e-6
    assert meshes.empty == []


def test_iso_meshes_another_level_of_the_same_tokens(tok, class_gen):
    base = generate_meshes(class_gen, tok, class_label="mug", n=1, seed=3, resolution=RES, **PLAIN)
    shifted = generate_meshes(class_gen, tok, class_label="mug", n=1, seed=3, resolution=RES, iso=-1.5, **PLAIN)
    assert shifted.settings["iso"] == -1.5 and base.settings["iso"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(base.tokens, shifted.tokens))  # iso changes the meshing only
    ref = tokens_to_mesh(tok, shifted.sample_tokens(0), resolution=RES, iso=-1.5)
    assert np.allclose(ref.vertices, shifted[0].vertices)
    assert not (len(ref.vertices) == len(base[0].vertices) and np.allclose(ref.vertices, base[0].vertices))
    # min_piece drops the loose pieces of the same meshes (here all but the largest)
    from vat3d.evaluation.metrics import fragmentation
    from vat3d.geometry.pieces import surface_pieces

    whole = generate_meshes(class_gen, tok, class_label="mug", n=1, seed=3, resolution=RES, min_piece=0.9, **PLAIN)
    assert fragmentation(base[0]) > 0  # the random tiny model draws loose pieces
    assert whole.settings["min_piece"] == 0.9 and fragmentation(whole[0]) == 0.0
    assert whole[0].area == pytest.approx(surface_pieces(base[0]).area_P.max())


def test_candidates_keep_a_whole_draw_else_the_least_torn(tok, class_gen):
    from vat3d.pipelines import candidate_score

    plain = generate_meshes(class_gen, tok, class_label="mug", n=3, seed=5, resolution=RES, **PLAIN)
    best = generate_meshes(class_gen, tok, class_label="mug", n=3, seed=5, resolution=RES, candidates=3, mend=())
    scores_NK, chosen = best.settings["candidate_scores"], best.settings["chosen"]
    assert best.settings["candidates"] == 3 and len(scores_NK) == 3 and all(len(s) == 3 for s in scores_NK)
    # candidate 0 is plain sampling with the same seed
    assert [s[0] for s in scores_NK] == pytest.approx([candidate_score(m) for m in plain])
    assert len({round(s, 9) for row in scores_NK for s in row}) > 1  # the draws differ
    assert best.settings["candidate_levels"] == [[0.0] * 3] * 3  # nothing mended here
    for i, mesh in enumerate(best):
        k = chosen[i]
        whole = [j for j, score in enumerate(scores_NK[i]) if score <= 0.01]
        # at one level: the first whole draw, else the least torn (the earlier on a tie)
        assert k == (whole[0] if whole else scores_NK[i].index(min(scores_NK[i])))
        assert candidate_score(mesh) == pytest.approx(scores_NK[i][k])
        # the kept tokens are the kept mesh's tokens
        ref = tokens_to_mesh(tok, best.sample_tokens(i), resolution=RES)
        assert len(ref.faces) == len(mesh.faces)
        if k == 0:
            assert all(torch.equal(a[i], b[i]) for a, b in zip(best.tokens, plain.tokens))
    with pytest.raises(ValueError, match="candidates must be >= 1"):
        generate_meshes(class_gen, tok, class_label="mug", n=1, candidates=0)


def test_candidate_rank_prefers_whole_draws_at_the_highest_level():
    from vat3d.pipelines import candidate_rank

    draws = [(0.3, 0.0), (0.005, -1.0), (0.0, -0.5), (0.008, -0.5), (0.02, -2.0), (1.0, 0.0)]  # (score, level)
    ranked = sorted(range(len(draws)), key=lambda k: (*candidate_rank(*draws[k], iso=0.0, mend_share=0.01), k))
    # whole ones by level (the earlier on a tie), then the torn by torn share, then the shrunk
    assert ranked == [2, 3, 1, 4, 0, 5]
    # a lower iso moves the levels with it
    assert candidate_rank(0.0, -1.0, iso=-1.0) < candidate_rank(0.0, -1.5, iso=-1.0)


def test_candidate_score_ranks_whole_torn_shrunk_speck_empty():
    from vat3d.pipelines import candidate_score

    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.8)  # 320 faces, 1.6 wide
    torn = trimesh.util.concatenate([ball, trimesh.creation.icosphere(subdivisions=2, radius=0.2)
                                     .apply_translation((1.2, 0, 0))])
    small = trimesh.creation.icosphere(subdivisions=2, radius=0.3)  # 0.6 wide: shrunk
    speck = trimesh.creation.icosphere(subdivisions=2, radius=0.05)  # under 0.2 wide
    empty = trimesh.Trimesh()
    scores = [candidate_score(m) for m in (ball, torn, small, speck, empty)]
    assert scores[0] == 0.0 and 0.0 < scores[1] < 1.0 and scores[2] == 1.0 and scores[3:] == [2.0, 3.0]


def test_num_scales_and_null_condition(tok, class_gen):
    coarse = generate_meshes(class_gen, tok, class_label="chair", n=1, num_scales=2, resolution=RES)
    assert [t.shape[1] for t in coarse.tokens] == tok.scale_sizes[:2]
    null = generate_meshes(class_gen, tok, n=3, resolution=RES)  # no condition: the learned null condition
    assert len(null) == 3


def test_clear_errors(tok, class_gen):
    with pytest.raises(ValueError, match="'class'-conditioned.*not text"):
        generate_meshes(class_gen, tok, text="a mug with a handle")
    with pytest.raises(ValueError, match="not image"):
        generate_meshes(class_gen, tok, image=np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="unknown class 'sofa'.*chair, mug, lamp"):
        generate_meshes(class_gen, tok, class_label="sofa")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        generate_meshes(class_gen, tok, class_label=7)
    with pytest.raises(ValueError, match="2 class labels for n=3"):
        generate_meshes(class_gen, tok, class_label=["chair", "mug"], n=3)
    other = _tokenizer(seed=5)
    with pytest.raises(ValueError, match="tokenizer"):
        generate_meshes(class_gen, other, class_label="chair")


def test_unconditional_generator(tok):
    gen = NextScaleGenerator.from_tokenizer(tok, cond_type="none", **TINY_GEN)
    meshes = generate_meshes(gen, tok, n=2, seed=0, resolution=RES)
    assert len(meshes) == 2 and meshes.tokens[0].shape[0] == 2 and meshes.empty == []
    with pytest.raises(ValueError, match="no condition"):
        generate_meshes(gen, tok, class_label="chair")


def test_load_image_inputs(tmp_path):
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[5:15, 5:25, 3] = 255  # opaque red box, transparent elsewhere -> white
    Image.fromarray(rgba).save(tmp_path / "view.png")
    from_path = load_image(tmp_path / "view.png")
    assert from_path.shape == (3, 30, 30)  # padded to a square
    assert torch.allclose(from_path[:, 0, 0], torch.ones(3))  # padding / transparency are white
    assert torch.allclose(from_path[:, 15, 15], torch.tensor([1.0, 0.0, 0.0]))
    assert load_image(Image.fromarray(rgba), size=16).shape == (3, 16, 16)
    chw = torch.rand(3, 12, 12)
    assert torch.allclose(load_image(chw), chw, atol=1 / 255)
    assert torch.allclose(load_image(chw.permute(1, 2, 0).numpy()), chw, atol=1 / 255)
    assert load_image(np.full((9, 9), 128, dtype=np.uint8)).shape == (3, 9, 9)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_image_generator(tok, tmp_path):
    gen = NextScaleGenerator.from_tokenizer(tok, cond_type="image", conditioner_kwargs=IMAGE_KW, **TINY_GEN)
    Image.fromarray(np.full((40, 50, 3), 200, dtype=np.uint8)).save(tmp_path / "view.png")
    cond = build_conditions(gen, image=tmp_path / "view.png", n=3)
    assert cond.shape == (3, 3, 32, 32) and 0.0 <= float(cond.min()) and float(cond.max()) <= 1.0
    meshes = generate_meshes(gen, tok, image=str(tmp_path / "view.png"), n=2, resolution=RES)
    assert len(meshes) == 2 and meshes.empty == []
    with pytest.raises(ValueError, match="not text"):
        generate_meshes(gen, tok, text="a chair")


def test_text_and_multimodal_generators(tok, fake_text):
    text_gen = NextScaleGenerator.from_tokenizer(tok, cond_type="text", **TINY_GEN)
    assert build_conditions(text_gen, text="a mug", n=2) == ["a mug", "a mug"]
    assert len(generate_meshes(text_gen, tok, text=["a mug", "a lamp"], n=2, resolution=RES)) == 2
    with pytest.raises(ValueError, match="'text'-conditioned.*not a class label"):
        generate_meshes(text_gen, tok, class_label="mug")

    multi = NextScaleGenerator.from_tokenizer(tok, cond_type="text+image", conditioner_kwargs={"image": IMAGE_KW},
                                              **TINY_GEN)
    image = np.full((32, 32, 3), 0.5)
    both = build_conditions(multi, text="a mug", image=image, n=2)
    assert set(both) == {"text", "image"} and both["text"] == ["a mug"] * 2 and both["image"].shape == (2, 3, 32, 32)
    only_text = build_conditions(multi, text="a mug", n=1)
    assert only_text["image"] is None and only_text["text"] == ["a mug"]
    assert build_conditions(multi, image=image)["text"] is None
    assert build_conditions(multi) is None
    for kwargs in ({"text": "a mug"}, {"image": image}, {"text": "a mug", "image": image}):
        meshes = generate_meshes(multi, tok, n=2, resolution=RES, **kwargs)
        assert len(meshes) == 2 and meshes.empty == [] and all(len(m.faces) > 0 for m in meshes)


def test_empty_occupancy_gives_empty_meshes(tmp_path):
    tok = _tokenizer()
    last = [m for m in tok.decoder.mlp.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # every query is outside: no surface
        last.weight.zero_()
        last.bias.fill_(-5.0)
    gen = NextScaleGenerator.from_tokenizer(tok, cond_type="none", **TINY_GEN)
    meshes = generate_meshes(gen, tok, n=2, resolution=RES)
    assert meshes.empty == [0, 1]
    assert all(len(m.faces) == 0 and len(m.vertices) == 0 for m in meshes)
    assert reconstruct(tok, trimesh.creation.box(), resolution=RES).is_empty


def test_reconstruct(tok):
    box = trimesh.creation.box(extents=(4.0, 2.0, 2.0))
    box.apply_translation((10.0, 0.0, 0.0))
    mesh = reconstruct(tok, box, resolution=RES)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) > 0
    assert mesh.bounds[0, 0] > 7.0 and mesh.bounds[1, 0] < 13.0  # back in the input's units
    boxed = reconstruct(tok, box, resolution=RES, normalized=True, return_tokens=True, num_scales=2)
    assert [len(t) for t in boxed.tokens] == tok.scale_sizes[:2] and boxed.num_bytes > 0
    assert len(boxed.mesh.faces) > 0 and np.abs(boxed.mesh.vertices).max() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="num_scales"):
        reconstruct(tok, box, num_scales=99)


def test_reconstruct_in_the_box_undoes_the_encoders_turn(tok, monkeypatch):
    """normalized=True gives the box frame of the input, not the frame of the turn the encoder chose."""
    from vat3d.codec import refine
    from vat3d.codec.api import decode_tokens
    from vat3d.geometry.normalize import ORIENTATIONS

    k = 4  # a quarter turn about x
    monkeypatch.setattr(refine, "best_orientation", lambda *args, **kwargs: k)
    box = trimesh.creation.box(extents=(4.0, 2.0, 1.0))
    out = reconstruct(tok, box, resolution=RES, normalized=True, return_tokens=True)
    turned = decode_tokens(tok, out.tokens, resolution=RES)  # the tokens' own frame: the turned box
    assert len(out.mesh.faces) > 0 and len(out.mesh.faces) == len(turned.faces)
    np.testing.assert_allclose(out.mesh.vertices, np.asarray(turned.vertices) @ ORIENTATIONS[k], atol=1e-5)


def test_mend_lowers_the_level_of_torn_shapes_only(tok, class_gen):
    from vat3d.geometry.pieces import torn_share
    from vat3d.pipelines import mend_torn

    plain = generate_meshes(class_gen, tok, class_label="mug", n=3, seed=3, resolution=RES, **PLAIN)
    assert plain.settings["levels"] == [0.0, 0.0, 0.0] and plain.settings["mend"] == []
    # the tiny field is faint: lowerings of 0.05-0.2 already change its surface (0.2 fills the box)
    mended = generate_meshes(class_gen, tok, class_label="mug", n=3, seed=3, resolution=RES, candidates=1,
                             mend=(0.05, 0.1, 0.2))
    assert all(torch.equal(a, b) for a, b in zip(plain.tokens, mended.tokens))  # meshing only
    lowered = 0
    for i, (before, after, level) in enumerate(zip(plain, mended, mended.settings["levels"])):
        assert level in (0.0, -0.05, -0.1, -0.2)
        ref = tokens_to_mesh(tok, mended.sample_tokens(i), resolution=RES, iso=level)
        assert len(ref.faces) == len(after.faces)
        if level < 0:  # only a torn mesh is mended, and only into a less torn one
            lowered += 1
            assert torn_share(before) > 0.01 and torn_share(after) < torn_share(before)
        else:
            assert len(after.faces) == len(before.faces)
    # (the tiny random field turns into specks below 0, which are never kept: nothing is lowered here)
    assert lowered == sum(level < 0 for level in mended.settings["levels"])


class _Dumbbell(torch.nn.Module):
    """A stand-in tokenizer whose field is two balls and a faint bar between them: the bar's logit peaks
    at -0.2, so the surface at 0 is two pieces and a level under -0.2 joins them."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def occupancy_fn(self, indices):
        def field(points):
            balls = [10 * (0.3 - (points - torch.tensor([x, 0.0, 0.0])).norm(dim=-1)) for x in (-0.55, 0.55)]
            to_axis = points[:, 1:].norm(dim=-1)
            bar = torch.where(points[:, 0].abs() < 0.55, 3 * (0.15 - to_axis) - 0.65, torch.full_like(to_axis, -5.0))
            return torch.maximum(torch.maximum(*balls), bar)
        return field


def test_mend_joins_a_torn_field_at_the_first_whole_level():
    from vat3d.geometry.pieces import torn_share
    from vat3d.pipelines import mend_torn

    field, tokens = _Dumbbell(), [torch.zeros(1, 1, dtype=torch.long)]
    torn = tokens_to_mesh(field, tokens, resolution=48)
    assert torn_share(torn) == pytest.approx(0.5, abs=0.02)  # two equal balls
    mesh, level = mend_torn(field, tokens, resolution=48, mend=(0.1, 0.5, 1.0))
    assert level == -0.5 and torn_share(mesh) == 0.0  # -0.1 is still torn, -0.5 joins, -1 is not needed
    assert mend_torn(field, tokens, resolution=48, mend=())[1] == 0.0
    assert mend_torn(field, tokens, resolution=48, mend=(0.5,), mend_share=0.6)[1] == 0.0  # torn counts over 0.6
    assert mend_torn(field, tokens, resolution=48, mend=(0.1,))[1] == 0.0  # no lower level is better: keep 0


def test_defaults_come_from_sampling_defaults(tok, class_gen):
    """One place holds the shipped sampling and meshing defaults; the pipeline, the commands and the
    evaluation read it."""
    import inspect

    from vat3d.commands.eval_generation import eval_generation
    from vat3d.commands.generate import generate, parse_mend
    from vat3d.evaluation.generation import GenerationEvalSettings
    from vat3d.models import sampling_defaults as d

    meshes = generate_meshes(class_gen, tok, class_label="mug", n=1, resolution=RES)
    expected = {"cfg_scale": d.CFG_SCALE, "cfg_schedule": d.CFG_SCHEDULE, "top_p": d.TOP_P,
                "candidates": d.CANDIDATES, "mend": list(d.MEND_STEPS), "mend_share": d.MEND_SHARE}
    assert {k: meshes.settings[k] for k in expected} == expected
    assert len(meshes.settings.get("chosen", [0])) == 1
    settings = GenerationEvalSettings()
    assert (settings.top_p, settings.candidates, tuple(settings.mend)) == (d.TOP_P, d.CANDIDATES, d.MEND_STEPS)
    for command in (generate, eval_generation):
        options = inspect.signature(command).parameters
        assert options["top_p"].default.default == d.TOP_P
        assert options["candidates"].default.default == d.CANDIDATES
        assert parse_mend(options["mend"].default.default) == d.MEND_STEPS
