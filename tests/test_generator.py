"""Next-scale generator: block-causal mask, KV-cache sampling, CFG, memorisation, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vat3d.models.generator import NextScaleGenerator, block_causal_mask
from vat3d.models.sampling import cfg_scales, filter_logits, sample_from_logits
from vat3d.models.tokenizer import VATokenizer

TINY_TOKENIZER = dict(num_latents=16, width=64, depth=2, heads=4, num_freqs=4, code_dim=8, codebook_size=64,
                      decoder_width=64, decoder_depth=2, decoder_heads=4, plane_tokens=4, plane_resolution=16,
                      plane_channels=8, mlp_hidden=32)
TINY_GENERATOR = dict(width=32, depth=2, heads=4, cond_type="class", num_classes=4)


@pytest.fixture(scope="module")
def tokenizer() -> VATokenizer:
    torch.manual_seed(0)
    tok = VATokenizer(**TINY_TOKENIZER).eval()
    # spread the codebook so code vectors (and hence next-scale inputs) differ visibly
    with torch.no_grad():
        tok.quantizer.codebook.weight.normal_()
    return tok


@pytest.fixture(scope="module")
def sharp(tokenizer) -> NextScaleGenerator:
    """A random generator with large weights: peaky, context-dependent logits."""
    torch.manual_seed(1)
    return NextScaleGenerator.from_tokenizer(tokenizer, **TINY_GENERATOR, init_std=0.3).eval()


def random_tokens(model: NextScaleGenerator, batch: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(model.codebook_size, (batch, n), generator=gen) for n in model.scale_sizes]


def scale_slice(model: NextScaleGenerator, k: int) -> slice:
    return slice(model.offsets[k], model.offsets[k + 1])


# ---- structure ----------------------------------------------------------------------------------


def test_from_tokenizer_copies_frozen_quantizer(tokenizer, sharp):
    assert sharp.scale_sizes == [1, 4, 9, 16] == tokenizer.scale_sizes
    assert sharp.config["tokenizer_fingerprint"] == tokenizer.fingerprint()
    for key, value in tokenizer.quantizer.state_dict().items():
        assert torch.equal(sharp.quantizer.state_dict()[key], value), key
    assert all(not p.requires_grad for p in sharp.quantizer.parameters())
    trainable = {id(p) for p in sharp.trainable_parameters()}
    assert not any(id(p) in trainable for p in sharp.quantizer.parameters())
    sharp.train()
    assert not sharp.quantizer.training
    sharp.eval()
    sharp.check_tokenizer(tokenizer)
    with pytest.raises(ValueError):
        NextScaleGenerator.from_tokenizer(tokenizer, codebook_size=128)


def test_mask_layout():
    levels = torch.tensor([-1, -1, 0, 1, 1, 2])
    mask = block_causal_mask(levels, levels)
    assert mask[0].tolist() == [True, True, False, False, False, False]  # condition sees condition only
    assert mask[2].tolist() == [True, True, True, False, False, False]  # start sees condition + itself
    assert mask[3].tolist() == [True, True, True, True, True, False]  # own scale in full, not later ones
    assert mask[5].all()


@pytest.mark.parametrize("scale", [1, 2])
def test_mask_is_block_causal_on_inputs(sharp, scale):
    """Perturbing the inputs of one scale changes the logits of that scale and later ones only."""
    labels = torch.tensor([0, 3])
    cond = sharp.condition(labels)
    x = sharp.teacher_inputs(random_tokens(sharp, 2))
    with torch.no_grad():
        base = sharp.forward_embeddings(cond, x)
        x2 = x.clone()
        x2[:, scale_slice(sharp, scale)] += torch.randn_like(x2[:, scale_slice(sharp, scale)])
        pert = sharp.forward_embeddings(cond, x2)
    earlier = slice(0, sharp.offsets[scale])
    torch.testing.assert_close(pert[:, earlier], base[:, earlier], rtol=0, atol=1e-6)
    for k in range(scale, sharp.num_scales):
        assert (pert[:, scale_slice(sharp, k)] - base[:, scale_slice(sharp, k)]).abs().max() > 1e-3


@pytest.mark.parametrize("scale", [0, 1, 2])
def test_mask_is_block_causal_on_tokens(sharp, scale):
    """Changing the tokens of scale k never changes the logits of scales <= k (they predict them)."""
    labels = torch.tensor([1, 2])
    tokens = random_tokens(sharp, 2)
    changed = [t.clone() for t in tokens]
    changed[scale] = (changed[scale] + 7) % sharp.codebook_size
    with torch.no_grad():
        base, pert = sharp(tokens, labels), sharp(changed, labels)
    upto = slice(0, sharp.offsets[scale + 1])
    torch.testing.assert_close(pert[:, upto], base[:, upto], rtol=0, atol=1e-6)
    assert (pert[:, sharp.offsets[scale + 1]:] - base[:, sharp.offsets[scale + 1]:]).abs().max() > 1e-3
    # the condition matters too
    with torch.no_grad():
        other = sharp(tokens, torch.tensor([3, 0]))
    assert (other - base).abs().max() > 1e-3


def test_loss_reports_per_scale(sharp):
    out = sharp.loss(random_tokens(sharp, 3), torch.tensor([0, 1, 2]))
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["scale_loss"].shape == (4,) and out["scale_accuracy"].shape == (4,)
    weights = torch.tensor(sharp.scale_sizes, dtype=torch.float32)
    torch.testing.assert_close((out["scale_loss"] * weights).sum() / weights.sum(), out["loss"].detach())


def test_chunked_loss_equals_whole_logits(tokenizer):
    """The training loss never builds the (B, N, V) logits; in chunks it equals the whole computation,
    gradients included."""
    torch.manual_seed(0)
    model = NextScaleGenerator.from_tokenizer(tokenizer, **TINY_GENERATOR, init_std=0.3).eval()
    tokens, labels = random_tokens(model, 3), torch.tensor([0, 1, 2])
    logits_BNV = model(tokens, labels)
    target_BN = torch.cat(tokens, dim=1)
    reference = F.cross_entropy(logits_BNV.float().transpose(1, 2), target_BN)
    reference.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for max_elements in (1, 3 * 64 * 7, 10**9):  # one position at a time, 7 at a time, all at once
        model.zero_grad()
        out = model.loss(tokens, labels, max_logit_elements=max_elements)
        torch.testing.assert_close(out["loss"], reference)
        assert float(out["accuracy"]) == float((logits_BNV.argmax(-1) == target_BN).float().mean())
        out["loss"].backward()
        for name, param in model.named_parameters():
            if param.grad is not None:
                torch.testing.assert_close(param.grad, grads[name], msg=name)


@pytest.mark.parametrize("cond_type", ["none", "class", "image", "text+image"])
def test_every_trainable_parameter_is_in_the_training_graph(tokenizer, cond_type, monkeypatch):
    """DDP runs the generator with find_unused_parameters=False: a training step must reach every
    trainable parameter, whatever condition or modality dropout drew."""
    from vat3d.models.conditioners import TextConditioner

    monkeypatch.setattr(TextConditioner, "embed", lambda self, captions: torch.randn(len(captions), self.embed_dim))
    torch.manual_seed(0)
    kwargs = dict(width=32, depth=1, heads=4, cond_type=cond_type, cond_dropout=0.5,
                  conditioner_kwargs={"image": {"grid": 2, "image_size": 32, "channels": [8, 8]}}
                  if cond_type == "text+image" else {"grid": 2, "image_size": 32, "channels": [8, 8]}
                  if cond_type == "image" else None)
    if cond_type == "class":
        kwargs["num_classes"] = 3
    model = NextScaleGenerator.from_tokenizer(tokenizer, **kwargs).train()
    images = torch.rand(4, 3, 32, 32)
    conditions = {"none": None, "class": torch.tensor([0, 1, 2, 0]), "image": images,
                  "text+image": {"text": ["a", "b", "c", "d"], "image": images}}[cond_type]
    for seed in range(3):  # different dropout draws
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        model.loss(random_tokens(model, 4, seed), conditions)["loss"].backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing


def test_condition_dropout_uses_null(tokenizer):
    model = NextScaleGenerator.from_tokenizer(tokenizer, **TINY_GENERATOR, cond_dropout=0.5).train()
    torch.manual_seed(0)
    labels = torch.arange(4).repeat(16)
    cond = model.condition(labels)
    dropped = model.drop_condition(cond)
    is_null = (dropped == model.conditioner.null(len(labels))).all(-1).all(-1)
    is_cond = (dropped == cond).all(-1).all(-1)
    assert (is_null | is_cond).all() and 10 < int(is_null.sum()) < 54
    model.eval()
    assert torch.equal(model.drop_condition(cond), cond)


# ---- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg_scale,schedule", [(1.0, "constant"), (2.5, "constant"), (3.0, "linear")])
def test_kv_cache_matches_full_recompute(sharp, cfg_scale, schedule):
    labels = torch.tensor([0, 1, 2, 3, 1])
    kwargs = dict(cfg_scale=cfg_scale, cfg_schedule=schedule, temperature=1.0, seed=123, return_logits=True)
    cached, cached_logits = sharp.generate(labels, use_cache=True, **kwargs)
    full, full_logits = sharp.generate(labels, use_cache=False, **kwargs)
    for a, b in zip(cached, full):
        assert torch.equal(a, b)
    for a, b in zip(cached_logits, full_logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert len({tuple(torch.cat(cached, 1)[i].tolist()) for i in range(5)}) > 1  # real sampling


def test_sampling_logits_match_teacher_forcing(sharp):
    """The cached logits of each scale equal the teacher-forced logits of the sampled tokens."""
    labels = torch.tensor([2, 0])
    tokens, logits = sharp.generate(labels, seed=5, return_logits=True)
    with torch.no_grad():
        teacher = sharp(tokens, labels)
    torch.testing.assert_close(torch.cat(logits, 1), teacher, rtol=1e-5, atol=1e-5)


def test_log_likelihood_sums_the_teacher_forced_log_probs(sharp):
    labels = torch.tensor([1, 3])
    tokens = random_tokens(sharp, 2, seed=3)
    with torch.no_grad():
        log_probs = F.log_softmax(sharp(tokens, labels).float(), dim=-1)
    expected = log_probs.gather(-1, torch.cat(tokens, 1)[..., None])[..., 0].sum(1)
    torch.testing.assert_close(sharp.log_likelihood(tokens, labels), expected, rtol=1e-5, atol=1e-4)
    # the null condition is a different distribution; first scales only are scored too
    null = sharp.log_likelihood(tokens)
    assert null.shape == (2,) and not torch.allclose(null, expected)
    assert sharp.log_likelihood(tokens[:2], labels).shape == (2,)
    # a sequence the model drew itself is likelier than random tokens, under its own condition
    drawn = sharp.generate(labels, seed=4, temperature=0.5)
    assert (sharp.log_likelihood(drawn, labels) > expected).all()


def test_cfg_scale_one_equals_conditional_sampling(sharp):
    labels = torch.tensor([0, 1, 2, 3])
    plain = sharp.generate(labels, seed=7)
    doubled = sharp.generate(labels, seed=7, cfg_scale=1.0, guidance_batch=True)
    for a, b in zip(plain, doubled):
        assert torch.equal(a, b)
    guided = sharp.generate(labels, seed=7, cfg_scale=4.0)
    assert any(not torch.equal(a, b) for a, b in zip(plain, guided))


def test_cfg_mixes_conditional_and_null_logits(sharp):
    """Guided logits = cond + (s - 1)(cond - uncond), with s from the schedule, per scale."""
    labels = torch.tensor([1, 3])
    tokens, logits = sharp.generate(labels, temperature=0, cfg_scale=3.0, cfg_schedule="linear",
                                    return_logits=True)
    with torch.no_grad():
        cond = sharp(tokens, labels)
        uncond = sharp(tokens, cond_BCD=sharp.conditioner.null(2))
    for k, s in enumerate(cfg_scales(3.0, "linear", sharp.num_scales)):
        sl = scale_slice(sharp, k)
        expected = cond[:, sl] + (s - 1) * (cond[:, sl] - uncond[:, sl])
        torch.testing.assert_close(logits[k], expected, rtol=1e-4, atol=1e-4)
        assert torch.equal(tokens[k], logits[k].argmax(-1))


def test_cfg_schedules():
    assert cfg_scales(2.0, "constant", 3) == [2.0, 2.0, 2.0]
    assert cfg_scales(3.0, "linear", 5) == [1.0, 1.5, 2.0, 2.5, 3.0]
    with pytest.raises(ValueError):
        cfg_scales(2.0, "cosine", 3)


def test_top_k_one_and_tiny_top_p_equal_greedy(sharp):
    labels = torch.tensor([0, 1, 2, 3])
    greedy = sharp.generate(labels, temperature=0)
    top_k = sharp.generate(labels, temperature=1.0, top_k=1, seed=3)
    top_p = sharp.generate(labels, temperature=1.5, top_p=1e-6, seed=4)
    for g, a, b in zip(greedy, top_k, top_p):
        assert torch.equal(g, a) and torch.equal(g, b)
    sampled = sharp.generate(labels, temperature=1.5, seed=4)
    assert any(not torch.equal(g, s) for g, s in zip(greedy, sampled))


def test_filters():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[[False, False, True, True]]]
    # probs ~ [0.64, 0.24, 0.09, 0.03]: top-p 0.7 keeps the two best
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[[False, False, True, True]]]
    gen = torch.Generator().manual_seed(0)
    draws = sample_from_logits(logits.expand(1, 2000, 4), top_k=2, generator=gen)
    assert set(draws.unique().tolist()) == {0, 1}


def test_seeded_sampling_is_reproducible_and_decodable(tokenizer, sharp):
    a = sharp.generate(torch.tensor([0, 1]), seed=11, cfg_scale=2.0, top_k=20, top_p=0.9)
    b = sharp.generate(torch.tensor([0, 1]), seed=11, cfg_scale=2.0, top_k=20, top_p=0.9)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [t.shape for t in a] == [(2, n) for n in tokenizer.scale_sizes]
    assert all(t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) < 64 for t in a)
    queries = torch.rand(2, 50, 3) * 2 - 1
    assert tokenizer.decode_tokens(a, queries).shape == (2, 50)
    fn = tokenizer.occupancy_fn([t[:1] for t in a])
    assert torch.isfinite(fn(queries[0])).all()
    prefix = sharp.generate(torch.tensor([0, 1]), seed=11, num_scales=2)
    assert [t.shape[1] for t in prefix] == [1, 4]


def test_unconditional_and_1d_schedule():
    torch.manual_seed(0)
    model = NextScaleGenerator(width=32, depth=2, heads=4, cond_type="none", num_latents=16, scale_mode="1d",
                               codebook_size=32, code_dim=8, init_std=0.3).eval()
    assert model.scale_sizes == [1, 2, 4, 8, 16]
    a = model.generate(batch_size=3, seed=0)
    b = model.generate(batch_size=3, seed=0, use_cache=False)
    assert [t.shape for t in a] == [(3, n) for n in model.scale_sizes]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_bf16_autocast_sampling_runs(sharp):
    tokens = sharp.generate(torch.tensor([0, 1]), seed=0, dtype=torch.bfloat16, cfg_scale=2.0)
    assert [t.shape for t in tokens] == [(2, n) for n in sharp.scale_sizes]


# ---- learning -----------------------------------------------------------------------------------


def test_memorises_four_class_conditioned_sequences(tokenizer):
    """4 classes, 4 token sequences: after a few hundred Adam steps greedy sampling regenerates them."""
    torch.manual_seed(0)
    model = NextScaleGenerator.from_tokenizer(tokenizer, width=64, depth=2, heads=4, cond_type="class",
                                              num_classes=4, cond_dropout=0.0)
    gen = torch.Generator().manual_seed(42)
    targets = [torch.randint(model.codebook_size, (4, n), generator=gen) for n in model.scale_sizes]
    labels = torch.arange(4)
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    model.train()
    for step in range(400):
        out = model.loss(targets, labels)
        optimiser.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimiser.step()
        if step >= 60 and step % 10 == 0 and out["accuracy"].item() == 1.0 and out["loss"].item() < 0.05:
            break
    assert float(out["accuracy"]) == 1.0, out
    sampled = model.generate(labels, temperature=0)
    for k, (s, t) in enumerate(zip(sampled, targets)):
        assert torch.equal(s, t), f"scale {k}"
    single = model.generate(torch.tensor([2]), temperature=0, use_cache=False)
    assert torch.equal(torch.cat(single, 1)[0], torch.cat(targets, 1)[2])


# ---- save / load --------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path, tokenizer):
    torch.manual_seed(2)
    model = NextScaleGenerator.from_tokenizer(tokenizer, **TINY_GENERATOR, qk_norm=True,
                                              class_names=["chair", "table", "lamp", "car"]).eval()
    model.save_pretrained(tmp_path / "gen")
    loaded = NextScaleGenerator.from_pretrained(tmp_path / "gen")
    assert loaded.config == model.config
    assert loaded.config["tokenizer_fingerprint"] == tokenizer.fingerprint()
    assert loaded.fingerprint() == model.fingerprint()
    tokens = random_tokens(model, 4)
    labels = torch.arange(4)
    with torch.no_grad():
        assert torch.equal(loaded(tokens, labels), model(tokens, labels))
    assert all(torch.equal(a, b) for a, b in zip(loaded.generate(labels, seed=0, cfg_scale=2.0),
                                                  model.generate(labels, seed=0, cfg_scale=2.0)))
    # the frozen quantizer travels with the generator; class names map to ids
    for key, value in tokenizer.quantizer.state_dict().items():
        assert torch.equal(loaded.quantizer.state_dict()[key], value)
    assert loaded.conditioner.ids(["lamp", "chair"]).tolist() == [2, 0]
    loaded.check_tokenizer(tokenizer)
    other = VATokenizer(**TINY_TOKENIZER)
    with pytest.raises(ValueError):
        loaded.check_tokenizer(other)
