"""The ``.vat`` binary token container (model-independent).

A ``.vat`` file stores the multi-scale token indices of one shape together with
what is needed to decode them with the right model: the model fingerprint, the
codebook size, the scale schedule and the normalisation transform.  The byte
layout is specified in ``docs/vat-format.md``; in short::

    header fields | header check (2 B) | scale 0 | c0 (1 B) | ... | scale K-1 | CRC32 (4 B)

Every check value is the CRC-32 (``zlib.crc32``) of *all bytes of the file before
it*, truncated to 16 bits (header), 8 bits (scales 0..K-2) or kept whole (after
the last scale).  Hence

* a full-length file is covered by a full CRC-32: any single flipped bit is
  rejected with a checksum error;
* a file cut off after ``k`` complete scales still decodes those ``k`` scales
  (each verified by its own check byte and the header check), with
  ``complete=False`` and a :class:`VatTruncatedWarning`.

Payload coding is either ``"raw"`` (tokens bit-packed at ``ceil(log2 V)`` bits,
see :mod:`vat3d.codec.bitpack`) or ``"entropy"`` (one opaque byte string per scale,
produced by an external arithmetic coder; the per-scale lengths live in the
header).  Decoding never trusts a length before checking it against the caps
below and the bytes actually present, so corrupt or hostile input raises
:class:`VatFormatError` and never allocates more than a small multiple of the
input size.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import struct
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from .bitpack import bits_for_codebook, pack_bits, packed_size, padding_is_zero, unpack_bits

__all__ = [
    "CODINGS",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_CODEBOOK_SIZE",
    "MAX_FILE_BYTES",
    "MAX_SCALES",
    "MAX_SCALE_TOKENS",
    "MAX_TOTAL_TOKENS",
    "VatFile",
    "VatFormatError",
    "VatHeader",
    "VatModelMismatch",
    "VatPayloads",
    "VatTruncatedWarning",
    "atomic_write_bytes",
    "decode_vat",
    "decode_vat_header",
    "decode_vat_payloads",
    "encode_vat",
    "encode_vat_payloads",
    "max_entropy_payload_bytes",
    "read_vat",
    "read_vat_payloads",
    "vat_file_size",
    "write_vat",
    "write_vat_payloads",
]

PathLike = Union[str, "os.PathLike[str]"]
BytesLike = Union[bytes, bytearray, memoryview]

MAGIC = b"VAT3"
FORMAT_VERSION = 1
FINGERPRINT_BYTES = 8
CODINGS = ("raw", "entropy")

# Caps: anything beyond them is rejected before any allocation.
MAX_SCALES = 64
MAX_SCALE_TOKENS = 1 << 16
MAX_TOTAL_TOKENS = 1 << 20
MAX_CODEBOOK_SIZE = 1 << 16
MIN_CODEBOOK_SIZE = 2
MAX_VARINT_BYTES = 4  # every varint field is < 2**28 (all caps are far below)
# Largest possible valid file (entropy coding at the per-scale cap, every field at
# its cap) is ~4.3 MB; readers refuse to load more than this.
MAX_FILE_BYTES = 8 << 20

HEADER_CHECK_BYTES = 2
SCALE_CHECK_BYTES = 1
FINAL_CHECK_BYTES = 4

_FLAG_ENTROPY = 0x01
_FLAG_GENERATOR = 0x02
_KNOWN_FLAGS = _FLAG_ENTROPY | _FLAG_GENERATOR
_TRANSFORM = struct.Struct("<4f")


class VatFormatError(ValueError):
    """The data is not a valid ``.vat`` file (corrupt, truncated header, bad field...)."""


class VatModelMismatch(VatFormatError):
    """The file was written for a different model (or entropy-coding generator)."""

    def __init__(self, file_fingerprint: bytes | None, expected_fingerprint: bytes, what: str = "model"):
        self.file_fingerprint = None if file_fingerprint is None else bytes(file_fingerprint)
        self.expected_fingerprint = bytes(expected_fingerprint)
        self.what = what
        found = "(none)" if self.file_fingerprint is None else self.file_fingerprint.hex()
        super().__init__(
            f".vat file was encoded with {what} fingerprint {found}, "
            f"but the loaded {what} has fingerprint {self.expected_fingerprint.hex()}"
        )


class VatTruncatedWarning(UserWarning):
    """Issued when a truncated ``.vat`` file is decoded to a prefix of its scales."""


def max_entropy_payload_bytes(num_tokens: int) -> int:
    """Cap on one entropy-coded scale payload: 4 bytes per token + 64 bytes."""
    return 4 * int(num_tokens) + 64


def _f32(x: float) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.float32(x))


@dataclass(frozen=True)
class VatHeader:
    """Everything in a ``.vat`` file except the token payload.

    ``center``/``scale`` are rounded to float32 on construction (that is what the
    file stores), so a header survives an encode/decode round trip unchanged.
    ``bits_per_token`` defaults to ``ceil(log2 codebook_size)`` and
    ``num_scales_stored`` (how many leading scales the writer stored) to all of them.
    """

    model_fingerprint: bytes
    codebook_size: int
    scale_sizes: tuple[int, ...]
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    coding: str = "raw"
    generator_fingerprint: bytes | None = None
    num_scales_stored: int | None = None
    bits_per_token: int | None = None
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "model_fingerprint", bytes(self.model_fingerprint))
        put(self, "codebook_size", int(self.codebook_size))
        put(self, "version", int(self.version))
        if self.generator_fingerprint is not None:
            put(self, "generator_fingerprint", bytes(self.generator_fingerprint))
        put(self, "scale_sizes", tuple(int(n) for n in self.scale_sizes))
        put(self, "center", tuple(_f32(c) for c in self.center))
        put(self, "scale", _f32(self.scale))
        if self.bits_per_token is None and int(self.codebook_size) >= 1:
            put(self, "bits_per_token", bits_for_codebook(self.codebook_size))
        if self.num_scales_stored is None:
            put(self, "num_scales_stored", len(self.scale_sizes))
        put(self, "num_scales_stored", int(self.num_scales_stored))
        if self.bits_per_token is not None:
            put(self, "bits_per_token", int(self.bits_per_token))

    @property
    def num_scales(self) -> int:
        """Number of scales in the schedule (not necessarily all stored)."""
        return len(self.scale_sizes)

    @property
    def transform(self) -> tuple[tuple[float, float, float], float]:
        """``(center, scale)`` normalisation transform."""
        return self.center, self.scale

    def validate(self) -> None:
        """Raise ``ValueError`` if the header cannot be written/is inconsistent."""
        _validate_header(self, ValueError)


@dataclass
class VatFile:
    """A decoded raw ``.vat`` file.

    ``tokens[k]`` is a flat int64 array of ``header.scale_sizes[k]`` indices in
    ``[0, codebook_size)``.  ``complete`` is False when the file was truncated
    (then ``tokens`` holds only the scales that were fully present and verified).
    """

    header: VatHeader
    tokens: list[np.ndarray]
    complete: bool

    @property
    def num_scales_decoded(self) -> int:
        return len(self.tokens)


@dataclass
class VatPayloads:
    """Per-scale payload bytes of a ``.vat`` file (either coding), already verified."""

    header: VatHeader
    payloads: list[bytes]
    complete: bool


# --------------------------------------------------------------------------- helpers


def _validate_header(h: VatHeader, exc: type[Exception]) -> None:
    """Check every header invariant; raise ``exc`` with a clear message."""
    if h.version != FORMAT_VERSION:
        raise exc(f"unsupported .vat format version {h.version} (supported: {FORMAT_VERSION})")
    if len(h.model_fingerprint) != FINGERPRINT_BYTES:
        raise exc(f"model_fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(h.model_fingerprint)}")
    if h.generator_fingerprint is not None and len(h.generator_fingerprint) != FINGERPRINT_BYTES:
        raise exc(
            f"generator_fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(h.generator_fingerprint)}"
        )
    if h.coding not in CODINGS:
        raise exc(f"unknown coding {h.coding!r} (expected one of {CODINGS})")
    v = int(h.codebook_size)
    if not MIN_CODEBOOK_SIZE <= v <= MAX_CODEBOOK_SIZE:
        raise exc(f"codebook size {v} out of range [{MIN_CODEBOOK_SIZE}, {MAX_CODEBOOK_SIZE}]")
    need = bits_for_codebook(v)
    if h.bits_per_token != need:
        raise exc(f"bits_per_token {h.bits_per_token} inconsistent with codebook size {v} (needs {need})")
    s = len(h.scale_sizes)
    if not 1 <= s <= MAX_SCALES:
        raise exc(f"number of scales {s} out of range [1, {MAX_SCALES}]")
    total = 0
    for k, n in enumerate(h.scale_sizes):
        if not 1 <= n <= MAX_SCALE_TOKENS:
            raise exc(f"scale {k} has {n} tokens, out of range [1, {MAX_SCALE_TOKENS}]")
        total += n
    if total > MAX_TOTAL_TOKENS:
        raise exc(f"schedule has {total} tokens in total, more than the cap {MAX_TOTAL_TOKENS}")
    if not 1 <= int(h.num_scales_stored) <= s:
        raise exc(f"num_scales_stored {h.num_scales_stored} out of range [1, {s}]")
    if len(h.center) != 3:
        raise exc(f"center must have 3 components, got {len(h.center)}")
    if not all(math.isfinite(c) for c in h.center):
        raise exc(f"center {h.center} is not finite (float32)")
    if not (math.isfinite(h.scale) and h.scale > 0):
        raise exc(f"scale {h.scale} must be finite and > 0 (float32)")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _header_fields(h: VatHeader, entropy_lengths: Sequence[int] = ()) -> bytes:
    """Serialise the header up to (not including) its check value."""
    flags = (_FLAG_ENTROPY if h.coding == "entropy" else 0) | (
        _FLAG_GENERATOR if h.generator_fingerprint is not None else 0
    )
    out = bytearray(MAGIC)
    out += bytes([h.version, flags, h.bits_per_token])
    out += _varint(h.codebook_size)
    out += _varint(len(h.scale_sizes))
    for n in h.scale_sizes:
        out += _varint(n)
    out += _varint(h.num_scales_stored)
    out += h.model_fingerprint
    out += _TRANSFORM.pack(*h.center, h.scale)
    if h.generator_fingerprint is not None:
        out += h.generator_fingerprint
    for n in entropy_lengths:
        out += _varint(n)
    return bytes(out)


def _assemble(header_fields: bytes, payloads: Sequence[bytes]) -> bytes:
    """Append the header check, the payloads and their chained CRC checks."""
    out = bytearray(header_fields)
    crc = zlib.crc32(out)
    check = struct.pack("<H", crc & 0xFFFF)
    out += check
    crc = zlib.crc32(check, crc)
    last = len(payloads) - 1
    for k, payload in enumerate(payloads):
        out += payload
        crc = zlib.crc32(payload, crc)
        check = struct.pack("<I", crc) if k == last else bytes([crc & 0xFF])
        out += check
        crc = zlib.crc32(check, crc)
    return bytes(out)


def vat_file_size(header: VatHeader, entropy_lengths: Sequence[int] | None = None) -> int:
    """Exact size in bytes of the complete file for ``header``.

    For raw coding the payload of scale k is ``ceil(n_k * bits / 8)`` bytes; for
    entropy coding pass the per-scale payload lengths.
    """
    stored = int(header.num_scales_stored)
    if header.coding == "raw":
        sizes = [packed_size(n, header.bits_per_token) for n in header.scale_sizes[:stored]]
        lengths: Sequence[int] = ()
    else:
        if entropy_lengths is None or len(entropy_lengths) != stored:
            raise ValueError("entropy coding needs one payload length per stored scale")
        sizes = lengths = list(entropy_lengths)
    return (
        len(_header_fields(header, lengths))
        + HEADER_CHECK_BYTES
        + sum(sizes)
        + SCALE_CHECK_BYTES * (stored - 1)
        + FINAL_CHECK_BYTES
    )


# --------------------------------------------------------------------------- encoding


def encode_vat(
    tokens: Sequence[np.ndarray],
    *,
    model_fingerprint: bytes,
    codebook_size: int,
    scale_sizes: Sequence[int],
    center: Sequence[float] = (0.0, 0.0, 0.0),
    scale: float = 1.0,
) -> bytes:
    """Encode per-scale token indices into raw (bit-packed) ``.vat`` bytes.

    ``tokens[k]`` must hold ``scale_sizes[k]`` integers in ``[0, codebook_size)``
    (any shape; flattened in C order).  Fewer than ``len(scale_sizes)`` scales may
    be given: the file then stores only that prefix (``num_scales_stored``).
    Raises ``ValueError``/``TypeError`` for invalid input.
    """
    header = VatHeader(
        model_fingerprint=model_fingerprint,
        codebook_size=codebook_size,
        scale_sizes=tuple(scale_sizes),
        center=tuple(center),
        scale=scale,
        num_scales_stored=len(tokens),
    )
    _validate_header(header, ValueError)
    payloads = []
    for k, tok in enumerate(tokens):
        arr = np.asarray(tok)
        if arr.size != header.scale_sizes[k]:
            raise ValueError(f"scale {k}: expected {header.scale_sizes[k]} tokens, got {arr.size}")
        if arr.dtype.kind not in "iub":
            raise TypeError(f"scale {k}: tokens must be integers, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= header.codebook_size):
            bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
            raise ValueError(f"scale {k}: token index {bad} outside [0, {header.codebook_size})")
        payloads.append(pack_bits(arr, header.bits_per_token))
    return _assemble(_header_fields(header), payloads)


def encode_vat_payloads(header: VatHeader, payloads: Sequence[BytesLike]) -> bytes:
    """Encode pre-coded per-scale payloads (e.g. arithmetic-coded) into ``.vat`` bytes.

    ``header.num_scales_stored`` must equal ``len(payloads)`` (construct the header
    with ``num_scales_stored=len(payloads)``).  For ``coding="entropy"`` each payload
    is opaque, at most :func:`max_entropy_payload_bytes` long; for ``coding="raw"``
    each must be exactly the bit-packed size of its scale.
    """
    _validate_header(header, ValueError)
    payloads = [bytes(p) for p in payloads]
    if len(payloads) != header.num_scales_stored:
        raise ValueError(
            f"header.num_scales_stored is {header.num_scales_stored} but {len(payloads)} payloads were given"
        )
    lengths: list[int] = []
    for k, p in enumerate(payloads):
        n = header.scale_sizes[k]
        if header.coding == "raw":
            want = packed_size(n, header.bits_per_token)
            if len(p) != want:
                raise ValueError(f"scale {k}: raw payload must be {want} bytes, got {len(p)}")
        elif len(p) > max_entropy_payload_bytes(n):
            raise ValueError(
                f"scale {k}: entropy payload of {len(p)} bytes exceeds the cap {max_entropy_payload_bytes(n)}"
            )
        lengths.append(len(p))
    return _assemble(_header_fields(header, lengths if header.coding == "entropy" else ()), payloads)


# --------------------------------------------------------------------------- decoding


class _Cursor:
    """Bounds-checked reader over the header bytes."""

    def __init__(self, buf: memoryview):
        self.buf = buf
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        left = len(self.buf) - self.pos
        if n > left:
            raise VatFormatError(
                f"truncated .vat header: {what} needs {n} bytes at offset {self.pos}, only {left} left"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.u8(what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise VatFormatError(f"non-canonical varint for {what} at offset {self.pos - i - 1}")
                return value
        raise VatFormatError(f"varint for {what} longer than {MAX_VARINT_BYTES} bytes (value too large)")


def _as_memoryview(data: BytesLike) -> memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f".vat data must be bytes-like, got {type(data).__name__}")
    mv = memoryview(data)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    return mv


def _check_fingerprint_arg(fp: bytes | None, name: str) -> None:
    if fp is not None and len(fp) != FINGERPRINT_BYTES:
        raise ValueError(f"{name} must be {FINGERPRINT_BYTES} bytes, got {len(fp)}")


def _parse(
    data: BytesLike,
    *,
    expected_fingerprint: bytes | None,
    expected_generator_fingerprint: bytes | None,
    max_scales: int | None,
    header_only: bool = False,
) -> VatPayloads:
    """Parse and verify a ``.vat`` byte string down to per-scale payload bytes."""
    _check_fingerprint_arg(expected_fingerprint, "expected_fingerprint")
    _check_fingerprint_arg(expected_generator_fingerprint, "expected_generator_fingerprint")
    if max_scales is not None and (isinstance(max_scales, bool) or int(max_scales) < 1):
        raise ValueError(f"max_scales must be >= 1 or None, got {max_scales!r}")
    buf = _as_memoryview(data)
    if len(buf) > MAX_FILE_BYTES:
        raise VatFormatError(f".vat data is {len(buf)} bytes, larger than any valid file ({MAX_FILE_BYTES})")
    cur = _Cursor(buf)

    # Fixed prefix.
    if len(buf) == 0:
        raise VatFormatError("empty data: not a .vat file")
    if bytes(buf[: len(MAGIC)]) != MAGIC[: len(buf)]:
        raise VatFormatError(f"not a .vat file: bad magic {bytes(buf[:4])!r} (expected {MAGIC!r})")
    cur.take(len(MAGIC), "magic")
    version = cur.u8("version")
    if version != FORMAT_VERSION:
        raise VatFormatError(f"unsupported .vat format version {version} (supported: {FORMAT_VERSION})")
    flags = cur.u8("flags")
    if flags & ~_KNOWN_FLAGS:
        raise VatFormatError(f"unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x} in .vat header")
    bits = cur.u8("bits_per_token")
    codebook_size = cur.varint("codebook size")

    # Schedule (counts are capped before they drive any loop).
    num_scales = cur.varint("number of scales")
    if not 1 <= num_scales <= MAX_SCALES:
        raise VatFormatError(f"number of scales {num_scales} out of range [1, {MAX_SCALES}]")
    scale_sizes = tuple(cur.varint(f"size of scale {k}") for k in range(num_scales))
    stored = cur.varint("number of stored scales")
    if not 1 <= stored <= num_scales:
        raise VatFormatError(f"number of stored scales {stored} out of range [1, {num_scales}]")
    model_fp = bytes(cur.take(FINGERPRINT_BYTES, "model fingerprint"))
    cx, cy, cz, sc = _TRANSFORM.unpack(cur.take(_TRANSFORM.size, "transform"))
    gen_fp = bytes(cur.take(FINGERPRINT_BYTES, "generator fingerprint")) if flags & _FLAG_GENERATOR else None
    entropy = bool(flags & _FLAG_ENTROPY)
    lengths = [cur.varint(f"payload length of scale {k}") for k in range(stored)] if entropy else None

    # Header check: CRC-32 of everything so far, low 16 bits.
    header_end = cur.pos
    crc = zlib.crc32(buf[:header_end])
    (check,) = struct.unpack("<H", cur.take(HEADER_CHECK_BYTES, "header check"))
    if check != crc & 0xFFFF:
        raise VatFormatError("header checksum mismatch: .vat file is corrupt")
    crc = zlib.crc32(buf[header_end : cur.pos], crc)

    header = VatHeader(
        model_fingerprint=model_fp,
        codebook_size=codebook_size,
        scale_sizes=scale_sizes,
        center=(cx, cy, cz),
        scale=sc,
        coding="entropy" if entropy else "raw",
        generator_fingerprint=gen_fp,
        num_scales_stored=stored,
        bits_per_token=bits,
        version=version,
    )
    _validate_header(header, VatFormatError)
    if expected_fingerprint is not None and bytes(expected_fingerprint) != model_fp:
        raise VatModelMismatch(model_fp, bytes(expected_fingerprint), "model")
    if expected_generator_fingerprint is not None and bytes(expected_generator_fingerprint) != gen_fp:
        raise VatModelMismatch(gen_fp, bytes(expected_generator_fingerprint), "generator")

    if lengths is None:
        lengths = [packed_size(n, bits) for n in scale_sizes[:stored]]
    else:
        for k, n in enumerate(lengths):
            if n > max_entropy_payload_bytes(scale_sizes[k]):
                raise VatFormatError(
                    f"scale {k}: payload length {n} exceeds the cap {max_entropy_payload_bytes(scale_sizes[k])}"
                )
    expected_size = cur.pos + sum(lengths) + SCALE_CHECK_BYTES * (stored - 1) + FINAL_CHECK_BYTES
    if len(buf) > expected_size:
        raise VatFormatError(
            f"{len(buf) - expected_size} unexpected trailing bytes after the last scale "
            f"(file is {len(buf)} bytes, expected {expected_size})"
        )
    complete = len(buf) == expected_size
    if header_only:
        return VatPayloads(header, [], complete)

    # Scales: each must be fully present together with its check to count.
    limit = stored if max_scales is None else min(stored, int(max_scales))
    payloads: list[bytes] = []
    pos = cur.pos
    for k in range(limit):
        last = k == stored - 1
        check_len = FINAL_CHECK_BYTES if last else SCALE_CHECK_BYTES
        end = pos + lengths[k]
        if end + check_len > len(buf):
            break  # truncated inside scale k (or its check)
        crc = zlib.crc32(buf[pos:end], crc)
        stored_check = buf[end : end + check_len]
        if last:
            ok = struct.unpack("<I", stored_check)[0] == crc
        else:
            ok = stored_check[0] == crc & 0xFF
        if not ok:
            raise VatFormatError(f"checksum mismatch in scale {k}: .vat file is corrupt")
        crc = zlib.crc32(stored_check, crc)
        payloads.append(bytes(buf[pos:end]))
        pos = end + check_len

    if len(payloads) < limit:
        if not payloads:
            raise VatFormatError(
                f"truncated .vat file: {len(buf)} bytes, scale 0 incomplete (complete file is {expected_size} bytes)"
            )
        warnings.warn(
            f"truncated .vat file ({len(buf)} of {expected_size} bytes): "
            f"decoded only {len(payloads)} of {stored} scales",
            VatTruncatedWarning,
            stacklevel=3,
        )
    return VatPayloads(header, payloads, complete)


def decode_vat_payloads(
    data: BytesLike,
    *,
    expected_fingerprint: bytes | None = None,
    expected_generator_fingerprint: bytes | None = None,
    max_scales: int | None = None,
) -> VatPayloads:
    """Verify a ``.vat`` byte string and return its per-scale payload bytes.

    Works for both codings (this is the read path for entropy-coded files).
    Truncated files yield the verified prefix of scales with ``complete=False``
    and a :class:`VatTruncatedWarning`; ``max_scales=k`` returns at most the
    first ``k`` scales on purpose (later scales are then not read or verified).
    Raises :class:`VatFormatError` for any invalid input and
    :class:`VatModelMismatch` if an expected fingerprint differs.
    """
    return _parse(
        data,
        expected_fingerprint=expected_fingerprint,
        expected_generator_fingerprint=expected_generator_fingerprint,
        max_scales=max_scales,
    )


def decode_vat_header(data: BytesLike) -> VatHeader:
    """Parse and verify only the header (e.g. for ``info``-style inspection)."""
    return _parse(
        data, expected_fingerprint=None, expected_generator_fingerprint=None, max_scales=None, header_only=True
    ).header


def decode_vat(
    data: BytesLike,
    *,
    expected_fingerprint: bytes | None = None,
    max_scales: int | None = None,
) -> VatFile:
    """Decode raw ``.vat`` bytes into per-scale int64 token arrays.

    See :func:`decode_vat_payloads` for truncation and ``max_scales`` semantics.
    Entropy-coded files raise :class:`VatFormatError` here (decode them with
    :func:`decode_vat_payloads` and the entropy decoder).
    """
    parsed = _parse(
        data,
        expected_fingerprint=expected_fingerprint,
        expected_generator_fingerprint=None,
        max_scales=max_scales,
    )
    header = parsed.header
    if header.coding != "raw":
        raise VatFormatError(
            f".vat file uses {header.coding!r} coding; use decode_vat_payloads() with the matching decoder"
        )
    bits, v = header.bits_per_token, header.codebook_size
    tokens = []
    for k, payload in enumerate(parsed.payloads):
        n = header.scale_sizes[k]
        if not padding_is_zero(payload, bits, n):
            raise VatFormatError(f"scale {k}: non-zero padding bits")
        values = unpack_bits(payload, bits, n)
        if int(values.max()) >= v:
            raise VatFormatError(f"scale {k}: token index {int(values.max())} >= codebook size {v}")
        tokens.append(values)
    return VatFile(header, tokens, parsed.complete)


# --------------------------------------------------------------------------- files


def _same_path(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def atomic_write_bytes(path: PathLike, data: bytes, *, protect: Iterable[PathLike] = ()) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + ``os.replace``).

    Refuses (``ValueError``) to write over any path in ``protect`` (typically the
    command's input files).  On any failure the temporary file is removed and an
    existing ``path`` is left untouched.
    """
    target = Path(path)
    for p in protect:
        if _same_path(target, Path(p)):
            raise ValueError(f"refusing to overwrite input file {os.fspath(p)!r}")
    directory = target.parent
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # mode is filtered by the umask
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - astronomically unlikely
        raise FileExistsError(f"could not create a temporary file next to {target}")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_vat(
    path: PathLike,
    tokens: Sequence[np.ndarray],
    *,
    model_fingerprint: bytes,
    codebook_size: int,
    scale_sizes: Sequence[int],
    center: Sequence[float] = (0.0, 0.0, 0.0),
    scale: float = 1.0,
    protect: Iterable[PathLike] = (),
) -> int:
    """Encode (see :func:`encode_vat`) and write atomically; returns the file size."""
    data = encode_vat(
        tokens,
        model_fingerprint=model_fingerprint,
        codebook_size=codebook_size,
        scale_sizes=scale_sizes,
        center=center,
        scale=scale,
    )
    atomic_write_bytes(path, data, protect=protect)
    return len(data)


def write_vat_payloads(
    path: PathLike, header: VatHeader, payloads: Sequence[BytesLike], *, protect: Iterable[PathLike] = ()
) -> int:
    """Encode (see :func:`encode_vat_payloads`) and write atomically; returns the file size."""
    data = encode_vat_payloads(header, payloads)
    atomic_write_bytes(path, data, protect=protect)
    return len(data)


def _read_limited(path: PathLike) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise VatFormatError(f"{os.fspath(path)}: larger than any valid .vat file ({MAX_FILE_BYTES} bytes)")
    return data


def read_vat(path: PathLike, *, expected_fingerprint: bytes | None = None, max_scales: int | None = None) -> VatFile:
    """Read and decode a raw ``.vat`` file (see :func:`decode_vat`)."""
    return decode_vat(_read_limited(path), expected_fingerprint=expected_fingerprint, max_scales=max_scales)


def read_vat_payloads(
    path: PathLike,
    *,
    expected_fingerprint: bytes | None = None,
    expected_generator_fingerprint: bytes | None = None,
    max_scales: int | None = None,
) -> VatPayloads:
    """Read a ``.vat`` file and return verified per-scale payloads (see :func:`decode_vat_payloads`)."""
    return decode_vat_payloads(
        _read_limited(path),
        expected_fingerprint=expected_fingerprint,
        expected_generator_fingerprint=expected_generator_fingerprint,
        max_scales=max_scales,
    )

