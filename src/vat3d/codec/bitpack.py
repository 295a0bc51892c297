"""Fixed-width bit packing of token indices (numpy-vectorised).

A sequence of ``count`` unsigned integers, each ``bits`` wide (1..16), is laid out
as one little-endian bit stream: value ``i`` occupies stream bits
``[i*bits, (i+1)*bits)``, least significant bit first, and stream bit ``p`` is bit
``p % 8`` (LSB = 0) of byte ``p // 8``.  The last byte is zero-padded, so the
packed size is ``ceil(count * bits / 8)`` bytes.

Example: ``pack_bits([1, 2, 3], 2) == bytes([0b00111001])``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "MAX_BITS",
    "bits_for_codebook",
    "pack_bits",
    "packed_size",
    "padding_is_zero",
    "unpack_bits",
]

MAX_BITS = 16


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    bits = int(bits)
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    return bits


def bits_for_codebook(codebook_size: int) -> int:
    """Bits needed per token for a codebook of ``codebook_size`` entries.

    ``ceil(log2(V))``, but at least 1 (so ``V=2 -> 1``, ``V=4096 -> 12``).
    """
    v = int(codebook_size)
    if v < 1:
        raise ValueError(f"codebook size must be >= 1, got {v}")
    return max(1, (v - 1).bit_length())


def packed_size(count: int, bits: int) -> int:
    """Number of bytes ``pack_bits`` produces for ``count`` values of ``bits`` bits."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return (int(count) * _check_bits(bits) + 7) // 8


def pack_bits(values: ArrayLike, bits: int) -> bytes:
    """Pack non-negative integers ``< 2**bits`` into ``ceil(n*bits/8)`` bytes.

    ``values`` may have any shape; it is flattened in C order.  Raises
    ``ValueError`` for out-of-range values and ``TypeError`` for non-integer input.
    """
    bits = _check_bits(bits)
    arr = np.asarray(values)
    if arr.size == 0:
        return b""
    if arr.dtype.kind not in "iub":
        raise TypeError(f"values must be integers, got dtype {arr.dtype}")
    arr = arr.ravel()
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise ValueError(f"values must be >= 0, got {int(arr.min())}")
    if int(arr.max()) >= (1 << bits):
        raise ValueError(f"value {int(arr.max())} does not fit in {bits} bits")
    # Little-endian uint16 bytes -> per-value bit rows (LSB first) -> keep `bits` columns.
    as_bytes = arr.astype("<u2").view(np.uint8).reshape(-1, 2)
    bit_rows = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :bits]
    return np.packbits(bit_rows.ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes | bytearray | memoryview, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: read ``count`` values of ``bits`` bits.

    Returns a 1-D ``int64`` array.  ``data`` must hold at least
    ``packed_size(count, bits)`` bytes (``ValueError`` otherwise); extra bytes are
    ignored.  Padding bits are not inspected (see :func:`padding_is_zero`).
    """
    bits = _check_bits(bits)
    count = int(count)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    need = (count * bits + 7) // 8
    if len(data) < need:
        raise ValueError(f"need {need} bytes to unpack {count} x {bits}-bit values, got {len(data)}")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    raw = np.frombuffer(data, dtype=np.uint8, count=need)
    stream = np.unpackbits(raw, bitorder="little", count=count * bits)
    # Re-pack each row of `bits` bits into 1 or 2 little-endian bytes (zero-filled).
    rows = np.packbits(stream.reshape(count, bits), axis=1, bitorder="little")
    if rows.shape[1] == 1:
        return rows[:, 0].astype(np.int64)
    return np.ascontiguousarray(rows).view("<u2")[:, 0].astype(np.int64)


def padding_is_zero(data: bytes | bytearray | memoryview, bits: int, count: int) -> bool:
    """True if the unused high bits of the last packed byte are all zero."""
    nbits = int(count) * _check_bits(bits)
    used = nbits % 8
    if used == 0:
        return True
    return (data[(nbits + 7) // 8 - 1] >> used) == 0
