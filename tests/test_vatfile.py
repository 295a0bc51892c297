"""Tests for the .vat token container and bit packing (fast, no model needed)."""

from __future__ import annotations

import math
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from vat3d.codec import vatfile
from vat3d.codec.bitpack import bits_for_codebook, pack_bits, packed_size, padding_is_zero, unpack_bits
from vat3d.codec.vatfile import (
    MAX_FILE_BYTES,
    VatFile,
    VatFormatError,
    VatHeader,
    VatModelMismatch,
    VatTruncatedWarning,
    decode_vat,
    decode_vat_header,
    decode_vat_payloads,
    encode_vat,
    encode_vat_payloads,
    max_entropy_payload_bytes,
    read_vat,
    read_vat_payloads,
    vat_file_size,
    write_vat,
    write_vat_payloads,
)

VAT_SCHEDULE = (1, 4, 9, 16, 25, 36, 64, 100, 169, 256)
FP = bytes.fromhex("0123456789abcdef")
OTHER_FP = bytes.fromhex("fedcba9876543210")
GEN_FP = bytes.fromhex("00112233aabbccdd")


def random_tokens(schedule, V, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, V, size=n) for n in schedule]


def make_file(V=64, schedule=VAT_SCHEDULE, seed=0, **kw):
    tokens = random_tokens(schedule, V, seed)
    data = encode_vat(
        tokens,
        model_fingerprint=FP,
        codebook_size=V,
        scale_sizes=schedule,
        center=kw.pop("center", (0.25, -0.5, 1.0)),
        scale=kw.pop("scale", 2.0),
        **kw,
    )
    return tokens, data


# --- an independent writer following docs/vat-format.md (to craft bad files) --------


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
        v >>= 7
        if not v:
            return bytes(out)


def craft(
    *,
    magic=b"VAT3",
    version=1,
    flags=0,
    bits=6,
    V=64,
    schedule=(1, 4),
    stored=None,
    fp=FP,
    transform=(0.0, 0.0, 0.0, 1.0),
    gen_fp=None,
    lengths=None,
    payloads=None,
    raw_fields=None,
) -> bytes:
    """Build a file with *valid checksums* around arbitrary (possibly invalid) fields."""
    stored = len(schedule) if stored is None else stored
    if raw_fields is None:
        h = bytearray(magic)
        h += bytes([version, flags, bits])
        h += varint(V) + varint(len(schedule)) + b"".join(varint(n) for n in schedule) + varint(stored)
        h += fp + struct.pack("<4f", *transform)
        if gen_fp is not None:
            h += gen_fp
        if lengths is not None:
            h += b"".join(varint(n) for n in lengths)
    else:
        h = bytearray(raw_fields)
    if payloads is None:
        payloads = [bytes(packed_size(n, max(1, min(bits, 16)))) for n in schedule[:stored]]
    out = bytearray(h)
    out += struct.pack("<H", zlib.crc32(out) & 0xFFFF)
    for k, p in enumerate(payloads):
        out += p
        crc = zlib.crc32(out)
        out += struct.pack("<I", crc) if k == stored - 1 else bytes([crc & 0xFF])
    return bytes(out)


def scale_boundaries(header: VatHeader, lengths=None) -> list[int]:
    """File offsets just after the check of each stored scale."""
    from vat3d.codec.vatfile import _header_fields

    if lengths is None:
        lengths = [packed_size(n, header.bits_per_token) for n in header.scale_sizes[: header.num_scales_stored]]
        hlen = len(_header_fields(header))
    else:
        hlen = len(_header_fields(header, lengths))
    pos = hlen + 2
    out = []
    for k, n in enumerate(lengths):
        pos += n + (4 if k == len(lengths) - 1 else 1)
        out.append(pos)
    return out


# --------------------------------------------------------------------------- bitpack


def test_pack_bits_known_vector():
    assert pack_bits([1, 2, 3], 2) == bytes([0b00111001])
    assert pack_bits([0xABC, 0x123], 12) == bytes([0xBC, 0x3A, 0x12])
    assert pack_bits([], 5) == b""


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_unpack_roundtrip_all_widths(bits):
    rng = np.random.default_rng(bits)
    for count in (1, 2, 7, 8, 9, 680, 2001):
        vals = rng.integers(0, 1 << bits, size=count)
        vals[0] = (1 << bits) - 1
        data = pack_bits(vals, bits)
        assert len(data) == packed_size(count, bits) == math.ceil(count * bits / 8)
        assert padding_is_zero(data, bits, count)
        out = unpack_bits(data, bits, count)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, vals)


def test_pack_matches_reference_bitstream():
    rng = np.random.default_rng(1)
    for bits in (3, 11, 16):
        vals = rng.integers(0, 1 << bits, size=37)
        stream = 0
        for i, v in enumerate(vals):
            stream |= int(v) << (i * bits)
        ref = stream.to_bytes(packed_size(37, bits), "little")
        assert pack_bits(vals, bits) == ref


def test_pack_bits_rejects_bad_input():
    with pytest.raises(ValueError):
        pack_bits([4], 2)
    with pytest.raises(ValueError):
        pack_bits([-1], 8)
    with pytest.raises(TypeError):
        pack_bits([1.5], 8)
    for bad in (0, 17):
        with pytest.raises(ValueError):
            pack_bits([0], bad)
    with pytest.raises(ValueError):
        unpack_bits(b"\x00", 12, 1)


def test_bitpack_is_fast_for_2000_tokens():
    import time

    vals = np.random.default_rng(0).integers(0, 4096, size=2000)
    t0 = time.perf_counter()
    for _ in range(100):
        unpack_bits(pack_bits(vals, 12), 12, 2000)
    assert (time.perf_counter() - t0) / 100 < 0.01


@pytest.mark.parametrize(
    "V,bits",
    [(2, 1), (3, 2), (64, 6), (65, 7), (1000, 10), (1024, 10), (4096, 12), (16384, 14), (65536, 16)],
)
def test_bits_for_codebook(V, bits):
    assert bits_for_codebook(V) == bits


# --------------------------------------------------------------------------- round trip

SCHEDULES = [VAT_SCHEDULE, (1,), (3, 7, 2), (1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121, 144, 169, 196, 225, 256)]


@pytest.mark.parametrize("V", [2, 64, 1000, 1024, 4096, 16384, 65536])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"{len(s)}scales")
def test_roundtrip(V, schedule):
    tokens, data = make_file(V, schedule, seed=V)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = decode_vat(data, expected_fingerprint=FP)
    assert isinstance(f, VatFile) and f.complete
    h = f.header
    assert h.bits_per_token == math.ceil(math.log2(V)) == bits_for_codebook(V)
    assert (h.codebook_size, h.scale_sizes, h.num_scales_stored) == (V, schedule, len(schedule))
    assert h.model_fingerprint == FP and h.coding == "raw" and h.generator_fingerprint is None
    assert h.center == (0.25, -0.5, 1.0) and h.scale == 2.0
    assert len(f.tokens) == len(schedule)
    for a, b in zip(f.tokens, tokens):
        assert a.dtype == np.int64 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_extreme_token_values_and_2d_maps():
    V = 4096
    tokens = [np.array([[0, V - 1], [V - 1, 0]]), np.full((3, 3), V - 1)]
    data = encode_vat(tokens, model_fingerprint=FP, codebook_size=V, scale_sizes=(4, 9), center=(0, 0, 0), scale=1)
    f = decode_vat(data)
    np.testing.assert_array_equal(f.tokens[0], tokens[0].ravel())
    np.testing.assert_array_equal(f.tokens[1], tokens[1].ravel())


def test_header_roundtrip_is_exact_with_float32_transform():
    h = VatHeader(model_fingerprint=FP, codebook_size=1000, scale_sizes=(1, 4), center=(0.1, 0.2, 0.3), scale=0.7)
    assert h.center == tuple(float(np.float32(c)) for c in (0.1, 0.2, 0.3))
    data = encode_vat(
        random_tokens((1, 4), 1000),
        model_fingerprint=FP,
        codebook_size=1000,
        scale_sizes=(1, 4),
        center=(0.1, 0.2, 0.3),
        scale=0.7,
    )
    assert decode_vat(data).header == h
    assert decode_vat_header(data) == h
    assert h.transform == (h.center, h.scale)


def test_prefix_written_on_purpose_is_complete():
    tokens = random_tokens(VAT_SCHEDULE, 64)[:4]
    data = encode_vat(tokens, model_fingerprint=FP, codebook_size=64, scale_sizes=VAT_SCHEDULE)
    f = decode_vat(data)
    assert f.complete and f.header.num_scales_stored == 4 and f.header.num_scales == 10
    assert len(f.tokens) == 4


def test_bytes_like_inputs():
    _, data = make_file()
    for d in (bytearray(data), memoryview(data)):
        assert decode_vat(d).complete
    with pytest.raises(TypeError):
        decode_vat(data.hex())


# --------------------------------------------------------------------------- size


def test_exact_file_size_formula():
    for V in (2, 64, 1000, 4096, 16384):
        for schedule in SCHEDULES:
            _, data = make_file(V, schedule)
            b = bits_for_codebook(V)
            H = 7 + len(varint(V)) + len(varint(len(schedule))) + sum(len(varint(n)) for n in schedule)
            H += len(varint(len(schedule))) + 8 + 16
            expect = H + 2 + sum(math.ceil(n * b / 8) for n in schedule) + (len(schedule) - 1) + 4
            assert len(data) == expect
            assert vat_file_size(decode_vat(data).header) == expect


def test_sizes_for_the_vat_schedule():
    # Pinned numbers quoted in docs/vat-format.md.
    assert len(make_file(64)[1]) == 572  # 511 payload + 61 overhead
    assert len(make_file(4096)[1]) == 1084  # 1022 payload + 62 overhead


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("V", [64, 4096])
def test_truncation_at_every_scale_boundary(V):
    tokens, data = make_file(V)
    header = decode_vat(data).header
    bounds = scale_boundaries(header)
    assert bounds[-1] == len(data)
    for k, cut in enumerate(bounds[:-1], start=1):
        with pytest.warns(VatTruncatedWarning, match=f"decoded only {k} of 10 scales"):
            f = decode_vat(data[:cut])
        assert not f.complete and len(f.tokens) == k
        for a, b in zip(f.tokens, tokens):
            np.testing.assert_array_equal(a, b)


def test_truncation_at_every_byte():
    tokens, data = make_file(1000, (1, 4, 9, 16, 25))
    header = decode_vat(data).header
    bounds = scale_boundaries(header)
    data_start = bounds[0] - packed_size(1, 10) - 1
    for cut in range(len(data)):
        prefix = data[:cut]
        complete_scales = sum(1 for b in bounds if b <= cut)
        if complete_scales == 0:
            with pytest.raises(VatFormatError, match="truncated|magic|empty"):
                decode_vat(prefix)
            continue
        with pytest.warns(VatTruncatedWarning):
            f = decode_vat(prefix)
        assert not f.complete and len(f.tokens) == complete_scales  # mid-scale: previous scales
        for a, b in zip(f.tokens, tokens):
            np.testing.assert_array_equal(a, b)
    assert data_start > 40
    with pytest.raises(VatFormatError, match="truncated .vat header"):
        decode_vat(data[:20])
    with pytest.raises(VatFormatError, match="scale 0 incomplete"):
        decode_vat(data[: data_start + 2])


def test_max_scales_decodes_prefix_on_purpose():
    tokens, data = make_file(4096)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in (1, 3, 10, 99):
            f = decode_vat(data, max_scales=k)
            assert f.complete and len(f.tokens) == min(k, 10)
    with pytest.raises(ValueError):
        decode_vat(data, max_scales=0)
    # max_scales on a truncated file: the limit and the truncation both apply.
    cut = scale_boundaries(decode_vat(data).header)[4]
    assert len(decode_vat(data[:cut], max_scales=3).tokens) == 3
    with pytest.warns(VatTruncatedWarning):
        assert len(decode_vat(data[:cut], max_scales=8).tokens) == 5


# --------------------------------------------------------------------------- corruption


def test_every_single_bit_flip_is_rejected():
    _, data = make_file(1000, (1, 4, 9, 16))
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(VatFormatError):
            decode_vat(bytes(bad))


def test_payload_bit_flip_is_a_checksum_error():
    _, data = make_file(4096)
    header = decode_vat(data).header
    start = scale_boundaries(header)[0] - 3  # first byte of scale 0 (2 payload bytes + 1 check)
    for pos in (start, len(data) - 200, len(data) - 5, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(VatFormatError, match="checksum mismatch"):
            decode_vat(bytes(bad))


def test_header_check_catches_all_single_bit_errors_in_any_valid_header():
    # Longest valid header: 7 + 3 + 1 + 64*3 + 1 + 8 + 16 + 8 + 64*3 bytes.
    longest = 7 + 3 + 1 + 64 * 3 + 1 + 8 + 16 + 8 + 64 * 3
    assert longest < 600
    zero = bytes(600)
    base = zlib.crc32(zero)
    for i in range(600 * 8):
        flipped = bytearray(zero)
        flipped[i // 8] ^= 1 << (i % 8)
        assert (zlib.crc32(bytes(flipped)) ^ base) & 0xFFFF != 0


def test_crafted_builder_matches_encoder():
    zeros = [np.zeros(1, int), np.zeros(4, int)]
    data = encode_vat(zeros, model_fingerprint=FP, codebook_size=64, scale_sizes=(1, 4))
    assert craft() == data


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(magic=b"VAT4"), "bad magic"),
        (dict(magic=b"PK\x03\x04"), "bad magic"),
        (dict(version=2), "unsupported .vat format version 2"),
        (dict(version=0), "unsupported .vat format version 0"),
        (dict(flags=0x80), "unknown flag bits 0x80"),
        (dict(bits=0), "bits_per_token 0 inconsistent"),
        (dict(bits=17), "bits_per_token 17 inconsistent"),
        (dict(bits=7, V=64), "bits_per_token 7 inconsistent with codebook size 64 \\(needs 6\\)"),
        (dict(bits=11, V=4096), "inconsistent with codebook size 4096"),
        (dict(V=1, bits=1), "codebook size 1 out of range"),
        (dict(V=65537, bits=16), "codebook size 65537 out of range"),
        (dict(schedule=(1,) * 65), "number of scales 65 out of range"),
        (dict(schedule=(1, 0)), "scale 1 has 0 tokens"),
        (dict(schedule=(65537,), bits=6), "scale 0 has 65537 tokens"),
        (dict(schedule=(65536,) * 17, stored=1), "1114112 tokens in total"),
        (dict(stored=0), "number of stored scales 0 out of range"),
        (dict(stored=3), "number of stored scales 3 out of range"),
        (dict(transform=(math.nan, 0, 0, 1)), "center .* not finite"),
        (dict(transform=(0, 0, 0, math.inf)), "scale inf must be finite"),
        (dict(transform=(0, 0, 0, 0.0)), "must be finite and > 0"),
    ],
)
def test_invalid_fields_with_valid_checksums(kwargs, match):
    data = craft(**kwargs)
    with pytest.raises(VatFormatError, match=match):
        decode_vat(data)


def test_empty_and_tiny_inputs():
    with pytest.raises(VatFormatError, match="empty"):
        decode_vat(b"")
    with pytest.raises(VatFormatError, match="truncated .vat header"):
        decode_vat(b"VA")
    with pytest.raises(VatFormatError, match="bad magic"):
        decode_vat(b"\x89PNG\r\n")
    with pytest.raises(VatFormatError, match="truncated .vat header: version"):
        decode_vat(b"VAT3")


def test_crafted_huge_and_noncanonical_varints():
    base = b"VAT3" + bytes([1, 0, 6])
    with pytest.raises(VatFormatError, match="longer than 4 bytes"):
        decode_vat(base + b"\xff\xff\xff\xff\xff\xff\xff\x7f" + bytes(40))
    with pytest.raises(VatFormatError, match="non-canonical varint"):
        decode_vat(base + b"\xc0\x00" + bytes(40))
    # A huge scale count / size inside the 4-byte limit is caught by the caps.
    with pytest.raises(VatFormatError, match="number of scales 268435455"):
        decode_vat(base + b"\x40" + b"\xff\xff\xff\x7f" + bytes(40))
    with pytest.raises(VatFormatError, match="truncated .vat header: codebook size"):
        decode_vat(base + b"\xff\xff")


def test_token_index_out_of_range():
    V = 1000  # 10 bits: indices 1000..1023 are representable but invalid
    payloads = [pack_bits([999], 10), pack_bits([0, 1, 1023, 5], 10)]
    data = craft(bits=10, V=V, schedule=(1, 4), payloads=payloads)
    with pytest.raises(VatFormatError, match="scale 1: token index 1023 >= codebook size 1000"):
        decode_vat(data)


def test_nonzero_padding_rejected():
    data = craft(bits=6, V=64, schedule=(1, 4), payloads=[b"\xc0", bytes(3)])
    with pytest.raises(VatFormatError, match="scale 0: non-zero padding"):
        decode_vat(data)


def test_trailing_bytes_rejected():
    _, data = make_file()
    with pytest.raises(VatFormatError, match="1 unexpected trailing bytes"):
        decode_vat(data + b"\x00")


def test_header_checksum_mismatch():
    _, data = make_file()
    bad = bytearray(data)
    bad[30] ^= 0x01  # inside the model fingerprint
    with pytest.raises(VatFormatError, match="header checksum mismatch"):
        decode_vat(bytes(bad))


def test_oversized_input_rejected():
    with pytest.raises(VatFormatError, match="larger than any valid file"):
        decode_vat(b"VAT3" + bytes(MAX_FILE_BYTES))


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_mismatch_names_both():
    _, data = make_file()
    with pytest.raises(VatModelMismatch) as ei:
        decode_vat(data, expected_fingerprint=OTHER_FP)
    assert isinstance(ei.value, VatFormatError)
    msg = str(ei.value)
    assert FP.hex() in msg and OTHER_FP.hex() in msg
    assert ei.value.file_fingerprint == FP and ei.value.expected_fingerprint == OTHER_FP
    with pytest.raises(ValueError):
        decode_vat(data, expected_fingerprint=b"short")


# --------------------------------------------------------------------------- entropy container


def entropy_header(schedule=VAT_SCHEDULE, stored=None, gen=GEN_FP):
    return VatHeader(
        model_fingerprint=FP,
        codebook_size=4096,
        scale_sizes=schedule,
        center=(1.0, 2.0, 3.0),
        scale=0.5,
        coding="entropy",
        generator_fingerprint=gen,
        num_scales_stored=len(schedule) if stored is None else stored,
    )


def test_entropy_payload_roundtrip_and_truncation():
    rng = np.random.default_rng(3)
    payloads = [rng.bytes(int(n)) for n in (0, 3, 7, 10, 15, 20, 40, 70, 100, 150)]
    h = entropy_header()
    data = encode_vat_payloads(h, payloads)
    assert len(data) == vat_file_size(h, [len(p) for p in payloads])
    p = decode_vat_payloads(data, expected_fingerprint=FP, expected_generator_fingerprint=GEN_FP)
    assert p.complete and p.payloads == payloads and p.header == h
    with pytest.raises(VatFormatError, match="'entropy' coding"):
        decode_vat(data)
    with pytest.raises(VatModelMismatch, match=f"generator fingerprint {GEN_FP.hex()}.*{OTHER_FP.hex()}"):
        decode_vat_payloads(data, expected_generator_fingerprint=OTHER_FP)
    bounds = scale_boundaries(h, [len(x) for x in payloads])
    for k, cut in enumerate(bounds[:-1], start=1):
        with pytest.warns(VatTruncatedWarning):
            t = decode_vat_payloads(data[:cut])
        assert not t.complete and t.payloads == payloads[:k]
    bad = bytearray(data)
    bad[-30] ^= 4
    with pytest.raises(VatFormatError, match="checksum mismatch"):
        decode_vat_payloads(bytes(bad))


def test_entropy_without_generator_and_prefix():
    h = entropy_header(stored=2, gen=None)
    data = encode_vat_payloads(h, [b"a", b"bc"])
    p = decode_vat_payloads(data)
    assert p.payloads == [b"a", b"bc"] and p.header.generator_fingerprint is None
    with pytest.raises(VatModelMismatch, match=r"\(none\)"):
        decode_vat_payloads(data, expected_generator_fingerprint=GEN_FP)


def test_entropy_length_cap():
    h = entropy_header(schedule=(1,))
    cap = max_entropy_payload_bytes(1)
    encode_vat_payloads(h, [bytes(cap)])
    with pytest.raises(ValueError, match="exceeds the cap"):
        encode_vat_payloads(h, [bytes(cap + 1)])
    data = craft(flags=1, bits=12, V=4096, schedule=(1,), lengths=[cap + 1], payloads=[bytes(cap + 1)])
    with pytest.raises(VatFormatError, match="exceeds the cap"):
        decode_vat_payloads(data)
    # A claimed length larger than the data present is a truncation, not an allocation.
    data = craft(flags=1, bits=12, V=4096, schedule=(1, 1), lengths=[cap, cap], payloads=[bytes(cap)])
    with pytest.warns(VatTruncatedWarning, match="decoded only 1 of 2"):
        p = decode_vat_payloads(data)
    assert p.payloads == [bytes(cap)] and not p.complete


def test_raw_payload_path_matches_packing():
    tokens, data = make_file(4096)
    p = decode_vat_payloads(data)
    assert p.payloads == [pack_bits(t, 12) for t in tokens]
    h = p.header
    assert encode_vat_payloads(h, p.payloads) == data
    with pytest.raises(ValueError, match="raw payload must be"):
        encode_vat_payloads(h, [b"\x00"] + p.payloads[1:])
    with pytest.raises(ValueError, match="num_scales_stored"):
        encode_vat_payloads(h, p.payloads[:3])


# --------------------------------------------------------------------------- encoder validation


@pytest.mark.parametrize(
    "change, exc",
    [
        (dict(model_fingerprint=b"1234567"), ValueError),
        (dict(codebook_size=1), ValueError),
        (dict(codebook_size=70000), ValueError),
        (dict(scale_sizes=(1, 5)), ValueError),
        (dict(center=(0, 0)), ValueError),
        (dict(center=(math.nan, 0, 0)), ValueError),
        (dict(scale=-1.0), ValueError),
        (dict(scale=1e300), ValueError),
    ],
)
def test_encode_rejects_bad_arguments(change, exc):
    kw = dict(model_fingerprint=FP, codebook_size=64, scale_sizes=(1, 4), center=(0, 0, 0), scale=1.0)
    kw.update(change)
    with pytest.raises(exc):
        encode_vat([np.zeros(1, int), np.zeros(4, int)], **kw)


def test_encode_rejects_bad_tokens():
    kw = dict(model_fingerprint=FP, codebook_size=64, scale_sizes=(1, 4), center=(0, 0, 0), scale=1.0)
    with pytest.raises(ValueError, match="token index 64 outside"):
        encode_vat([np.zeros(1, int), np.array([0, 64, 1, 2])], **kw)
    with pytest.raises(ValueError, match="token index -1 outside"):
        encode_vat([np.array([-1]), np.zeros(4, int)], **kw)
    with pytest.raises(TypeError):
        encode_vat([np.zeros(1), np.zeros(4)], **kw)
    with pytest.raises(ValueError, match="expected 4 tokens"):
        encode_vat([np.zeros(1, int), np.zeros(3, int)], **kw)
    with pytest.raises(ValueError):
        encode_vat([], **kw)
    with pytest.raises(ValueError):
        encode_vat([np.zeros(1, int)] * 3, **kw)


# --------------------------------------------------------------------------- files


def write_kwargs():
    return dict(model_fingerprint=FP, codebook_size=64, scale_sizes=VAT_SCHEDULE, center=(0, 0, 0), scale=1.0)


def test_write_and_read(tmp_path):
    tokens = random_tokens(VAT_SCHEDULE, 64)
    path = tmp_path / "shape.vat"
    n = write_vat(path, tokens, **write_kwargs())
    assert path.stat().st_size == n == 572
    f = read_vat(path, expected_fingerprint=FP)
    assert f.complete and all((a == b).all() for a, b in zip(f.tokens, tokens))
    assert read_vat(str(path), max_scales=2).tokens[1].shape == (4,)
    assert read_vat_payloads(path).payloads[0] == pack_bits(tokens[0], 6)
    assert sorted(os.listdir(tmp_path)) == ["shape.vat"]
    h = entropy_header(schedule=(1, 4), stored=2)
    write_vat_payloads(tmp_path / "e.vat", h, [b"x", b"yz"])
    assert read_vat_payloads(tmp_path / "e.vat").payloads == [b"x", b"yz"]


def test_write_refuses_protected_paths(tmp_path):
    src = tmp_path / "input.obj"
    src.write_bytes(b"mesh")
    tokens = random_tokens(VAT_SCHEDULE, 64)
    with pytest.raises(ValueError, match="refusing to overwrite input file"):
        write_vat(src, tokens, protect=[src], **write_kwargs())
    with pytest.raises(ValueError, match="refusing"):
        write_vat(tmp_path / "sub" / ".." / "input.obj", tokens, protect=[str(src)], **write_kwargs())
    link = tmp_path / "link.vat"
    link.symlink_to(src)
    with pytest.raises(ValueError, match="refusing"):
        write_vat(link, tokens, protect=[src], **write_kwargs())
    hard = tmp_path / "hard.vat"
    os.link(src, hard)
    with pytest.raises(ValueError, match="refusing"):
        write_vat(hard, tokens, protect=[src], **write_kwargs())
    assert src.read_bytes() == b"mesh"
    write_vat(tmp_path / "out.vat", tokens, protect=[src], **write_kwargs())  # other paths are fine


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
@pytest.mark.parametrize("existing", [False, True])
def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch, fail_at, existing):
    path = tmp_path / "shape.vat"
    if existing:
        path.write_bytes(b"old content")
    tokens = random_tokens(VAT_SCHEDULE, 64)

    if fail_at == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(vatfile.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    elif fail_at == "fsync":
        monkeypatch.setattr(vatfile.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    else:
        monkeypatch.setattr(vatfile.os, "replace", lambda a, b: (_ for _ in ()).throw(KeyboardInterrupt()))

    with pytest.raises((OSError, KeyboardInterrupt)):
        write_vat(path, tokens, **write_kwargs())
    names = os.listdir(tmp_path)
    if existing:
        assert names == ["shape.vat"] and path.read_bytes() == b"old content"
    else:
        assert names == []


def test_read_refuses_huge_file(tmp_path):
    path = tmp_path / "big.vat"
    with open(path, "wb") as fh:
        fh.write(b"VAT3")
        fh.truncate(MAX_FILE_BYTES + 10)
    with pytest.raises(VatFormatError, match="larger than any valid"):
        read_vat(path)


def test_docs_describe_the_layout():
    doc = Path(__file__).resolve().parents[1] / "docs" / "vat-format.md"
    if not doc.exists():
        pytest.skip("docs not present")
    text = doc.read_text()
    for needle in ("VAT3", "572 B", "1084 B", "crc32(file[0:H]) & 0xFFFF"):
        assert needle in text


def test_truncated_file_prefix_is_verified():
    """Damage inside a truncated file is caught by the per-scale check bytes."""
    tokens, data = make_file(64)
    header = decode_vat(data).header
    bounds = scale_boundaries(header)
    cut = data[: bounds[3] + 10]  # 4 complete scales, then part of scale 4
    data_start = bounds[0] - packed_size(1, 6) - 1
    bad = bytearray(cut)
    bad[bounds[1] + 2] ^= 0x04  # inside scale 2
    with pytest.raises(VatFormatError, match="checksum mismatch in scale 2"):
        decode_vat(bytes(bad))
    missed = []
    for i in range(bounds[3] * 8):
        bad = bytearray(cut)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", VatTruncatedWarning)
                decode_vat(bytes(bad))
        except VatFormatError:
            continue
        missed.append(i // 8)
    # The header (2-byte check) catches every single-bit error; a flip in scale k is
    # caught by the 8-bit checks of scales k..3, so only rare misses remain there.
    assert all(pos >= data_start for pos in missed)
    assert len(missed) <= 0.02 * bounds[3] * 8
