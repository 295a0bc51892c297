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
    meshes = generate_meshes(class_gen, tok, class_label="mug", n=2, seed=3, resolution=RES)
    assert isinstance(meshes, GeneratedMeshes) and len(meshes) == 2
    assert all(isinstance(m, trimesh.Trimesh) for m in meshes)
    assert [tuple(t.shape) for t in meshes.tokens] == [(2, n) for n in tok.scale_sizes]
    assert all(t.dtype == torch.int64 and int(t.max()) < tok.codebook_size for t in meshes.tokens)
    assert meshes.meshes == list(meshes) and meshes.seconds_tokens > 0
    assert meshes.settings["seed"] == 3 and meshes.settings["resolution"] == RES
    # same seed -> same tokens; a class id works like its name
    again = generate_meshes(class_gen, tok, class_label=1, n=2, seed=3, resolution=RES)
    assert all(torch.equal(a, b) for a, b in zip(meshes.tokens, again.tokens))
    # the meshes are the tokens' meshes, inside the box
    for i, mesh in enumerate(meshes):
        ref = tokens_to_mesh(tok, meshes.sample_tokens(i), resolution=RES)
        assert len(mesh.faces) > 0 and len(ref.faces) == len(mesh.faces)
        assert np.abs(mesh.vertices).max() <= 1.0 + 1e-6
    assert meshes.empty == []


def test_iso_meshes_another_level_of_the_same_tokens(tok, class_gen):
    base = generate_meshes(class_gen, tok, class_label="mug", n=1, seed=3, resolution=RES)
    shifted = generate_meshes(class_gen, tok, class_label="mug", n=1, seed=3, resolution=RES, iso=-1.5)
    assert shifted.settings["iso"] == -1.5 and base.settings["iso"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(base.tokens, shifted.tokens))  # iso changes the meshing only
    ref = tokens_to_mesh(tok, shifted.sample_tokens(0), resolution=RES, iso=-1.5)
    assert np.allclose(ref.vertices, shifted[0].vertices)
    assert not (len(ref.vertices) == len(base[0].vertices) and np.allclose(ref.vertices, base[0].vertices))
    # min_piece drops the loose pieces of the same meshes (here all but the largest)
    from vat3d.evaluation.metrics import fragmentation
    from vat3d.geometry.pieces import surface_pieces

    whole = generate_meshes(class_gen, tok, class_label="mug", n=1, seed=3, resolution=RES, min_piece=0.9)
    assert fragmentation(base[0]) > 0  # the random tiny model draws loose pieces
    assert whole.settings["min_piece"] == 0.9 and fragmentation(whole[0]) == 0.0
    assert whole[0].area == pytest.approx(surface_pieces(base[0]).area_P.max())


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
