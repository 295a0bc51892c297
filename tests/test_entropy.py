"""Entropy coding of tokens with the generator as prior (range coder from ``constriction``)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from conftest import TINY_TOKENIZER
from vat3d.cli import app
from vat3d.codec import EntropyGeneratorRequired, VatModelMismatch, VatTruncatedWarning, read_tokens, tokens_to_bytes
from vat3d.codec.entropy import check_generator, entropy_bytes, entropy_decode, entropy_encode, token_information
from vat3d.codec.vatfile import decode_vat_header
from vat3d.models.generator import NextScaleGenerator
from vat3d.models.tokenizer import VATokenizer

GEN = dict(width=32, depth=2, heads=4)


def make_tokenizer(seed: int = 0) -> VATokenizer:
    torch.manual_seed(seed)
    model = VATokenizer(**{**TINY_TOKENIZER, "num_points": 512}).eval()
    with torch.no_grad():
        model.quantizer.codebook.weight.normal_()
    return model


def make_generator(tokenizer, seed: int, **kwargs) -> NextScaleGenerator:
    torch.manual_seed(seed)
    options = {**GEN, "cond_type": "none", "init_std": 0.3, **kwargs}
    return NextScaleGenerator.from_tokenizer(tokenizer, **options).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(0)


@pytest.fixture(scope="module")
def generator(tokenizer):
    return make_generator(tokenizer, 1)


def as_list(tokens_KB, b):
    return [t[b].numpy() for t in tokens_KB]


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def test_round_trip_100_shapes_bit_exact(generator):
    sampled = generator.generate(batch_size=50, seed=0)
    rng = np.random.default_rng(0)
    shapes = [as_list(sampled, b) for b in range(50)]
    shapes += [[rng.integers(0, generator.codebook_size, n) for n in generator.scale_sizes] for _ in range(50)]
    sizes = []
    for tokens in shapes:
        payloads = entropy_encode(generator, tokens)
        assert len(payloads) == generator.num_scales
        assert same(entropy_decode(generator, payloads), tokens)
        sizes.append(sum(map(len, payloads)))
    # the generator's own samples are cheaper to code than uniformly random tokens
    assert np.mean(sizes[:50]) < np.mean(sizes[50:])


def test_conditional_generator_codes_with_its_null_condition(tokenizer):
    g = make_generator(tokenizer, 2, cond_type="class", num_classes=3)
    tokens = as_list(g.generate(batch_size=1, seed=3), 0)
    assert same(entropy_decode(g, entropy_encode(g, tokens)), tokens)


def test_code_length_follows_the_prior(generator):
    tokens = as_list(generator.generate(batch_size=1, seed=7), 0)
    payloads = entropy_encode(generator, tokens)
    ideal = token_information(generator, tokens)
    for k, (p, bits) in enumerate(zip(payloads, ideal)):
        assert 8 * len(p) <= bits + 40, (k, len(p), bits)  # a range coder costs ~ -log2 p + a few bytes


def test_thread_count_does_not_change_the_code(generator):
    tokens = as_list(generator.generate(batch_size=1, seed=11), 0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        payloads = entropy_encode(generator, tokens)
        torch.set_num_threads(1)
        assert same(entropy_decode(generator, payloads), tokens)
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads  # restored


def test_coders_in_several_threads_take_turns(generator):
    """Four threads encode and decode at once (as web-app requests would): every round trip is exact and
    the process's thread count is what it was."""
    from concurrent.futures import ThreadPoolExecutor

    shapes = [as_list(generator.generate(batch_size=1, seed=20 + i), 0) for i in range(4)]
    serial = [entropy_encode(generator, t) for t in shapes]
    threads = torch.get_num_threads()

    def round_trip(i):
        payloads = entropy_encode(generator, shapes[i])
        return payloads, entropy_decode(generator, payloads)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(round_trip, range(4)))
    for (payloads, decoded), expected, tokens in zip(results, serial, shapes):
        assert payloads == expected and same(decoded, tokens)
    assert torch.get_num_threads() == threads


def test_prefix_of_payloads_decodes_prefix(generator):
    tokens = as_list(generator.generate(batch_size=1, seed=5), 0)
    payloads = entropy_encode(generator, tokens)
    for k in range(1, generator.num_scales + 1):
        assert same(entropy_decode(generator, payloads[:k]), tokens[:k])


def test_a_decoder_with_other_probabilities_fails_the_token_check(generator, monkeypatch):
    """Probabilities that differ from the encoder's can decode to other tokens without a coder error:
    each payload's check byte turns that into an error naming the scale."""
    from vat3d.codec import entropy

    tokens = as_list(generator.generate(batch_size=1, seed=7), 0)
    payloads = entropy_encode(generator, tokens)
    assert all(p[0] == entropy.token_check(t) for p, t in zip(payloads, tokens))
    real = entropy.PriorStepper.probs

    def shifted(self):  # every token's probability moved to its neighbour's code
        return np.roll(real(self), 1, axis=-1)

    monkeypatch.setattr(entropy.PriorStepper, "probs", shifted)
    with pytest.raises(ValueError, match="scale 0 decodes to tokens that fail their check"):
        entropy_decode(generator, payloads)


def test_entropy_files_without_token_checks_are_refused(tokenizer, generator):
    from vat3d.codec.api import model_fingerprint_bytes
    from vat3d.codec.entropy import decode_entropy_vat, generator_fingerprint_bytes
    from vat3d.codec.vatfile import VatFormatError, VatHeader, encode_vat_payloads

    tokens = as_list(generator.generate(batch_size=1, seed=3), 0)
    old = VatHeader(model_fingerprint=model_fingerprint_bytes(tokenizer), codebook_size=tokenizer.codebook_size,
                    scale_sizes=tuple(tokenizer.scale_sizes), coding="entropy", version=2,
                    generator_fingerprint=generator_fingerprint_bytes(generator))
    data = encode_vat_payloads(old, [p[1:] for p in entropy_encode(generator, tokens)])  # the old layout
    with pytest.raises(VatFormatError, match="predates per-scale token checks"):
        decode_entropy_vat(generator, data)
    new = tokens_to_bytes(tokenizer, tokens, generator=generator)
    assert decode_vat_header(new).version == 3 and decode_vat_header(tokens_to_bytes(tokenizer, tokens)).version == 2


def test_truncated_entropy_file_decodes_a_prefix(tokenizer, generator):
    tokens = as_list(generator.generate(batch_size=1, seed=5), 0)
    data = tokens_to_bytes(tokenizer, tokens, generator=generator)
    header = decode_vat_header(data)
    # a .vat file keeps the first 4 bytes of each fingerprint
    assert header.coding == "entropy" and header.generator_fingerprint.hex() == generator.fingerprint()[:8]
    assert header.model_fingerprint.hex() == tokenizer.fingerprint()[:8]
    vat, _ = read_tokens(tokenizer, data, generator=generator)
    assert vat.complete and same(vat.tokens, tokens)
    K = generator.num_scales
    with pytest.warns(VatTruncatedWarning):
        vat, _ = read_tokens(tokenizer, data[:-1], generator=generator)
    assert not vat.complete and same(vat.tokens, tokens[: K - 1])
    vat, _ = read_tokens(tokenizer, data, generator=generator, max_scales=2)
    assert same(vat.tokens, tokens[:2])
    # every cut point yields a verified prefix (or a clear error before scale 0 is complete)
    counts = set()
    for cut in range(1, len(data)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                vat, _ = read_tokens(tokenizer, data[:cut], generator=generator)
            except ValueError as error:
                assert "truncated" in str(error)
                continue
        # (a ResourceWarning is the garbage collector closing another test's socket or file meanwhile)
        assert [w.category for w in caught if w.category is not ResourceWarning] == [VatTruncatedWarning]
        assert same(vat.tokens, tokens[: len(vat.tokens)])
        counts.add(len(vat.tokens))
    assert counts == set(range(1, K))


def test_check_generator_accepts_the_4_bytes_a_file_keeps(tokenizer, generator):
    full = bytes.fromhex(tokenizer.fingerprint())
    for fp in (full, full[:4]):
        check_generator(generator, fp, tokenizer.scale_sizes, tokenizer.codebook_size)
    other = bytes.fromhex(make_tokenizer(5).fingerprint())
    for fp in (other, other[:4]):
        with pytest.raises(ValueError, match="was trained on tokenizer"):
            check_generator(generator, fp, tokenizer.scale_sizes, tokenizer.codebook_size)


def test_wrong_generator_is_refused(tokenizer, generator):
    tokens = as_list(generator.generate(batch_size=1, seed=5), 0)
    data = tokens_to_bytes(tokenizer, tokens, generator=generator)
    other = make_generator(tokenizer, 9)
    with pytest.raises(VatModelMismatch) as info:
        read_tokens(tokenizer, data, generator=other)
    assert generator.fingerprint()[:8] in str(info.value) and other.fingerprint() in str(info.value)
    with pytest.raises(EntropyGeneratorRequired, match=generator.fingerprint()[:8]):
        read_tokens(tokenizer, data)
    # a generator trained on another tokenizer is refused on both sides
    foreign = make_generator(make_tokenizer(5), 1)
    with pytest.raises(ValueError, match="tokenizer") as info:
        tokens_to_bytes(tokenizer, tokens, generator=foreign)
    assert tokenizer.fingerprint() in str(info.value)
    with pytest.raises(VatModelMismatch):
        read_tokens(tokenizer, data, generator=foreign)


def test_bad_token_input_is_rejected(generator):
    with pytest.raises(ValueError, match="expected 4 tokens"):
        entropy_encode(generator, [np.zeros(1, int), np.zeros(3, int)])
    with pytest.raises(ValueError, match="outside"):
        entropy_encode(generator, [np.array([generator.codebook_size])])


@pytest.fixture(scope="module")
def memorised(tokenizer):
    """A tiny generator trained for a few seconds to memorise 4 token sequences."""
    g = make_generator(tokenizer, 3, init_std=0.02)
    gen = torch.Generator().manual_seed(0)
    data = [torch.randint(tokenizer.codebook_size, (4, n), generator=gen) for n in g.scale_sizes]
    opt = torch.optim.AdamW(g.trainable_parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    try:
        g.train()
        for _ in range(80):
            loss = g.loss(data)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return g.eval(), data


def test_memorising_generator_compresses_below_fixed_width(tokenizer, memorised):
    g, data = memorised
    raw_bits = math.ceil(math.log2(tokenizer.codebook_size))
    n = sum(g.scale_sizes)
    for b in range(4):
        tokens = as_list(data, b)
        payloads = entropy_encode(g, tokens)
        assert same(entropy_decode(g, payloads), tokens)
        bits_per_token = 8 * sum(len(p) - 1 for p in payloads) / n  # less the check byte of each payload
        assert bits_per_token < raw_bits / 2, bits_per_token
        entropy_file = tokens_to_bytes(tokenizer, tokens, generator=g)
        assert len(entropy_file) < len(tokens_to_bytes(tokenizer, tokens))


def test_biased_head_compresses(tokenizer):
    """Head bias favouring 2 of 64 tokens: tokens drawn from it cost about 1 bit, not 6."""
    g = make_generator(tokenizer, 4)
    with torch.no_grad():
        g.head.weight.zero_()
        g.head.bias.fill_(-10.0)
        g.head.bias[[3, 17]] = 10.0
    rng = np.random.default_rng(0)
    tokens = [rng.choice([3, 17], n) for n in g.scale_sizes]
    payloads = entropy_encode(g, tokens)
    assert same(entropy_decode(g, payloads), tokens)
    coded = sum(len(p) - 1 for p in payloads)  # the range coder's bytes: each payload opens with a check byte
    assert 8 * coded / sum(g.scale_sizes) < 2.5


# ---------------------------------------------------------------------------- command line


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_entropy_encode_decode(tmp_path, tokenizer, memorised, monkeypatch):
    g, _ = memorised
    tokenizer.save_pretrained(tmp_path / "tok")
    g.save_pretrained(tmp_path / "gen")
    make_generator(tokenizer, 9).save_pretrained(tmp_path / "gen2")
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=2.0)
    mesh.apply_translation((5.0, 0.0, 0.0))
    mesh.export(tmp_path / "m.obj")
    result = run("encode", tmp_path / "tok", tmp_path / "m.obj", "-o", tmp_path / "m.vat", "--entropy", tmp_path / "gen")
    assert result.exit_code == 0, result.output
    data = (tmp_path / "m.vat").read_bytes()
    header = decode_vat_header(data)
    assert header.coding == "entropy" and header.generator_fingerprint.hex() == g.fingerprint()[:8]
    monkeypatch.setattr("vat3d.pretrained.SHIPPED", {"tokenizer": "none", "generator": "none"})
    result = run("decode", tmp_path / "tok", tmp_path / "m.vat", "-o", tmp_path / "a.obj", "--resolution", "16")
    assert result.exit_code != 0 and "--entropy" in result.output and g.fingerprint()[:8] in result.output
    result = run("decode", tmp_path / "tok", tmp_path / "m.vat", "-o", tmp_path / "a.obj", "--resolution", "16",
                 "--entropy", tmp_path / "gen2")
    assert result.exit_code != 0 and g.fingerprint()[:8] in result.output
    assert NextScaleGenerator.from_pretrained(tmp_path / "gen2").fingerprint() in result.output
    result = run("decode", tmp_path / "tok", tmp_path / "m.vat", "-o", tmp_path / "a.obj", "--resolution", "16",
                 "--entropy", tmp_path / "gen")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.obj").exists()
    # the tokens equal the raw encoding's
    assert run("encode", tmp_path / "tok", tmp_path / "m.obj", "-o", tmp_path / "raw.vat").exit_code == 0
    raw, _ = read_tokens(tokenizer, (tmp_path / "raw.vat").read_bytes())
    ent, _ = read_tokens(tokenizer, data, generator=g)
    assert same(raw.tokens, ent.tokens)
    # a generator for another tokenizer is refused up front
    make_generator(make_tokenizer(5), 1).save_pretrained(tmp_path / "foreign")
    result = run("encode", tmp_path / "tok", tmp_path / "m.obj", "-o", tmp_path / "f.vat", "--entropy",
                 tmp_path / "foreign")
    assert result.exit_code != 0 and tokenizer.fingerprint() in result.output


def test_entropy_bytes_report(tokenizer, generator):
    from vat3d.codec import encode_mesh

    shape = encode_mesh(tokenizer, trimesh.creation.box())
    info = entropy_bytes(generator, tokenizer, shape)
    assert info["entropy_raw_bits_per_token"] == 6 and info["entropy_raw_bytes"] == shape.num_bytes
    assert info["entropy_bytes"] > 0 and info["entropy_bits_per_token"] > 0
    assert 0 < info["entropy_ideal_bits_per_token"] <= info["entropy_bits_per_token"] + 1.0
