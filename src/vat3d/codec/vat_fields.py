"""The ``.vat`` format's constants, errors and field codings: caps and flags, the schedule rule, the
quantised centre, zigzag varints and CRC-8 (the layout: :mod:`vat3d.codec.vatfile`, docs/vat-format.md)."""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from typing import Union

import numpy as np

from vat3d.schedule import DEFAULT_SIDES, default_scale_sizes


PathLike = Union[str, "os.PathLike[str]"]
BytesLike = Union[bytes, bytearray, memoryview]

MAGIC = b"VT"
V1_MAGIC = b"VAT3"  # version 1 (vat3d 0.1): b"VAT3" followed by the version byte 1
FORMAT_VERSION = 2  # raw (bit-packed) files
#: Entropy-coded files since each payload opens with a CRC-8 of its scale's decoded tokens
#: (:func:`vat3d.codec.entropy.token_check`); version-2 entropy files lack it and are refused.
ENTROPY_FORMAT_VERSION = 3
READ_VERSIONS = (FORMAT_VERSION, ENTROPY_FORMAT_VERSION)
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
_FLAG_ORIENTATION = 0x10  # the shape was tokenized turned: one byte (1..23) after the centre names the turn
_KNOWN_FLAGS = _FLAG_ENTROPY | _FLAG_GENERATOR | _FLAG_PREFIX | _FLAG_CENTER_F64 | _FLAG_ORIENTATION
#: Axis-aligned orientations a file can name (the proper rotations of the cube; 0 is the identity).
NUM_ORIENTATIONS = 24
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


