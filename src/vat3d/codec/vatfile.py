"""The ``.vat`` binary token container, format version 2 (model-independent).

A ``.vat`` file stores the multi-scale token indices of one shape together with
what is needed to decode them with the right model: the model fingerprint, the
codebook size, the scale schedule and the normalisation transform.  The byte
layout is specified in ``docs/vat-format.md``; in short::

    header fields | header check (1 B) | scale 0 | c0 (1 B) | ... | scale K-1 | CRC32 (4 B)

The header is a few bytes: a 2-byte magic, one byte of version and flags, one byte
of bits per token and schedule kind, the number of latents (the side of the latent
grid for 2d schedules; the schedule itself follows from it by the model's rule,
:func:`implicit_scale_sizes`, unless the file lists it), a 4-byte model
fingerprint, the float32 scale and the centre quantised to ``1 / (8192 * scale)``
(at most 2**-14 of the normalised box's half-width off).
Integrity:

* the header check is a CRC-8 of the header fields, so every single flipped bit
  of a header is reported as header damage, also in a truncated file;
* every scale but the last is followed by the low byte of the CRC-32
  (``zlib.crc32``) of *all bytes of the file before it*, and the last one by the
  full CRC-32.  A full-length file is therefore covered by a full CRC-32, and a
  file cut off after ``k`` complete scales still decodes those ``k`` scales (each
  verified by its own check byte and the header check), with ``complete=False``
  and a :class:`VatTruncatedWarning`.

Version-1 files (``b"VAT3\\x01"``, vat3d 0.1) are recognised and refused with a
message that says so.  Payload coding is either ``"raw"`` (tokens bit-packed at
``ceil(log2 V)`` bits, see :mod:`vat3d.codec.bitpack`) or ``"entropy"`` (one
opaque byte string per scale, produced by an external arithmetic coder; the
per-scale lengths live in the header).  Decoding never trusts a length before
checking it against the caps below and the bytes actually present, so corrupt or
hostile input raises :class:`VatFormatError` and never allocates more than a small
multiple of the input size.  This module needs only numpy and the standard library.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from vat3d.fileio import atomic_write_bytes
from vat3d.schedule import DEFAULT_SIDES, default_scale_sizes

from .bitpack import bits_for_codebook, pack_bits, packed_size, padding_is_zero, unpack_bits

__all__ = [
    "CENTER_STEPS",
    "CODINGS",
    "FINGERPRINT_BYTES",
    "FORMAT_VERSION",
    "IMPLICIT_SIDES",
    "MAGIC",
    "MAX_CODEBOOK_SIZE",
    "MAX_FILE_BYTES",
    "MAX_SCALES",
    "MAX_SCALE_TOKENS",
    "MAX_TOTAL_TOKENS",
    "V1_MAGIC",
    "VatFile",
    "VatFormatError",
    "VatHeader",
    "VatModelMismatch",
    "VatPayloads",
    "VatTruncatedWarning",
    "atomic_write_bytes",
    "crc8",
    "decode_vat",
    "decode_vat_header",
    "decode_vat_payloads",
    "encode_vat",
    "encode_vat_payloads",
    "fingerprint_matches",
    "implicit_scale_sizes",
    "max_entropy_payload_bytes",
    "quantize_center",
    "read_vat",
    "read_vat_payloads",
    "schedule_kind",
    "vat_file_size",
    "vat_overhead",
    "write_vat",
    "write_vat_payloads",
]

PathLike = Union[str, "os.PathLike[str]"]
BytesLike = Union[bytes, bytearray, memoryview]

MAGIC = b"VT"
V1_MAGIC = b"VAT3"  # version 1 (vat3d 0.1): b"VAT3" followed by the version byte 1
FORMAT_VERSION = 2
FINGERPRINT_BYTES = 4  # a file keeps the first 4 bytes of a (longer) model fingerprint
CODINGS = ("raw", "entropy")

# Caps: anything beyond them is rejected before any allocation.
MAX_SCALES = 64
MAX_SCALE_TOKENS = 1 << 16
MAX_TOTAL_TOKENS = 1 << 20
MAX_CODEBOOK_SIZE = 1 << 16
MIN_CODEBOOK_SIZE = 2
MAX_VARINT_BYTES = 4  # every count/length varint is < 2**28 (all caps are far below)
# Largest possible valid file (entropy coding at the per-scale cap, every field at
# its cap) is ~4.3 MB; readers refuse to load more than this.
MAX_FILE_BYTES = 8 << 20

HEADER_CHECK_BYTES = 1
SCALE_CHECK_BYTES = 1
FINAL_CHECK_BYTES = 4

# Byte 2: version in bits 5-7, flags in bits 0-4.
_VERSION_SHIFT = 5
_FLAG_ENTROPY = 0x01
_FLAG_GENERATOR = 0x02
_FLAG_PREFIX = 0x04  # K < S scales stored: K follows the schedule
_FLAG_CENTER_F64 = 0x08  # centre stored as 3 float64 (it is too far off for the quantised form)
_KNOWN_FLAGS = _FLAG_ENTROPY | _FLAG_GENERATOR | _FLAG_PREFIX | _FLAG_CENTER_F64
# Byte 3: bits per token - 1 in bits 0-3, schedule kind in bits 4-5, explicit V in bit 6.
_SCHEDULE_SHIFT = 4
_SCHEDULE_2D, _SCHEDULE_1D, _SCHEDULE_EXPLICIT = 0, 1, 2
_SCHEDULE_NAMES = {_SCHEDULE_2D: "2d", _SCHEDULE_1D: "1d"}
_MAX_SIDE = math.isqrt(MAX_SCALE_TOKENS)  # 2d schedules store the side of the latent grid
_TOKEN_EXPLICIT_V = 0x40
_TOKEN_RESERVED = 0x80

# Centre: q = round(center * scale * CENTER_STEPS), stored as a zigzag varint of at most
# CENTER_VARINT_BYTES bytes (|q| < 2**34, i.e. the centre within 2**21 box half-widths
# of the origin); beyond that the centre is stored exactly as float64 (flag).
CENTER_STEPS = 8192
CENTER_VARINT_BYTES = 5
_CENTER_Q_LIMIT = 1 << 34
_F32 = struct.Struct("<f")
_F64x3 = struct.Struct("<3d")

# The model's schedule rule lives in ``vat3d.schedule`` (torch-free), shared with the quantizer.
IMPLICIT_SIDES = DEFAULT_SIDES


class VatFormatError(ValueError):
    """The data is not a valid ``.vat`` file (corrupt, truncated header, bad field...)."""


class VatModelMismatch(VatFormatError):
    """The file was written for a different model (or entropy-coding generator).

    ``file_fingerprint`` is what the file holds (its first :data:`FINGERPRINT_BYTES`
    bytes of the model's fingerprint); ``expected_fingerprint`` is the loaded model's.
    """

    def __init__(self, file_fingerprint: bytes | None, expected_fingerprint: bytes, what: str = "model"):
        self.file_fingerprint = None if file_fingerprint is None else bytes(file_fingerprint)
        self.expected_fingerprint = bytes(expected_fingerprint)
        self.what = what
        found = "(none)" if self.file_fingerprint is None else self.file_fingerprint.hex()
        super().__init__(
            f".vat file was encoded with {what} fingerprint {found}, "
            f"but the loaded {what} has fingerprint {self.expected_fingerprint.hex()}"
            + (f" (a .vat file keeps the first {FINGERPRINT_BYTES} bytes)"
               if len(self.expected_fingerprint) > FINGERPRINT_BYTES else "")
        )


class VatTruncatedWarning(UserWarning):
    """Issued when a truncated ``.vat`` file is decoded to a prefix of its scales."""


def max_entropy_payload_bytes(num_tokens: int) -> int:
    """Cap on one entropy-coded scale payload: 4 bytes per token + 64 bytes."""
    return 4 * int(num_tokens) + 64


def fingerprint_matches(stored: bytes | None, fingerprint: bytes) -> bool:
    """Whether a fingerprint from a file (its first 4 bytes) belongs to ``fingerprint`` (>= 4 bytes)."""
    return stored is not None and bytes(stored)[:FINGERPRINT_BYTES] == bytes(fingerprint)[:FINGERPRINT_BYTES]


def _f32(x: float) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.float32(x))


# --------------------------------------------------------------------------- schedule rule


def implicit_scale_sizes(num_latents: int, mode: str = "2d") -> tuple[int, ...]:
    """Tokens per scale of a model with ``num_latents`` latents (the model's default rule).

    ``"2d"``: squares of VAR's patch sides (:data:`IMPLICIT_SIDES`, else roughly
    geometric sides ending at ``sqrt(M)``); ``"1d"``: ``1, 2, 4, ...`` doubling, then ``M``.
    :func:`vat3d.schedule.default_scale_sizes` as a tuple; raises ``ValueError`` for a
    non-square ``M`` in 2d mode or an unknown mode.
    """
    m = int(num_latents)
    if m < 1:
        raise ValueError(f"number of latents must be >= 1, got {m}")
    return tuple(default_scale_sizes(m, mode))


def schedule_kind(scale_sizes: Sequence[int]) -> str | None:
    """``"2d"`` or ``"1d"`` if the schedule follows from its last size by the model's rule, else None.

    Such a schedule is stored as just its number of latents; any other as an explicit list.
    """
    sizes = tuple(int(n) for n in scale_sizes)
    if not sizes or not 1 <= sizes[-1] <= MAX_SCALE_TOKENS:
        return None
    for mode in ("2d", "1d"):
        try:
            if implicit_scale_sizes(sizes[-1], mode) == sizes:
                return mode
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------- transform


def _center_quanta(center: Sequence[float], scale: float) -> list[int] | None:
    """``round(c * scale * 8192)`` per component, or None if one does not fit (|q| >= 2**34)."""
    steps = scale * CENTER_STEPS  # exact: scale is a float32, 8192 a power of two
    out = []
    for c in center:
        x = c * steps
        if not math.isfinite(x) or abs(x) >= _CENTER_Q_LIMIT:
            return None
        q = round(x)
        if abs(q) >= _CENTER_Q_LIMIT:
            return None
        out.append(q)
    return out


def _dequantize(quanta: Sequence[int], scale: float) -> tuple[float, float, float]:
    steps = scale * CENTER_STEPS
    return tuple(q / steps for q in quanta)  # type: ignore[return-value]


def quantize_center(center: Sequence[float], scale: float) -> tuple[tuple[float, float, float], bool]:
    """The centre as a file stores it, and whether it is quantised.

    ``scale`` must already be a float32 value.  Quantised (the normal case):
    ``q / (8192 * scale)`` with ``q = round(c * 8192 * scale)``, so the stored centre is
    at most ``1 / (16384 * scale)`` original units (``2**-14`` box units) off.  A centre
    more than ``2**21`` box half-widths from the origin is kept exactly (float64).
    Applying it twice changes nothing.
    """
    center = tuple(float(c) for c in center)
    quanta = _center_quanta(center, scale)
    if quanta is None:
        return center, False  # type: ignore[return-value]
    return _dequantize(quanta, scale), True


def _zigzag(q: int) -> int:
    return 2 * q if q >= 0 else -2 * q - 1


def _unzigzag(z: int) -> int:
    return z >> 1 if not z & 1 else -((z + 1) >> 1)


# --------------------------------------------------------------------------- CRC-8


def _crc8_table(poly: int) -> bytes:
    table = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ poly) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table[i] = c
    return bytes(table)


_CRC8_TABLE = _crc8_table(0x2F)


def crc8(data: BytesLike) -> int:
    """CRC-8/AUTOSAR (poly 0x2F, init 0xFF, xorout 0xFF, not reflected; ``crc8(b"123456789") == 0xDF``).

    Detects every single-bit error and every burst of up to 8 bits at any length, every
    odd number of flipped bits (the polynomial has the factor x + 1) and every 2- or
    3-bit error within 119 bits.
    """
    c = 0xFF
    table = _CRC8_TABLE
    for byte in bytes(data):
        c = table[c ^ byte]
    return c ^ 0xFF


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class VatHeader:
    """Everything in a ``.vat`` file except the token payload.

    Fields are normalised on construction to what the file stores, so a header
    survives an encode/decode round trip unchanged: fingerprints keep their first
    :data:`FINGERPRINT_BYTES` bytes (a model's 8-byte fingerprint may be passed),
    ``scale`` is rounded to float32 and ``center`` is quantised to
    ``1 / (8192 * scale)`` (see :func:`quantize_center`).  ``bits_per_token``
    defaults to ``ceil(log2 codebook_size)`` and ``num_scales_stored`` (how many
    leading scales the writer stored) to all of them.
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
        fp = bytes(self.model_fingerprint)
        put(self, "model_fingerprint", fp[:FINGERPRINT_BYTES] if len(fp) >= FINGERPRINT_BYTES else fp)
        put(self, "codebook_size", int(self.codebook_size))
        put(self, "version", int(self.version))
        if self.generator_fingerprint is not None:
            gen = bytes(self.generator_fingerprint)
            put(self, "generator_fingerprint", gen[:FINGERPRINT_BYTES] if len(gen) >= FINGERPRINT_BYTES else gen)
        put(self, "scale_sizes", tuple(int(n) for n in self.scale_sizes))
        put(self, "scale", _f32(self.scale))
        center = tuple(float(c) for c in self.center)
        if len(center) == 3 and all(map(math.isfinite, center)) and math.isfinite(self.scale) and self.scale > 0:
            center = quantize_center(center, self.scale)[0]
        put(self, "center", center)
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
        """``(center, scale)`` normalisation transform (``box = (original - center) * scale``)."""
        return self.center, self.scale

    @property
    def schedule_mode(self) -> str | None:
        """``"2d"``/``"1d"`` if the file stores the schedule as its number of latents, None if as a list."""
        return schedule_kind(self.scale_sizes)

    @property
    def center_quantized(self) -> bool:
        """Whether the file stores the centre quantised (else exactly, as float64)."""
        return _center_quanta(self.center, self.scale) is not None

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
        raise exc(f"unsupported .vat format version {h.version} (this vat3d writes version {FORMAT_VERSION})")
    if len(h.model_fingerprint) != FINGERPRINT_BYTES:
        raise exc(f"model_fingerprint must be at least {FINGERPRINT_BYTES} bytes, got {len(h.model_fingerprint)}")
    if h.generator_fingerprint is not None and len(h.generator_fingerprint) != FINGERPRINT_BYTES:
        raise exc(
            f"generator_fingerprint must be at least {FINGERPRINT_BYTES} bytes, got {len(h.generator_fingerprint)}"
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
        raise exc(f"center {h.center} is not finite")
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
    quanta = _center_quanta(h.center, h.scale)
    stored = int(h.num_scales_stored)
    flags = (
        (_FLAG_ENTROPY if h.coding == "entropy" else 0)
        | (_FLAG_GENERATOR if h.generator_fingerprint is not None else 0)
        | (_FLAG_PREFIX if stored < len(h.scale_sizes) else 0)
        | (_FLAG_CENTER_F64 if quanta is None else 0)
    )
    mode = schedule_kind(h.scale_sizes)
    kind = {"2d": _SCHEDULE_2D, "1d": _SCHEDULE_1D, None: _SCHEDULE_EXPLICIT}[mode]
    explicit_v = h.codebook_size != 1 << h.bits_per_token
    out = bytearray(MAGIC)
    out.append(FORMAT_VERSION << _VERSION_SHIFT | flags)
    out.append((h.bits_per_token - 1) | kind << _SCHEDULE_SHIFT | (_TOKEN_EXPLICIT_V if explicit_v else 0))
    if explicit_v:
        out += _varint(h.codebook_size)
    if mode is None:
        out += _varint(len(h.scale_sizes))
        for n in h.scale_sizes:
            out += _varint(n)
    elif mode == "2d":
        out += _varint(math.isqrt(h.scale_sizes[-1]))  # the latent grid's side
    else:
        out += _varint(h.scale_sizes[-1])
    if stored < len(h.scale_sizes):
        out += _varint(stored)
    out += h.model_fingerprint
    if h.generator_fingerprint is not None:
        out += h.generator_fingerprint
    out += _F32.pack(h.scale)
    if quanta is None:
        out += _F64x3.pack(*h.center)
    else:
        for q in quanta:
            out += _varint(_zigzag(q))
    for n in entropy_lengths:
        out += _varint(n)
    return bytes(out)


def _assemble(header_fields: bytes, payloads: Sequence[bytes]) -> bytes:
    """Append the header check, the payloads and their chained CRC checks."""
    out = bytearray(header_fields)
    out.append(crc8(header_fields))
    crc = zlib.crc32(out)
    last = len(payloads) - 1
    for k, payload in enumerate(payloads):
        out += payload
        crc = zlib.crc32(payload, crc)
        check = struct.pack("<I", crc) if k == last else bytes([crc & 0xFF])
        out += check
        crc = zlib.crc32(check, crc)
    return bytes(out)


def _payload_lengths(header: VatHeader, entropy_lengths: Sequence[int] | None) -> tuple[list[int], Sequence[int]]:
    stored = int(header.num_scales_stored)
    if header.coding == "raw":
        return [packed_size(n, header.bits_per_token) for n in header.scale_sizes[:stored]], ()
    if entropy_lengths is None or len(entropy_lengths) != stored:
        raise ValueError("entropy coding needs one payload length per stored scale")
    return list(entropy_lengths), list(entropy_lengths)


def vat_file_size(header: VatHeader, entropy_lengths: Sequence[int] | None = None) -> int:
    """Exact size in bytes of the complete file for ``header``.

    For raw coding the payload of scale k is ``ceil(n_k * bits / 8)`` bytes; for
    entropy coding pass the per-scale payload lengths.
    """
    sizes, lengths = _payload_lengths(header, entropy_lengths)
    return sum(sizes) + vat_overhead(header, entropy_lengths)


def vat_overhead(header: VatHeader, entropy_lengths: Sequence[int] | None = None) -> int:
    """Bytes of the complete file that are not token payload: header fields and every check byte."""
    _, lengths = _payload_lengths(header, entropy_lengths)
    stored = int(header.num_scales_stored)
    return (
        len(_header_fields(header, lengths))
        + HEADER_CHECK_BYTES
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
    ``model_fingerprint`` has at least 4 bytes (the file keeps the first 4).
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

    def varint(self, what: str, max_bytes: int = MAX_VARINT_BYTES) -> int:
        value = 0
        for i in range(max_bytes):
            byte = self.u8(what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise VatFormatError(f"non-canonical varint for {what} at offset {self.pos - i - 1}")
                return value
        raise VatFormatError(f"varint for {what} longer than {max_bytes} bytes (value too large)")


def _as_memoryview(data: BytesLike) -> memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f".vat data must be bytes-like, got {type(data).__name__}")
    mv = memoryview(data)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    return mv


def _check_fingerprint_arg(fp: bytes | None, name: str) -> None:
    if fp is not None and len(fp) < FINGERPRINT_BYTES:
        raise ValueError(f"{name} must be at least {FINGERPRINT_BYTES} bytes, got {len(fp)}")


def _check_magic(buf: memoryview) -> None:
    """Reject empty data, version-1 files and foreign data with a message naming the problem."""
    if len(buf) == 0:
        raise VatFormatError("empty data: not a .vat file")
    head = bytes(buf[: len(V1_MAGIC) + 1])
    if head[: len(V1_MAGIC)] == V1_MAGIC:
        old = head[len(V1_MAGIC) :]
        if old == b"\x01":
            raise VatFormatError(
                f"this is a version-1 .vat file (vat3d 0.1); this vat3d reads version {FORMAT_VERSION}: "
                "re-encode the mesh"
            )
        what = f"version {old[0]}" if old else "truncated before its version byte"
        raise VatFormatError(
            f"this is an old-layout .vat file (magic {V1_MAGIC!r}, {what}); this vat3d reads version "
            f"{FORMAT_VERSION}: re-encode the mesh"
        )
    if head[: len(MAGIC)] != MAGIC[: len(head)]:
        raise VatFormatError(f"not a .vat file: bad magic {bytes(buf[:4])!r} (expected {MAGIC!r})")


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
    _check_magic(buf)
    cur = _Cursor(buf)
    cur.take(len(MAGIC), "magic")

    # Version and flags, then the token byte: needed to know the layout.
    byte = cur.u8("version and flags")
    version, flags = byte >> _VERSION_SHIFT, byte & ((1 << _VERSION_SHIFT) - 1)
    if version != FORMAT_VERSION:
        raise VatFormatError(
            f"unsupported .vat format version {version} (this vat3d reads version {FORMAT_VERSION}"
            + ("; the file is from a newer vat3d)" if version > FORMAT_VERSION else ")")
        )
    if flags & ~_KNOWN_FLAGS:
        raise VatFormatError(f"unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x} in .vat header")
    token_byte = cur.u8("bits per token and schedule")
    if token_byte & _TOKEN_RESERVED:
        raise VatFormatError(f"reserved bit 0x{_TOKEN_RESERVED:02x} set in the .vat header's token byte")
    bits = (token_byte & 0x0F) + 1
    kind = (token_byte >> _SCHEDULE_SHIFT) & 0x03
    if kind not in (_SCHEDULE_2D, _SCHEDULE_1D, _SCHEDULE_EXPLICIT):
        raise VatFormatError(f"unknown schedule kind {kind} in .vat header")
    explicit_v = bool(token_byte & _TOKEN_EXPLICIT_V)
    codebook_size = cur.varint("codebook size") if explicit_v else 1 << bits

    # Schedule (counts are capped before they drive any loop).
    if kind == _SCHEDULE_EXPLICIT:
        num_scales = cur.varint("number of scales")
        if not 1 <= num_scales <= MAX_SCALES:
            raise VatFormatError(f"number of scales {num_scales} out of range [1, {MAX_SCALES}]")
        scale_sizes = tuple(cur.varint(f"size of scale {k}") for k in range(num_scales))
    else:
        mode = _SCHEDULE_NAMES[kind]
        if kind == _SCHEDULE_2D:
            side = cur.varint("latent grid side")
            if not 1 <= side <= _MAX_SIDE:
                raise VatFormatError(f"latent grid side {side} out of range [1, {_MAX_SIDE}]")
            latents = side * side
        else:
            latents = cur.varint("number of latents")
            if not 1 <= latents <= MAX_SCALE_TOKENS:
                raise VatFormatError(f"number of latents {latents} out of range [1, {MAX_SCALE_TOKENS}]")
        scale_sizes = implicit_scale_sizes(latents, mode)
    num_scales = len(scale_sizes)
    if flags & _FLAG_PREFIX:
        stored = cur.varint("number of stored scales")
        if not 1 <= stored < num_scales:
            raise VatFormatError(
                f"number of stored scales {stored} out of range [1, {num_scales - 1}] (prefix flag set)"
            )
    else:
        stored = num_scales
    model_fp = bytes(cur.take(FINGERPRINT_BYTES, "model fingerprint"))
    gen_fp = bytes(cur.take(FINGERPRINT_BYTES, "generator fingerprint")) if flags & _FLAG_GENERATOR else None
    (sc,) = _F32.unpack(cur.take(_F32.size, "scale"))
    if flags & _FLAG_CENTER_F64:
        center = _F64x3.unpack(cur.take(_F64x3.size, "center (float64)"))
        quanta = None
    else:
        quanta = [_unzigzag(cur.varint(f"center {axis}", CENTER_VARINT_BYTES)) for axis in "xyz"]
    entropy = bool(flags & _FLAG_ENTROPY)
    lengths = [cur.varint(f"payload length of scale {k}") for k in range(stored)] if entropy else None

    # Header check: CRC-8 of everything so far.
    header_end = cur.pos
    check = cur.u8("header check")
    if check != crc8(buf[:header_end]):
        raise VatFormatError("header checksum mismatch: .vat file is corrupt")
    crc = zlib.crc32(buf[: cur.pos])

    if not (math.isfinite(sc) and sc > 0):
        raise VatFormatError(f"scale {sc} must be finite and > 0 (float32)")
    if quanta is not None:
        if any(abs(q) >= _CENTER_Q_LIMIT for q in quanta):
            raise VatFormatError(f"quantised center {quanta} out of range (|q| < 2**34)")
        center = _dequantize(quanta, sc)
    header = VatHeader(
        model_fingerprint=model_fp,
        codebook_size=codebook_size,
        scale_sizes=scale_sizes,
        center=center,
        scale=sc,
        coding="entropy" if entropy else "raw",
        generator_fingerprint=gen_fp,
        num_scales_stored=stored,
        bits_per_token=bits,
        version=version,
    )
    _validate_header(header, VatFormatError)
    # One header, one byte string: refuse longer forms than the writer uses.
    if explicit_v and codebook_size == 1 << bits:
        raise VatFormatError(f"codebook size {codebook_size} = 2**{bits} stored explicitly: non-canonical header")
    if kind == _SCHEDULE_EXPLICIT and header.schedule_mode is not None:
        raise VatFormatError(
            f"explicit schedule {scale_sizes} is the implicit {header.schedule_mode} schedule of "
            f"{scale_sizes[-1]} latents: non-canonical header"
        )
    if kind == _SCHEDULE_1D and header.schedule_mode != "1d":
        raise VatFormatError("implicit 1d schedule of 1 latent is the 2d one: non-canonical header")
    if quanta is None and header.center_quantized:
        raise VatFormatError(f"float64 center {center} fits the quantised form: non-canonical header")
    if _header_fields(header, lengths or ()) != buf[:header_end]:  # pragma: no cover - safety net
        raise VatFormatError("non-canonical .vat header encoding")
    if expected_fingerprint is not None and not fingerprint_matches(model_fp, expected_fingerprint):
        raise VatModelMismatch(model_fp, bytes(expected_fingerprint), "model")
    if expected_generator_fingerprint is not None and not fingerprint_matches(
        gen_fp, expected_generator_fingerprint
    ):
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

