"""The text+image conditioner: one generator for text, image and text+image prompts."""

from __future__ import annotations

import pytest
import torch

from vat3d.models.conditioners import MultiModalConditioner, build_conditioner
from vat3d.models.generator import NextScaleGenerator

WIDTH = 32
IMAGE = {"image_size": 32, "grid": 2, "channels": [8, 16]}
GEN = dict(width=WIDTH, depth=1, heads=4, num_latents=16, codebook_size=32, code_dim=8)


@pytest.fixture(scope="module")
def cond() -> MultiModalConditioner:
    torch.manual_seed(0)
    return build_conditioner("text+image", WIDTH, text={"num_tokens": 2}, image=IMAGE).eval()


def test_layout_and_missing_modalities(cond):
    images = torch.rand(2, 3, 40, 40)
    captions = ["a wooden chair", "a red car"]
    assert cond.num_tokens == 2 + 4
    both = cond({"text": captions, "image": images})
    assert both.shape == (2, 6, WIDTH) and cond.null(2).shape == (2, 6, WIDTH)
    text_only = cond({"text": captions, "image": None})
    image_only = cond({"text": None, "image": images})
    assert torch.equal(text_only[:, :2], both[:, :2]) and torch.equal(text_only[:, 2:], cond.image.null(2))
    assert torch.equal(image_only[:, 2:], both[:, 2:]) and torch.equal(image_only[:, :2], cond.text.null(2))
    assert torch.equal(cond(captions), text_only) and torch.equal(cond(images), image_only)
    # per sample: an empty caption / a masked image falls back to the null tokens
    mixed = cond({"text": ["a wooden chair", ""], "image": images, "image_mask": torch.tensor([False, True])})
    assert torch.equal(mixed[0, :2], both[0, :2]) and torch.equal(mixed[1, :2], cond.text.null(1)[0])
    assert torch.equal(mixed[0, 2:], cond.image.null(1)[0]) and torch.equal(mixed[1, 2:], both[1, 2:])
    assert cond.batch_size({"text": ["x"], "image": None}) == 1
    with pytest.raises(ValueError):
        cond({"text": ["a", "b", "c"], "image": images})
    with pytest.raises(ValueError):
        cond({"text": None, "image": None})
    with pytest.raises(KeyError):
        cond({"caption": captions})
    with pytest.raises(ValueError):
        MultiModalConditioner(WIDTH, image=IMAGE, modality_probs=(0.5, 0.5, 0.5))
    assert "null_tokens_1nD" not in cond.state_dict()  # the null prefix is the two modalities' nulls


def test_training_drops_one_modality_per_sample(cond):
    torch.manual_seed(0)
    B = 400
    captions = [f"shape {i % 8}" for i in range(B)]  # few distinct captions: encoded once each
    images = torch.rand(B, 3, 32, 32)
    full = cond({"text": captions, "image": images})
    cond.train()
    try:
        out = cond({"text": captions, "image": images})
    finally:
        cond.eval()
    text_null = (out[:, :2] == cond.text.null(B)).flatten(1).all(1)
    image_null = (out[:, 2:] == cond.image.null(B)).flatten(1).all(1)
    kept_text = (out[:, :2] == full[:, :2]).flatten(1).all(1)
    assert torch.equal(text_null, ~kept_text)
    assert not (text_null & image_null).any()  # never both: that is cond_dropout's job
    both, text_only, image_only = [(~text_null & ~image_null).float().mean(), image_null.float().mean(),
                                   text_null.float().mean()]
    assert abs(both - 0.5) < 0.1 and abs(text_only - 0.25) < 0.08 and abs(image_only - 0.25) < 0.08


def test_generator_with_text_and_image(tmp_path):
    torch.manual_seed(0)
    model = NextScaleGenerator(**GEN, cond_type="text+image",
                               conditioner_kwargs={"image": IMAGE, "modality_probs": [0.4, 0.3, 0.3]})
    images = torch.rand(2, 3, 32, 32)
    captions = ["a chair", "a boat"]
    tokens = [torch.randint(32, (2, n)) for n in model.scale_sizes]
    model.train()
    model.loss(tokens, {"text": captions, "image": images})["loss"].backward()
    assert model.conditioner.image.encoder.net[0].weight.grad is not None
    assert model.conditioner.text.proj.weight.grad is not None
    model.eval()
    for conditions in ({"text": captions, "image": images}, {"text": captions, "image": None},
                       {"text": None, "image": images}):
        out = model.generate(conditions, seed=0, cfg_scale=2.0)
        assert [t.shape for t in out] == [(2, n) for n in model.scale_sizes]
    assert [t.shape[0] for t in model.generate(None, batch_size=3, seed=0)] == [3] * model.num_scales
    model.save_pretrained(tmp_path / "gen")
    loaded = NextScaleGenerator.from_pretrained(tmp_path / "gen")
    assert loaded.config["conditioner_kwargs"]["modality_probs"] == [0.4, 0.3, 0.3]
    with torch.no_grad():
        conditions = {"text": captions, "image": images}
        assert torch.equal(loaded(tokens, conditions), model(tokens, conditions))
