"""Parsing ``.vat`` bytes: bounds-checked, truncation-tolerant, never trusting a length before checking it."""

from __future__ import annotations

import math
import struct
import warnings
import zlib

from vat3d.codec.bitpack import (
    packed_size,
    padding_is_zero,
    unpack_bits,
)
from vat3d.codec.vat_fields import (
    _SCHEDULE_1D,
    _SCHEDULE_2D,
    _SCHEDULE_EXPLICIT,
    BytesLike,
    CENTER_VARINT_BYTES,
    FINAL_CHECK_BYTES,
    FINGERPRINT_BYTES,
    FORMAT_VERSION,
    READ_VERSIONS,
    MAGIC,
    MAX_FILE_BYTES,
    MAX_SCALES,
    MAX_SCALE_TOKENS,
    MAX_VARINT_BYTES,
    NUM_ORIENTATIONS,
    SCALE_CHECK_BYTES,
    V1_MAGIC,
    VatFormatError,
    VatModelMismatch,
    VatTruncatedWarning,
    _CENTER_Q_LIMIT,
    _F32,
    _F64x3,
    _FLAG_CENTER_F64,
    _FLAG_ENTROPY,
    _FLAG_GENERATOR,
    _FLAG_ORIENTATION,
    _FLAG_PREFIX,
    _KNOWN_FLAGS,
    _MAX_SIDE,
    _SCHEDULE_NAMES,
    _SCHEDULE_SHIFT,
    _TOKEN_EXPLICIT_V,
    _TOKEN_RESERVED,
    _VERSION_SHIFT,
    _dequantize,
    _unzigzag,
    crc8,
    fingerprint_matches,
    implicit_scale_sizes,
    max_entropy_payload_bytes,
)
from vat3d.codec.vat_header import (
    VatFile,
    VatHeader,
    VatPayloads,
    _header_fields,
    _validate_header,
)


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
    if version not in READ_VERSIONS:
        raise VatFormatError(
            f"unsupported .vat format version {version} (this vat3d reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}"
            + ("; the file is from a newer vat3d)" if version > max(READ_VERSIONS) else ")")
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
    orientation = cur.u8("orientation") if flags & _FLAG_ORIENTATION else 0
    if flags & _FLAG_ORIENTATION and not 1 <= orientation < NUM_ORIENTATIONS:
        raise VatFormatError(f"orientation {orientation} out of range [1, {NUM_ORIENTATIONS - 1}] (orientation flag set)")
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
        orientation=orientation,
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


