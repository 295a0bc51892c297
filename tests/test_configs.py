"""Every packaged config builds (tokenizer and generator, tiny to large), on the meta device: no memory,
no weights. Parameter counts agree with the README's table and the shipped models' card; activation
checkpointing is one kind at a time; weight-decay groups do not depend on parameter shapes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vat3d.models.generator import NextScaleGenerator
from vat3d.models.tokenizer import VATokenizer
from vat3d.training.common import load_config, param_groups, plan_activation_checkpointing
from vat3d.training.generator_module import conditioner_kwargs_for

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["tiny", "small", "base", "large"]


def build(name: str) -> tuple[VATokenizer, NextScaleGenerator]:
    """The tokenizer of config ``name`` and the generator of the same name, built for its tokens."""
    tok_cfg = load_config(name, "tokenizer")["model"]
    gen_cfg = dict(load_config(name, "generator")["model"])
    gen_cfg["conditioner_kwargs"] = conditioner_kwargs_for(gen_cfg.get("cond_type", "class"),
                                                           gen_cfg.get("conditioner_kwargs"))
    with torch.device("meta"):
        tokenizer = VATokenizer(**tok_cfg)
        q = tokenizer.quantizer
        # what NextScaleGenerator.from_tokenizer derives (it fingerprints real weights: not on meta)
        generator = NextScaleGenerator(**gen_cfg, num_latents=q.num_latents, scale_sizes=q.scale_sizes,
                                       scale_mode=q.mode, codebook_size=q.codebook_size, code_dim=q.dim)
    return tokenizer, generator


def _readme_sizes() -> dict[str, tuple[str, str, str]]:
    rows = re.findall(r"^\| `(\w+)` \| ([\d.]+M) \| (\d+ \(\d+\)) \| ([\d.]+M) \|$", (ROOT / "README.md").read_text(),
                      flags=re.M)
    return {name: (tok, tokens, gen) for name, tok, tokens, gen in rows}


def _millions(n: int, like: str) -> str:
    """``n`` written as in the table: millions with the table entry's number of decimals."""
    decimals = len(like.rstrip("M").partition(".")[2])
    return f"{n / 1e6:.{decimals}f}M"


@pytest.mark.parametrize("name", NAMES)
def test_config_builds_with_the_documented_sizes(name):
    tokenizer, generator = build(name)
    assert all(p.is_meta for p in tokenizer.parameters())
    sizes = _readme_sizes()
    assert name in sizes, "README's table of config sizes lacks a row"
    tok_size, tokens, gen_size = sizes[name]
    assert _millions(tokenizer.num_parameters(), tok_size) == tok_size
    assert f"{sum(tokenizer.scale_sizes)} ({len(tokenizer.scale_sizes)})" == tokens
    assert _millions(generator.num_parameters(trainable_only=True), gen_size) == gen_size
    assert generator.num_tokens == sum(tokenizer.scale_sizes)
    assert not any(p.requires_grad for p in generator.quantizer.parameters())  # the frozen codebook copy


def test_shipped_model_card_sizes_match_the_small_configs():
    card = (ROOT / "src" / "vat3d" / "pretrained" / "README.md").read_text()
    tok = re.search(r"tokenizer-small \(`VATokenizer`, ([\d.]+M) parameters", card).group(1)
    gen = re.search(r"generator-small \(`NextScaleGenerator`, ([\d.]+M) trainable parameters", card).group(1)
    tokenizer, generator = build("small")
    assert _millions(tokenizer.num_parameters(), tok) == tok
    assert _millions(generator.num_parameters(trainable_only=True), gen) == gen


@pytest.mark.parametrize("name", ["base", "large"])
def test_one_kind_of_activation_checkpointing(name):
    tok_cfg = load_config(name, "tokenizer")
    gen_cfg = load_config(name, "generator")
    for model, cfg in zip(build(name), (tok_cfg, gen_cfg)):
        wanted = bool(cfg["model"].get("gradient_checkpointing")) or bool(cfg["training"].get("activation_checkpointing"))
        assert wanted == (name == "large")
        flags = lambda: {m.gradient_checkpointing for m in model.modules() if hasattr(m, "gradient_checkpointing")}
        # FSDP: Lightning's policy, and the model's own recomputation off
        assert plan_activation_checkpointing(model, cfg["training"], "fsdp") is wanted
        assert flags() == {False}
        # any other strategy: the model's own
        assert plan_activation_checkpointing(model, cfg["training"], "ddp") is False
        assert flags() == {wanted}


def _old_groups(model, weight_decay):  # noqa: ARG001 - the old signature
    """The shape-based rule this replaced: right on whole parameters, wrong on FSDP's flat shards."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        skip = param.ndim < 2 or any(k in name for k in ("pos", "latents", "queries", "embed", "codebook", "null"))
        (no_decay if skip else decay).append(param)
    return decay, no_decay


@pytest.mark.parametrize("name", NAMES)
def test_weight_decay_groups_by_module_not_shape(name):
    for model in build(name):
        names = {id(p): n for n, p in model.named_parameters()}
        decay, no_decay = ({names[id(p)] for p in g["params"]} for g in param_groups(model, 0.05))
        old_decay = {names[id(p)] for p in _old_groups(model, 0.05)[0] if p.requires_grad}
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert decay | no_decay == trainable and not decay & no_decay
        assert decay and all(n.endswith(".weight") for n in decay)  # the linear and conv layers decay
        # the same groups as the shape rule, except the generator's learned start token (3-D, no keyword),
        # which the shape rule decayed against its own intent
        assert old_decay - decay <= {"start_11D"} and decay <= old_decay


def test_weight_decay_groups_survive_flat_parameters():
    torch.manual_seed(0)
    model = VATokenizer(**load_config("tiny", "tokenizer")["model"])
    before = [[id(p) for p in g["params"]] for g in param_groups(model, 0.05)]
    for param in model.parameters():  # what FSDP(use_orig_params=True) leaves between steps: 1-D views
        param.data = param.data.flatten()
    assert [[id(p) for p in g["params"]] for g in param_groups(model, 0.05)] == before
