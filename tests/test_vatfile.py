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
    crc8,
    implicit_scale_sizes,
    schedule_kind,
    vat_file_size,
    vat_overhead,
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


def zigzag(q: int) -> int:
    return 2 * q if q >= 0 else -2 * q - 1


def craft(
    *,
    magic=b"VT",
    version=2,
    extra_flags=0,
    bits=6,
    V=None,
    schedule=(1, 4),
    kind="2d",
    side=None,
    latents=None,
    stored=None,
    prefix=None,
    fp=FP[:4],
    scale=1.0,
    center_q=(0, 0, 0),
    center_f64=None,
    gen_fp=None,
    lengths=None,
    payloads=None,
    token_extra=0,
    raw_fields=None,
    orientation=None,
) -> bytes:
    """Build a file with *valid checksums* around arbitrary (possibly invalid) fields.

    ``kind``: "2d" (writes ``side``, default sqrt of the last size), "1d" (writes ``latents``,
    default the last size) or "explicit" (writes the list); ``schedule`` sizes the default
    payloads.  ``V`` is written explicitly when given; ``lengths`` makes it entropy-coded.
    """
    stored_n = len(schedule) if stored is None else stored
    prefix = (stored is not None) if prefix is None else prefix
    if raw_fields is None:
        flags = (1 if lengths is not None else 0) | (2 if gen_fp is not None else 0) | (4 if prefix else 0)
        flags |= (8 if center_f64 is not None else 0) | (0x10 if orientation is not None else 0) | extra_flags
        code = {"2d": 0, "1d": 1, "explicit": 2}.get(kind, kind)
        h = bytearray(magic)
        h.append(version << 5 | flags)
        h.append(((bits - 1) & 0x0F) | code << 4 | (0x40 if V is not None else 0) | token_extra)
        if V is not None:
            h += varint(V)
        if kind == "2d":
            h += varint(math.isqrt(schedule[-1]) if side is None else side)
        elif kind == "1d":
            h += varint(schedule[-1] if latents is None else latents)
        else:
            h += varint(len(schedule)) + b"".join(varint(n) for n in schedule)
        if prefix:
            h += varint(stored_n)
        h += fp
        if gen_fp is not None:
            h += gen_fp
        h += struct.pack("<f", scale)
        if center_f64 is not None:
            h += struct.pack("<3d", *center_f64)
        else:
            h += b"".join(varint(zigzag(q)) for q in center_q)
        if orientation is not None:
            h.append(orientation)
        if lengths is not None:
            h += b"".join(varint(n) for n in lengths)
    else:
        h = bytearray(raw_fields)
    if payloads is None:
        payloads = [bytes(packed_size(n, max(1, min(bits, 16)))) for n in schedule[:stored_n]]
    out = bytearray(h)
    out.append(crc8_reference(bytes(h)))
    for k, p in enumerate(payloads):
        out += p
        crc = zlib.crc32(out)
        out += struct.pack("<I", crc) if k == stored_n - 1 else bytes([crc & 0xFF])
    return bytes(out)


def crc8_reference(data: bytes) -> int:
    """CRC-8/AUTOSAR bit by bit (poly 0x2F, init 0xFF, xorout 0xFF), independent of the table."""
    c = 0xFF
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = ((c << 1) ^ 0x2F) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c ^ 0xFF


def scale_boundaries(header: VatHeader, lengths=None) -> list[int]:
    """File offsets just after the check of each stored scale."""
    from vat3d.codec.vatfile import _header_fields

    if lengths is None:
        lengths = [packed_size(n, header.bits_per_token) for n in header.scale_sizes[: header.num_scales_stored]]
        hlen = len(_header_fields(header))
    else:
        hlen = len(_header_fields(header, lengths))
    pos = hlen + 1
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
    assert h.model_fingerprint == FP[:4] and h.coding == "raw" and h.generator_fingerprint is None
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


def test_header_roundtrip_is_exact_with_quantised_center():
    h = VatHeader(model_fingerprint=FP, codebook_size=1000, scale_sizes=(1, 4), center=(0.1, 0.2, 0.3), scale=0.7)
    s = float(np.float32(0.7))
    assert h.scale == s and h.model_fingerprint == FP[:4]
    assert h.center == tuple(round(c * s * 8192) / (s * 8192) for c in (0.1, 0.2, 0.3))
    assert h.center_quantized and h.schedule_mode == "2d"
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
    assert VatHeader(**{**h.__dict__}) == h  # normalising twice changes nothing


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


def expected_size(V, schedule, center=(0.25, -0.5, 1.0), scale=2.0):
    """File size by docs/vat-format.md, computed independently of the writer."""
    b = bits_for_codebook(V)
    H = 2 + 1 + 1 + (len(varint(V)) if V != 1 << b else 0)
    side = math.isqrt(schedule[-1])
    if tuple(schedule) == tuple(n * n for n in IMPLICIT_2D.get(side, ())):
        H += len(varint(side))
    else:
        H += len(varint(len(schedule))) + sum(len(varint(n)) for n in schedule)
    H += 4 + 4 + sum(len(varint(zigzag(round(c * scale * 8192)))) for c in center) + 1
    return H + sum(math.ceil(n * b / 8) for n in schedule) + (len(schedule) - 1) + 4


IMPLICIT_2D = {1: (1,), 16: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)}


def test_exact_file_size_formula():
    for V in (2, 64, 1000, 4096, 16384):
        for schedule in SCHEDULES:
            _, data = make_file(V, schedule)
            assert len(data) == expected_size(V, schedule)
            assert vat_file_size(decode_vat(data).header) == len(data)


def test_sizes_for_the_vat_schedule():
    # Pinned numbers quoted in docs/vat-format.md (centre (0, 0, 0): 1 byte per component).
    assert len(encode_vat(random_tokens(VAT_SCHEDULE, 64), **write_kwargs())) == 541  # 511 payload + 30
    assert len(make_file(64)[1]) == 545  # a centre at 0.5, 1 and 2 box half-widths: 2 + 2 + 3 bytes
    assert len(make_file(4096)[1]) == 1056  # 1022 payload + 34 overhead


# The schedules of docs/vat-format.md's size table: (latent grid side, V) -> (payload, overhead).
SIZE_TABLE = {(8, 1024): (196, 30), (8, 4096): (234, 30), (8, 16384): (272, 30), (12, 1024): (469, 31),
              (16, 64): (511, 33)}


@pytest.mark.parametrize("side,V", list(SIZE_TABLE))
def test_overhead_table(side, V):
    """Overhead = every byte that is not token payload (header fields and all check bytes)."""
    schedule = implicit_scale_sizes(side * side)
    payload, overhead = SIZE_TABLE[side, V]
    rng = np.random.default_rng(side)
    for _ in range(20):  # centres whose components take 2 bytes: the origin inside the normalised box
        scale = float(rng.uniform(0.01, 100))
        center = tuple(rng.uniform(-0.99, 0.99, 3) / scale)
        center = tuple(c if abs(c * scale * 8192) >= 64 else 0.5 / scale for c in center)
        h = VatHeader(FP, V, schedule, center=center, scale=scale)
        data = encode_vat(random_tokens(schedule, V), model_fingerprint=FP, codebook_size=V, scale_sizes=schedule,
                          center=center, scale=scale)
        assert sum(packed_size(n, bits_for_codebook(V)) for n in schedule) == payload
        assert len(data) - payload == vat_overhead(h) == overhead
    if side == 8:
        assert overhead <= 32
        # even a centre up to 128 box half-widths off in two axes stays within 32 bytes
        h = VatHeader(FP, V, schedule, center=(100.0, -100.0, 0.5), scale=1.0)
        assert vat_overhead(h) == 32


def test_entropy_files_are_smaller():
    schedule = implicit_scale_sizes(64)
    raw = VatHeader(FP, 1024, schedule, center=(0.5, 0.5, 0.5))
    ent = VatHeader(FP, 1024, schedule, center=(0.5, 0.5, 0.5), coding="entropy", generator_fingerprint=GEN_FP)
    lengths = [0, 2, 6, 12, 20, 30, 55]  # < 128 bytes each: 1-byte length fields
    assert vat_overhead(ent, lengths) == vat_overhead(raw) + 4 + len(schedule) == 41
    assert vat_file_size(ent, lengths) < vat_file_size(raw)


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
    assert data_start == 23  # 2 + 1 + 1 + V (2) + side (1) + 4 + 4 + centre (2 + 2 + 3) + check (1)
    with pytest.raises(VatFormatError, match="truncated .vat header"):
        decode_vat(data[:10])
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


def test_crc8_is_crc8_autosar():
    assert crc8(b"123456789") == 0xDF  # the catalogued check value
    rng = np.random.default_rng(0)
    for n in (0, 1, 5, 20, 431):
        data = rng.bytes(n)
        assert crc8(data) == crc8_reference(data)


def test_header_check_catches_all_single_bit_errors_in_any_valid_header():
    # Longest valid header: 2 + 1 + 1 + V 3 + S 1 + 64 sizes * 3 + K 1 + 4 + 4 + 4 + 24 (float64 centre)
    # + 64 lengths * 3 = 428 bytes. A CRC-8 detects every single-bit error at any length and every
    # burst of up to 8 bits; check it on a longest and on a typical (20-byte) header.
    longest = 2 + 1 + 1 + 3 + 1 + 64 * 3 + 1 + 4 + 4 + 4 + 24 + 64 * 3
    rng = np.random.default_rng(1)
    for n in (longest, 20):
        header = bytearray(rng.bytes(n))
        base = crc8(header)
        for i in range(n * 8):
            header[i // 8] ^= 1 << (i % 8)
            assert crc8(header) != base
            header[i // 8] ^= 1 << (i % 8)
    header = bytearray(rng.bytes(20))
    base = int.from_bytes(header, "big")  # the CRC reads each byte MSB first: bits in stream order
    for burst in range(1, 256):
        for shift in range(20 * 8 - 8):
            flipped = (base ^ (burst << shift)).to_bytes(20, "big")
            assert crc8(flipped) != crc8(header)


def test_crafted_builder_matches_encoder():
    zeros = [np.zeros(1, int), np.zeros(4, int)]
    data = encode_vat(zeros, model_fingerprint=FP, codebook_size=64, scale_sizes=(1, 4))
    assert craft() == data
    turned = encode_vat(zeros, model_fingerprint=FP, codebook_size=64, scale_sizes=(1, 4), orientation=5)
    assert craft(orientation=5) == turned and len(turned) == len(data) + 1


@pytest.mark.parametrize("orientation", [0, 1, 23])
def test_orientation_round_trips_in_one_byte_only_when_turned(orientation):
    tokens = random_tokens(VAT_SCHEDULE, 1024)
    kw = dict(model_fingerprint=FP, codebook_size=1024, scale_sizes=VAT_SCHEDULE, center=(0.1, -2.0, 3.0), scale=0.5)
    plain, turned = encode_vat(tokens, **kw), encode_vat(tokens, **kw, orientation=orientation)
    assert len(turned) == len(plain) + (orientation != 0)
    assert (plain == turned) == (orientation == 0)
    vat = decode_vat(turned)
    assert vat.header.orientation == orientation and vat.complete
    assert all(np.array_equal(a, b) for a, b in zip(vat.tokens, tokens))
    assert decode_vat(plain).header.orientation == 0
    with pytest.raises(ValueError, match="orientation 24 out of range"):
        encode_vat(tokens, **kw, orientation=24)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(magic=b"VX"), "bad magic"),
        (dict(magic=b"PK\x03\x04"), "bad magic"),
        (dict(version=4), "unsupported .vat format version 4 .*reads versions 2, 3; the file is from a newer"),
        (dict(version=3), "format version 3 is for entropy-coded files"),  # a raw file cannot claim it
        (dict(version=7), "unsupported .vat format version 7"),
        (dict(version=1), "unsupported .vat format version 1"),
        (dict(version=0), "unsupported .vat format version 0"),
        (dict(orientation=0), "orientation 0 out of range \\[1, 23\\] \\(orientation flag set\\)"),
        (dict(orientation=24), "orientation 24 out of range"),
        (dict(orientation=255), "orientation 255 out of range"),
        (dict(token_extra=0x80), "reserved bit 0x80"),
        (dict(kind=3), "unknown schedule kind 3"),
        (dict(bits=7, V=64), "bits_per_token 7 inconsistent with codebook size 64 \\(needs 6\\)"),
        (dict(bits=11, V=4096), "inconsistent with codebook size 4096"),
        (dict(bits=12, V=4096), "codebook size 4096 = 2\\*\\*12 stored explicitly: non-canonical"),
        (dict(V=1, bits=1), "codebook size 1 out of range"),
        (dict(V=65537, bits=16), "codebook size 65537 out of range"),
        (dict(kind="explicit", schedule=(1,) * 65), "number of scales 65 out of range"),
        (dict(kind="explicit", schedule=(1, 0)), "scale 1 has 0 tokens"),
        (dict(kind="explicit", schedule=(65537,), bits=6), "scale 0 has 65537 tokens"),
        (dict(kind="explicit", schedule=(65536,) * 17, stored=1), "1114112 tokens in total"),
        (dict(kind="explicit", schedule=(1, 4)), "explicit schedule \\(1, 4\\) is the implicit 2d .*non-canonical"),
        (dict(kind="explicit", schedule=(1, 2, 3)), "explicit schedule \\(1, 2, 3\\) is the implicit 1d"),
        (dict(side=0), "latent grid side 0 out of range \\[1, 256\\]"),
        (dict(side=257), "latent grid side 257 out of range"),
        (dict(kind="1d", latents=0), "number of latents 0 out of range"),
        (dict(kind="1d", latents=65537), "number of latents 65537 out of range"),
        (dict(kind="1d", schedule=(1,)), "implicit 1d schedule of 1 latent is the 2d one: non-canonical"),
        (dict(stored=0), "number of stored scales 0 out of range \\[1, 1\\]"),
        (dict(stored=2), "number of stored scales 2 out of range \\[1, 1\\] \\(prefix flag set\\)"),
        (dict(center_f64=(math.nan, 0, 0)), "center .* not finite"),
        (dict(center_f64=(0, 0, math.inf)), "center .* not finite"),
        (dict(center_f64=(1.0, 2.0, 3.0)), "float64 center .* fits the quantised form: non-canonical"),
        (dict(center_q=(0, -(1 << 34), 0)), "quantised center .* out of range"),
        (dict(center_q=(0, 1 << 34, 0)), "varint for center y longer than 5 bytes"),
        (dict(scale=math.inf), "scale inf must be finite"),
        (dict(scale=math.nan), "scale nan must be finite"),
        (dict(scale=0.0), "must be finite and > 0"),
        (dict(scale=-1.0), "must be finite and > 0"),
    ],
)
def test_invalid_fields_with_valid_checksums(kwargs, match):
    data = craft(**kwargs)
    with pytest.raises(VatFormatError, match=match):
        decode_vat(data)


def test_empty_and_tiny_inputs():
    with pytest.raises(VatFormatError, match="empty"):
        decode_vat(b"")
    with pytest.raises(VatFormatError, match="truncated .vat header: magic"):
        decode_vat(b"V")
    with pytest.raises(VatFormatError, match="truncated .vat header: version"):
        decode_vat(b"VT")
    with pytest.raises(VatFormatError, match="truncated .vat header: bits per token"):
        decode_vat(b"VT\x40")
    with pytest.raises(VatFormatError, match="bad magic"):
        decode_vat(b"VA")
    with pytest.raises(VatFormatError, match="bad magic"):
        decode_vat(b"\x89PNG\r\n")


def v1_file() -> bytes:
    """A valid version-1 file (vat3d 0.1 layout), written by hand."""
    h = bytearray(b"VAT3") + bytes([1, 0, 6]) + varint(64) + varint(2) + varint(1) + varint(4) + varint(2)
    h += FP + struct.pack("<4f", 0, 0, 0, 1)
    out = h + struct.pack("<H", zlib.crc32(h) & 0xFFFF) + bytes(1)
    out += bytes([zlib.crc32(out) & 0xFF]) + bytes(3)
    return bytes(out + struct.pack("<I", zlib.crc32(out)))


def test_version_1_file_is_named_as_such(tmp_path):
    message = r"this is a version-1 \.vat file \(vat3d 0\.1\); this vat3d reads version 2: re-encode the mesh"
    for data in (v1_file(), v1_file()[:5], v1_file()[:20]):
        for decode in (decode_vat, decode_vat_payloads, decode_vat_header):
            with pytest.raises(VatFormatError, match=message):
                decode(data)
    (tmp_path / "old.vat").write_bytes(v1_file())
    with pytest.raises(VatFormatError, match=message):
        read_vat(tmp_path / "old.vat")
    with pytest.raises(VatFormatError, match="old-layout .vat file .*version 9.*reads version 2"):
        decode_vat(b"VAT3\x09" + bytes(40))
    with pytest.raises(VatFormatError, match="old-layout .vat file .*truncated before its version byte"):
        decode_vat(b"VAT3")


def test_crafted_huge_and_noncanonical_varints():
    base = b"VT\x40" + bytes([5 | 0x40])  # b = 6, explicit V follows
    with pytest.raises(VatFormatError, match="longer than 4 bytes"):
        decode_vat(base + b"\xff\xff\xff\xff\xff\xff\xff\x7f" + bytes(40))
    with pytest.raises(VatFormatError, match="non-canonical varint"):
        decode_vat(base + b"\xc0\x00" + bytes(40))
    with pytest.raises(VatFormatError, match="truncated .vat header: codebook size"):
        decode_vat(base + b"\xff\xff")
    # A huge scale count / size inside the 4-byte limit is caught by the caps.
    explicit = b"VT\x40" + bytes([5 | 0x20])
    with pytest.raises(VatFormatError, match="number of scales 268435455"):
        decode_vat(explicit + b"\xff\xff\xff\x7f" + bytes(40))
    # Centre varints may take 5 bytes, not 6.
    fields = b"VT\x40" + bytes([5]) + varint(2) + FP[:4] + struct.pack("<f", 1.0)
    with pytest.raises(VatFormatError, match="varint for center x longer than 5 bytes"):
        decode_vat(fields + b"\xff" * 6 + bytes(40))


def test_token_index_out_of_range():
    V = 1000  # 10 bits: indices 1000..1023 are representable but invalid
    payloads = [pack_bits([999], 10), pack_bits([0, 1, 1023, 5], 10)]
    data = craft(bits=10, V=V, schedule=(1, 4), payloads=payloads)
    with pytest.raises(VatFormatError, match="scale 1: token index 1023 >= codebook size 1000"):
        decode_vat(data)


def test_nonzero_padding_rejected():
    data = craft(bits=6, schedule=(1, 4), payloads=[b"\xc0", bytes(3)])
    with pytest.raises(VatFormatError, match="scale 0: non-zero padding"):
        decode_vat(data)


def test_trailing_bytes_rejected():
    _, data = make_file()
    with pytest.raises(VatFormatError, match="1 unexpected trailing bytes"):
        decode_vat(data + b"\x00")


def test_header_checksum_mismatch():
    _, data = make_file()
    bad = bytearray(data)
    bad[6] ^= 0x01  # inside the model fingerprint (bytes 5-8)
    with pytest.raises(VatFormatError, match="header checksum mismatch"):
        decode_vat(bytes(bad))


def test_oversized_input_rejected():
    with pytest.raises(VatFormatError, match="larger than any valid file"):
        decode_vat(b"VT" + bytes(MAX_FILE_BYTES))


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_mismatch_names_both():
    _, data = make_file()
    with pytest.raises(VatModelMismatch) as ei:
        decode_vat(data, expected_fingerprint=OTHER_FP)
    assert isinstance(ei.value, VatFormatError)
    msg = str(ei.value)
    assert FP[:4].hex() in msg and OTHER_FP.hex() in msg and "keeps the first 4 bytes" in msg
    assert ei.value.file_fingerprint == FP[:4] and ei.value.expected_fingerprint == OTHER_FP
    # the file keeps 4 bytes: a fingerprint that agrees on them matches
    assert decode_vat(data, expected_fingerprint=FP[:4] + b"\0\0\0\0").complete
    assert decode_vat(data, expected_fingerprint=FP[:4]).complete
    with pytest.raises(VatModelMismatch):
        decode_vat(data, expected_fingerprint=FP[:3] + b"\0" + FP[4:])
    with pytest.raises(ValueError):
        decode_vat(data, expected_fingerprint=b"abc")


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
    with pytest.raises(VatModelMismatch, match=f"generator fingerprint {GEN_FP[:4].hex()}.*{OTHER_FP.hex()}"):
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
    data = craft(bits=12, schedule=(1,), lengths=[cap + 1], payloads=[bytes(cap + 1)])
    with pytest.raises(VatFormatError, match="exceeds the cap"):
        decode_vat_payloads(data)
    # A claimed length larger than the data present is a truncation, not an allocation.
    data = craft(bits=12, kind="explicit", schedule=(1, 1), lengths=[cap, cap], payloads=[bytes(cap)])
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
        (dict(model_fingerprint=b"123"), ValueError),
        (dict(codebook_size=1), ValueError),
        (dict(codebook_size=70000), ValueError),
        (dict(scale_sizes=(1, 5)), ValueError),
        (dict(center=(0, 0)), ValueError),
        (dict(center=(math.nan, 0, 0)), ValueError),
        (dict(scale=-1.0), ValueError),
        (dict(scale=1e300), ValueError),
        (dict(scale=0.0), ValueError),
        (dict(scale=1e-50), ValueError),  # 0 as a float32
        (dict(scale=math.nan), ValueError),
        (dict(center=(0, math.inf, 0)), ValueError),
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
    assert path.stat().st_size == n == 541
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

        monkeypatch.setattr(vatfile.os, "fdopen", lambda fd, mode, **kw: HalfWriter(real_fdopen(fd, mode, **kw)))
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
        fh.write(b"VT")
        fh.truncate(MAX_FILE_BYTES + 10)
    with pytest.raises(VatFormatError, match="larger than any valid"):
        read_vat(path)


def test_docs_describe_the_layout():
    doc = Path(__file__).resolve().parents[1] / "docs" / "vat-format.md"
    if not doc.exists():
        pytest.skip("docs not present")
    text = doc.read_text()
    for needle in ('b"VT"', "541 B", "version-1", "crc8(file[0:H])", "2^-14", "**30 B**"):
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


# --------------------------------------------------------------------------- centre quantisation


@pytest.mark.parametrize("scale", [1.0, 0.95 / 3, 2.0**-10, 1234.5, 1e-6, 3e30])
def test_center_quantisation_bound(scale):
    """The stored centre is at most 2**-14 box units off (1/128 of a 256^3 voxel of the [-1, 1] box)."""
    rng = np.random.default_rng(int(scale * 1000) % 2**32)
    centers = [(0.0, 0.0, 0.0), (1e4, -1e4, 3.3), (-0.123, -7.5, -1e3), (-1e4, -1e4, -1e4)]
    centers += [tuple(rng.normal(size=3) * 10.0**k / scale) for k in range(-3, 8) for _ in range(5)]
    bound = 2.0**-14 + 2.0**-30  # + float64 rounding
    for center in centers:
        h = VatHeader(FP, 64, (1, 4), center=center, scale=scale)
        s = h.scale
        data = encode_vat([np.zeros(1, int), np.zeros(4, int)], model_fingerprint=FP, codebook_size=64,
                          scale_sizes=(1, 4), center=center, scale=scale)
        assert decode_vat(data).header.center == h.center  # exact round trip of what is stored
        far = max(abs(c) * s for c in center)
        if far < 2.0**21 - 1:  # within 2**21 half-widths of the origin: quantised
            assert h.center_quantized
            assert max(abs(c - q) * s for c, q in zip(center, h.center)) <= bound, center
        elif far >= 2.0**21:  # farther: stored exactly as float64
            assert not h.center_quantized and h.center == tuple(map(float, center))
            assert bool(data[2] & 0x08)


def test_center_field_sizes():
    scale = 0.5
    for c_box, size in [(0.0, 1), (2.0**-8, 1), (0.99, 2), (-0.99, 2), (100.0, 3), (1e4, 4), (-1e4, 4), (2e6, 5)]:
        h = VatHeader(FP, 64, (1, 4), center=(c_box / scale, 0.0, 0.0), scale=scale)
        assert vat_overhead(h) == 2 + 1 + 1 + 1 + 4 + 4 + size + 1 + 1 + 1 + 1 + 4, c_box
    h = VatHeader(FP, 64, (1, 4), center=(1e7, 0.0, 0.0), scale=scale)
    assert not h.center_quantized and vat_overhead(h) == 2 + 1 + 1 + 1 + 4 + 4 + 24 + 1 + 1 + 4


def test_bad_scale_and_center_rejected():
    for scale in (0.0, -0.0, -2.0, math.inf, -math.inf, math.nan, 1e-46, 1e39):
        with pytest.raises(ValueError, match="scale"):
            VatHeader(FP, 64, (1, 4), scale=scale).validate()
    for center in ((math.nan, 0, 0), (0, math.inf, 0), (0, 0, -math.inf)):
        with pytest.raises(ValueError, match="not finite"):
            VatHeader(FP, 64, (1, 4), center=center).validate()
    # a denormal float32 scale is valid, and its quantised centre round-trips
    h = VatHeader(FP, 64, (1, 4), center=(1e40, 0, 0), scale=1e-44)
    h.validate()
    data = encode_vat([np.zeros(1, int), np.zeros(4, int)], model_fingerprint=FP, codebook_size=64,
                      scale_sizes=(1, 4), center=h.center, scale=h.scale)
    assert decode_vat(data).header == h


# --------------------------------------------------------------------------- implicit schedules


def test_implicit_schedules():
    assert implicit_scale_sizes(64) == (1, 4, 9, 16, 25, 36, 64)
    assert implicit_scale_sizes(144) == (1, 4, 9, 16, 36, 64, 100, 144)
    assert implicit_scale_sizes(256) == VAT_SCHEDULE
    assert implicit_scale_sizes(1) == (1,) and implicit_scale_sizes(1, "1d") == (1,)
    assert implicit_scale_sizes(100, "1d") == (1, 2, 4, 8, 16, 32, 64, 100)
    assert implicit_scale_sizes(64, "1d") == (1, 2, 4, 8, 16, 32, 64)
    with pytest.raises(ValueError, match="square"):
        implicit_scale_sizes(50)
    with pytest.raises(ValueError, match="mode"):
        implicit_scale_sizes(64, "3d")
    assert schedule_kind(VAT_SCHEDULE) == "2d" and schedule_kind((1, 2, 4, 5)) == "1d"
    assert schedule_kind((1,)) == "2d" and schedule_kind((3, 7, 2)) is None and schedule_kind(()) is None
    assert schedule_kind((65536 * 4,)) is None


def test_implicit_rule_is_robust_to_float_rounding():
    """The rule rounds side ** (i / 7): no value comes near a .5 tie (which libm ulps could flip)."""
    margin = min(abs((side ** (i / 7)) % 1 - 0.5) for side in range(1, 257) for i in range(8))
    assert margin > 1e-3


@pytest.mark.parametrize("mode", ["2d", "1d"])
def test_implicit_schedule_files_round_trip(mode):
    for m in ([1, 4, 9, 16, 25, 64, 100, 144, 256, 1024, 65536] if mode == "2d" else [1, 2, 3, 64, 100, 65536]):
        sizes = implicit_scale_sizes(m, mode)
        h = VatHeader(FP, 2, sizes, num_scales_stored=1)
        data = encode_vat([np.zeros(1, int)], model_fingerprint=FP, codebook_size=2, scale_sizes=sizes)
        g = decode_vat(data)
        assert g.header == h and g.header.scale_sizes == sizes and g.complete
        assert g.header.schedule_mode == ("2d" if m == 1 else mode)


def test_vatfile_needs_no_model_code():
    import subprocess
    import sys

    code = ("import sys, vat3d.codec.vatfile; bad = [m for m in sys.modules if m.startswith(('torch', "
            "'vat3d.models', 'vat3d.geometry', 'vat3d.data'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
