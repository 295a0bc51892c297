"""Property/fuzz tests for the .vat decoder: any input either decodes to a valid
VatFile or raises VatFormatError -- never another exception, a hang, or an
allocation out of proportion to the input."""

from __future__ import annotations

import math
import struct
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vat3d.codec.bitpack import bits_for_codebook, pack_bits
from vat3d.codec.vatfile import (
    MAX_SCALES,
    VatFormatError,
    VatHeader,
    VatTruncatedWarning,
    decode_vat,
    decode_vat_payloads,
    encode_vat,
    encode_vat_payloads,
    crc8,
    implicit_scale_sizes,
    schedule_kind,
    vat_file_size,
)

FP = bytes.fromhex("0123456789abcdef")
GEN_FP = bytes.fromhex("00112233aabbccdd")
VAT_SCHEDULE = (1, 4, 9, 16, 25, 36, 64, 100, 169, 256)

MAX_SECONDS_PER_DECODE = 10.0  # a hang guard, not a speed target
# Peak traced allocation allowed for decoding `n` bytes (generous constant + linear term).
MEMORY_BOUND = lambda n: (1 << 20) + 100 * n  # noqa: E731

FUZZ = settings(
    max_examples=3000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


def _seed_files() -> list[bytes]:
    rng = np.random.default_rng(7)
    files = []
    cases = [(64, VAT_SCHEDULE), (4096, VAT_SCHEDULE), (2, (1, 4, 9)), (1000, (1, 4, 9, 16)), (65536, (3,)),
             (1024, (1, 4, 9, 16, 25, 36, 64)), (100, (1, 2, 4, 8, 13))]
    for V, sched in cases:
        toks = [rng.integers(0, V, n) for n in sched]
        files.append(
            encode_vat(toks, model_fingerprint=FP, codebook_size=V, scale_sizes=sched, center=(0.5, 0, -1), scale=3)
        )
    # A deliberately stored prefix.
    toks = [rng.integers(0, 4096, n) for n in VAT_SCHEDULE[:3]]
    files.append(encode_vat(toks, model_fingerprint=FP, codebook_size=4096, scale_sizes=VAT_SCHEDULE))
    # A centre too far off for the quantised form (stored as float64).
    toks = [rng.integers(0, 64, n) for n in (1, 4)]
    files.append(encode_vat(toks, model_fingerprint=FP, codebook_size=64, scale_sizes=(1, 4), center=(1e9, 0, 1)))
    # Entropy-coded containers.
    h = VatHeader(FP, 4096, VAT_SCHEDULE, coding="entropy", generator_fingerprint=GEN_FP)
    files.append(encode_vat_payloads(h, [rng.bytes(int(n) // 2) for n in VAT_SCHEDULE]))
    h = VatHeader(FP, 16384, (1, 4, 9), coding="entropy", num_scales_stored=2)
    files.append(encode_vat_payloads(h, [b"", rng.bytes(5)]))
    return files


SEEDS = _seed_files()


def check_decode(data: bytes) -> str:
    """Decode ``data`` both ways; assert the outcome is sane; return a label."""
    labels = []
    for fn in (decode_vat, decode_vat_payloads):
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", VatTruncatedWarning)
                out = fn(data)
        except VatFormatError as e:
            assert str(e)  # a message is always given
            labels.append("error")
        else:
            h = out.header
            h.validate()  # a returned header is always internally consistent
            items = out.tokens if fn is decode_vat else out.payloads
            assert 1 <= len(items) <= h.num_scales_stored <= h.num_scales <= MAX_SCALES
            if out.complete:
                assert len(items) == h.num_scales_stored
            if fn is decode_vat:
                for k, t in enumerate(out.tokens):
                    assert t.dtype == np.int64 and t.shape == (h.scale_sizes[k],)
                    assert 0 <= int(t.min()) and int(t.max()) < h.codebook_size
                if out.complete:
                    assert len(data) == vat_file_size(h)
            labels.append("ok")
        assert time.perf_counter() - t0 < MAX_SECONDS_PER_DECODE
    return "/".join(labels)


def decode_traced(data: bytes) -> str:
    """:func:`check_decode` under tracemalloc, asserting the peak allocation bound."""
    tracemalloc.start()
    try:
        label = check_decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= MEMORY_BOUND(len(data)), f"decoding {len(data)} bytes allocated {peak} bytes"
    return label


# --------------------------------------------------------------------------- mutations


HUGE_VARINTS = [
    b"\xff\xff\xff\xff\x7f",
    b"\xff\xff\xff\x7f",
    b"\x80\x80\x80\x80\x01",
    b"\xff" * 12,
    b"\x80\x00",
    b"\xc0\x84\x3d",
]


MUTATIONS = ["flip", "flip", "set", "insert", "delete", "truncate", "varint", "overwrite", "dup"]


@st.composite
def mutated_files(draw):
    """A valid seed file with 1-4 random mutations.

    Hypothesis picks the seed and the kinds of mutation; positions and bytes come
    from a drawn RNG seed so they spread uniformly over the file (Hypothesis
    itself favours small integers, i.e. the magic bytes).
    """
    data = bytearray(draw(st.sampled_from(SEEDS)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for op in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=4)):
        n = len(data)
        pos = int(rng.integers(0, n)) if n else 0
        if op == "flip" and n:
            data[pos] ^= 1 << int(rng.integers(0, 8))
        elif op == "set" and n:
            data[pos] = int(rng.integers(0, 256))
        elif op == "insert":
            data[pos:pos] = rng.bytes(int(rng.integers(1, 9)))
        elif op == "delete" and n:
            del data[pos : pos + int(rng.integers(1, 9))]
        elif op == "truncate":
            del data[int(rng.integers(0, n + 1)) :]
        elif op == "varint":  # the varint fields start at offset 4
            at = int(rng.integers(4, max(min(30, n), 5)))
            data[at : at + int(rng.integers(0, 4))] = draw(st.sampled_from(HUGE_VARINTS))
        elif op == "overwrite" and n:
            chunk = rng.bytes(int(rng.integers(1, 33)))
            data[pos : pos + len(chunk)] = chunk
        elif op == "dup" and n:
            data[pos:pos] = data[pos : pos + int(rng.integers(1, 65))]
    return bytes(data)


@FUZZ
@given(data=mutated_files())
def test_fuzz_mutated_files(data):
    decode_traced(data)


@settings(FUZZ, max_examples=1000)
@given(data=st.one_of(st.binary(max_size=3000), st.binary(max_size=600).map(lambda b: b"VT\x40" + b),
                     st.binary(max_size=600).map(lambda b: b"VT" + b),
                     st.binary(max_size=60).map(lambda b: b"VAT3" + b)))
def test_fuzz_random_bytes(data):
    decode_traced(data)


# --------------------------------------------------------------------------- structured headers
# Build files with *valid checksums* around arbitrary field values, so the fuzzer
# gets past the checks and exercises every range/consistency validation.


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _zigzag(q: int) -> int:
    return 2 * q if q >= 0 else -2 * q - 1


def _with_checks(fields: bytes, payloads: list[bytes], stored: int) -> bytes:
    out = bytearray(fields)
    out.append(crc8(fields))
    for k, p in enumerate(payloads):
        out += p
        crc = zlib.crc32(out)
        out += struct.pack("<I", crc) if k == stored - 1 else bytes([crc & 0xFF])
    return bytes(out)


BREAKABLE = [
    "none", "none", "none", "version", "flags", "reserved", "kind", "V", "bits", "num_scales", "size", "total",
    "side", "latents", "stored", "transform", "center", "lengths", "padding", "tokens", "varint", "canonical",
]


@st.composite
def crafted_files(draw):
    """A file with valid checksums that is valid except for (at most) one field.

    Returns ``(data, broken, truncated)``; ``broken`` names the damaged field.
    """
    broken = draw(st.sampled_from(BREAKABLE))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    version, flags = 2, int(rng.choice([0, 1, 2, 3]))
    V = int(rng.choice([2, 3, 64, 100, 1000, 4096, 5000, 65536]))
    bits = bits_for_codebook(V)
    shape = int(rng.integers(3))
    if shape == 0:  # an implicit 2d schedule
        sizes = list(implicit_scale_sizes(int(rng.integers(1, 8)) ** 2))
    elif shape == 1:  # an implicit 1d schedule
        sizes = list(implicit_scale_sizes(int(rng.integers(1, 50)), "1d"))
    else:
        sizes = [int(n) for n in rng.integers(1, 50, int(rng.integers(1, 7)))]
    stored = int(rng.integers(1, len(sizes) + 1))
    scale = float(np.float32(rng.uniform(0.1, 5)))
    center_q = [int(q) for q in rng.integers(-20000, 20000, 3)]
    center_f64 = None
    token_extra, explicit_v, canonical_break = 0, V != 1 << bits, None
    varint = _varint
    if broken == "version":
        version = draw(st.sampled_from([0, 1, 3, 7]))
    elif broken == "flags":
        flags |= 0x10
    elif broken == "reserved":
        token_extra = 0x80
    elif broken == "kind":
        token_extra = 0x30  # schedule kind 3
    elif broken == "V":
        V, explicit_v = draw(st.sampled_from([0, 1, 65537, (1 << 28) - 1])), True
        bits = min(max(bits_for_codebook(max(V, 1)), 1), 16)
    elif broken == "bits":
        bits, explicit_v = draw(st.sampled_from([b for b in (bits - 1, bits + 1) if 1 <= b <= 16] or [2])), True
    elif broken == "num_scales":
        sizes, shape = [1] * draw(st.sampled_from([65, 100])), 2
        stored = 1
    elif broken == "size":
        sizes[int(rng.integers(len(sizes)))] = draw(st.sampled_from([0, 65537, 1 << 20, (1 << 28) - 1]))
        stored, shape = len(sizes), 2
    elif broken == "total":
        sizes, stored, shape = [65536] * 17, 1, 2
    elif broken == "side":
        shape, sizes, stored = 3, [1], 1
    elif broken == "latents":
        shape, sizes, stored = 4, [1], 1
    elif broken == "stored":
        stored = draw(st.sampled_from([0, len(sizes), len(sizes) + 1, 1000]))
        flags |= 4
    elif broken == "transform":
        scale = draw(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0]))
    elif broken == "center":
        if draw(st.booleans()):
            center_q[int(rng.integers(3))] = draw(st.sampled_from([1 << 34, -(1 << 34), (1 << 34) + 5]))
        else:
            center_f64 = [0.0, 0.0, 0.0]
            center_f64[int(rng.integers(3))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    elif broken == "lengths":
        flags |= 1
    elif broken in ("padding", "tokens"):
        flags &= ~1
    elif broken == "varint":
        varint = draw(st.sampled_from([_noncanonical_varint, _overlong_varint]))
    elif broken == "canonical":
        canonical_break = draw(st.sampled_from(["V", "schedule", "center"]))
    if shape in (0, 1, 2) and broken != "canonical":  # the writer's form of the schedule
        shape = {"2d": 0, "1d": 1, None: 2}[schedule_kind(sizes)]
    if canonical_break == "V":
        explicit_v = True
        if V != 1 << bits:
            broken = "none"  # V is stored explicitly anyway
    elif canonical_break == "schedule":
        shape = 2 if shape in (0, 1) else shape
        if schedule_kind(sizes) is None:
            sizes = list(implicit_scale_sizes(4))
            stored = min(stored, len(sizes))
    elif canonical_break == "center":
        center_f64 = [q / (8192 * scale) for q in center_q]
    if stored < len(sizes):
        flags |= 4
    entropy = bool(flags & 1)
    b = min(max(bits, 1), 16)
    n_store = max(0, min(stored, len(sizes)))
    lengths = []
    if entropy:
        lengths = [int(rng.integers(0, 4 * min(n, 64) + 64)) for n in sizes[:n_store]] + [0] * (stored - n_store)
        if broken == "lengths":
            k = int(rng.integers(n_store))
            lengths[k] = draw(st.sampled_from([4 * sizes[k] + 65, 1 << 20, (1 << 28) - 1]))
        payloads = [rng.bytes(min(n, 300)) for n in lengths[:n_store]]
    else:
        payloads = []
        for n in sizes[:n_store]:
            top = (1 << b) if broken == "tokens" else min(max(V, 1), 1 << b)
            payloads.append(pack_bits(rng.integers(0, top, min(n, 1000)), b))
        if broken == "padding":
            with_pad = [k for k, n in enumerate(sizes[:n_store]) if (n * b) % 8]
            if with_pad:
                k = with_pad[int(rng.integers(len(with_pad)))]
                p = bytearray(payloads[k])
                p[-1] |= 0x80
                payloads[k] = bytes(p)
            else:
                broken = "none"
        elif broken == "tokens" and V == 1 << b:
            broken = "none"  # every representable index is valid
    if center_f64 is not None:
        flags |= 8
    kind = {0: 0, 1: 1, 2: 2, 3: 0, 4: 1}[shape]
    fields = bytearray(b"VT" + bytes([version << 5 | flags]))
    fields.append((b - 1) | kind << 4 | (0x40 if explicit_v else 0) | token_extra)
    if explicit_v:
        fields += varint(V)
    if shape == 0:
        fields += varint(math.isqrt(sizes[-1]))
    elif shape == 1:
        fields += varint(sizes[-1])
    elif shape == 2:
        fields += varint(len(sizes)) + b"".join(varint(n) for n in sizes)
    elif shape == 3:
        fields += varint(draw(st.sampled_from([0, 257, 1000])))
    else:
        fields += varint(draw(st.sampled_from([0, 65537, (1 << 28) - 1])))
    if flags & 4:
        fields += varint(stored)
    fields += FP[:4]
    if flags & 2:
        fields += GEN_FP[:4]
    fields += struct.pack("<f", scale)
    if center_f64 is not None:
        fields += struct.pack("<3d", *center_f64)
    else:
        fields += b"".join(_varint(_zigzag(q)) for q in center_q)
    fields += b"".join(varint(n) for n in lengths)
    data = _with_checks(bytes(fields), payloads, stored)
    truncated = draw(st.integers(0, 3)) == 0
    if truncated:
        data = data[: int(rng.integers(0, len(data) + 1))]
    return data, broken, truncated


def _noncanonical_varint(v: int) -> bytes:
    return _varint(v)[:-1] + bytes([_varint(v)[-1] | 0x80, 0])


def _overlong_varint(v: int) -> bytes:
    return bytes([0x80 | (v & 0x7F)] * 4) + b"\x01"


@settings(FUZZ, max_examples=2500)
@given(case=crafted_files())
def test_fuzz_crafted_headers_with_valid_checksums(case):
    data, broken, truncated = case
    outcome = decode_traced(data)
    if truncated:
        return
    coding_entropy = data[2] & 1 if len(data) > 2 else 0
    if broken == "none":
        assert outcome == ("error/ok" if coding_entropy else "ok/ok")
    elif broken != "tokens":
        assert outcome.startswith("error"), broken


# --------------------------------------------------------------------------- valid files


@st.composite
def valid_inputs(draw):
    V = draw(st.one_of(st.integers(2, 300), st.sampled_from([1024, 4096, 16384, 65536])))
    schedule = tuple(draw(st.lists(st.integers(1, 60), min_size=1, max_size=12)))
    stored = draw(st.integers(1, len(schedule)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tokens = [rng.integers(0, V, n) for n in schedule[:stored]]
    center = draw(st.tuples(*[st.one_of(st.floats(-1e6, 1e6, width=32), st.floats(-1e300, 1e300))] * 3))
    scale = draw(st.floats(2.0**-20, 2.0**20, width=32))
    return V, schedule, tokens, center, scale


@settings(FUZZ, max_examples=600)
@given(inp=valid_inputs(), cut=st.floats(0, 1))
def test_fuzz_roundtrip_and_truncated_prefix(inp, cut):
    V, schedule, tokens, center, scale = inp
    data = encode_vat(tokens, model_fingerprint=FP, codebook_size=V, scale_sizes=schedule, center=center, scale=scale)
    f = decode_vat(data, expected_fingerprint=FP)
    assert f.complete and len(data) == vat_file_size(f.header)
    assert f.header.center == VatHeader(FP, V, schedule, center=center, scale=scale).center and f.header.scale == scale
    if f.header.center_quantized:  # at most 2**-14 box units off
        assert max(abs(a - b) * scale for a, b in zip(f.header.center, center)) <= 2.0**-14 + 2.0**-30
    else:
        assert f.header.center == tuple(center) and max(abs(c) * scale for c in center) >= 2.0**21 - 1
    for a, b in zip(f.tokens, tokens, strict=True):
        np.testing.assert_array_equal(a, b)
    # Any prefix decodes to a prefix of the scales, or fails cleanly if no scale is whole.
    n = int(cut * len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VatTruncatedWarning)
            g = decode_vat(data[:n])
    except VatFormatError as e:
        assert n < len(data) and ("truncated" in str(e) or "magic" in str(e) or "empty" in str(e))
    else:
        assert g.complete == (n == len(data))
        for a, b in zip(g.tokens, tokens):
            np.testing.assert_array_equal(a, b)


def test_crafted_huge_claims_allocate_nothing_big():
    """Headers claiming the maximum sizes, with almost no data behind them."""
    huge = (65536,) * 16  # exactly the 2**20 token cap
    for flags, extra in [(0, b""), (1, b"".join(_varint(4 * 65536 + 64) for _ in huge))]:
        fields = b"VT" + bytes([0x40 | flags, 15 | 0x20]) + _varint(16)
        fields += b"".join(_varint(n) for n in huge) + FP[:4] + struct.pack("<f", 1.0) + bytes(3) + extra
        data = _with_checks(fields, [], 16) + bytes(100)
        decode_traced(data)
        with pytest.raises(VatFormatError, match="truncated"):
            decode_vat_payloads(data)
    # the largest implicit schedule: a 256 x 256 latent grid
    fields = b"VT" + bytes([0x40, 15]) + _varint(256) + FP[:4] + struct.pack("<f", 1.0) + bytes(3)
    data = _with_checks(fields, [], 8) + bytes(2)  # scale 0 (1 token, 2 bytes) without its check
    decode_traced(data)
    with pytest.raises(VatFormatError, match="truncated"):
        decode_vat_payloads(data)
