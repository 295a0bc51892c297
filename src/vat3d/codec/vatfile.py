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

import os
from collections.abc import Iterable, Sequence

import numpy as np

from vat3d.fileio import atomic_write_bytes
from vat3d.codec.vat_fields import (  # noqa: F401 - re-exported
    BytesLike,
    CENTER_STEPS,
    CODINGS,
    FINGERPRINT_BYTES,
    ENTROPY_FORMAT_VERSION,
    FORMAT_VERSION,
    READ_VERSIONS,
    IMPLICIT_SIDES,
    MAGIC,
    MAX_CODEBOOK_SIZE,
    MAX_FILE_BYTES,
    MAX_SCALES,
    MAX_SCALE_TOKENS,
    MAX_TOTAL_TOKENS,
    NUM_ORIENTATIONS,
    PathLike,
    V1_MAGIC,
    VatFormatError,
    VatModelMismatch,
    VatTruncatedWarning,
    crc8,
    fingerprint_matches,
    implicit_scale_sizes,
    max_entropy_payload_bytes,
    quantize_center,
    schedule_kind,
)
from vat3d.codec.vat_header import (  # noqa: F401 - re-exported
    VatFile,
    VatHeader,
    VatPayloads,
    _header_fields,
    encode_vat,
    encode_vat_payloads,
    vat_file_size,
    vat_overhead,
)
from vat3d.codec.vat_parse import (  # noqa: F401 - re-exported
    decode_vat,
    decode_vat_header,
    decode_vat_payloads,
)

# The format lives in three rooms: vat_fields (constants, errors, field codings), vat_header (the
# header and the encoder), vat_parse (the truncation-tolerant parser); this module is its public face
# and the file I/O.

__all__ = [
    "CENTER_STEPS",
    "CODINGS",
    "FINGERPRINT_BYTES",
    "ENTROPY_FORMAT_VERSION",
    "FORMAT_VERSION",
    "READ_VERSIONS",
    "IMPLICIT_SIDES",
    "MAGIC",
    "MAX_CODEBOOK_SIZE",
    "MAX_FILE_BYTES",
    "MAX_SCALES",
    "MAX_SCALE_TOKENS",
    "MAX_TOTAL_TOKENS",
    "NUM_ORIENTATIONS",
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
    orientation: int = 0,
) -> int:
    """Encode (see :func:`encode_vat`) and write atomically; returns the file size."""
    data = encode_vat(
        tokens,
        model_fingerprint=model_fingerprint,
        codebook_size=codebook_size,
        scale_sizes=scale_sizes,
        center=center,
        scale=scale,
        orientation=orientation,
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


