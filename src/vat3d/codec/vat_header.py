"""The ``.vat`` header (:class:`VatHeader`), its serialisation and the encoder (tokens or payloads -> bytes)."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vat3d.codec.bitpack import (
    bits_for_codebook,
    pack_bits,
    packed_size,
)
from vat3d.codec.vat_fields import (
    _SCHEDULE_1D,
    _SCHEDULE_2D,
    _SCHEDULE_EXPLICIT,
    BytesLike,
    CODINGS,
    FINAL_CHECK_BYTES,
    FINGERPRINT_BYTES,
    ENTROPY_FORMAT_VERSION,
    FORMAT_VERSION,
    READ_VERSIONS,
    HEADER_CHECK_BYTES,
    MAGIC,
    MAX_CODEBOOK_SIZE,
    MAX_SCALES,
    MAX_SCALE_TOKENS,
    MAX_TOTAL_TOKENS,
    MIN_CODEBOOK_SIZE,
    NUM_ORIENTATIONS,
    SCALE_CHECK_BYTES,
    _F32,
    _F64x3,
    _FLAG_CENTER_F64,
    _FLAG_ENTROPY,
    _FLAG_GENERATOR,
    _FLAG_ORIENTATION,
    _FLAG_PREFIX,
    _SCHEDULE_SHIFT,
    _TOKEN_EXPLICIT_V,
    _VERSION_SHIFT,
    _center_quanta,
    _f32,
    _varint,
    _zigzag,
    crc8,
    max_entropy_payload_bytes,
    quantize_center,
    schedule_kind,
)


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
    leading scales the writer stored) to all of them.  ``orientation`` (0..23) names the
    axis-aligned turn the shape was tokenized in (0: none; see docs/vat-format.md).
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
    orientation: int = 0

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "orientation", int(self.orientation))
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
    if h.version not in READ_VERSIONS:
        raise exc(f"unsupported .vat format version {h.version} (this vat3d writes versions "
                  f"{FORMAT_VERSION} (raw) and {ENTROPY_FORMAT_VERSION} (entropy-coded))")
    if h.version == ENTROPY_FORMAT_VERSION and h.coding != "entropy":
        raise exc(f"format version {ENTROPY_FORMAT_VERSION} is for entropy-coded files; raw files are "
                  f"version {FORMAT_VERSION}")
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
    if not 0 <= h.orientation < NUM_ORIENTATIONS:
        raise exc(f"orientation {h.orientation} out of range [0, {NUM_ORIENTATIONS - 1}]")


def _header_fields(h: VatHeader, entropy_lengths: Sequence[int] = ()) -> bytes:
    """Serialise the header up to (not including) its check value."""
    quanta = _center_quanta(h.center, h.scale)
    stored = int(h.num_scales_stored)
    flags = (
        (_FLAG_ENTROPY if h.coding == "entropy" else 0)
        | (_FLAG_GENERATOR if h.generator_fingerprint is not None else 0)
        | (_FLAG_PREFIX if stored < len(h.scale_sizes) else 0)
        | (_FLAG_CENTER_F64 if quanta is None else 0)
        | (_FLAG_ORIENTATION if h.orientation else 0)
    )
    mode = schedule_kind(h.scale_sizes)
    kind = {"2d": _SCHEDULE_2D, "1d": _SCHEDULE_1D, None: _SCHEDULE_EXPLICIT}[mode]
    explicit_v = h.codebook_size != 1 << h.bits_per_token
    out = bytearray(MAGIC)
    out.append(h.version << _VERSION_SHIFT | flags)
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
    if h.orientation:
        out.append(h.orientation)
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
    orientation: int = 0,
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
        orientation=orientation,
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


