"""The scale schedule rule: how many tokens each scale of a multi-scale quantizer holds.

Free of torch and of any model code, so that both the quantizer (``vat3d.models.quantizer``) and the
token file format (``vat3d.codec.vatfile``, which must read files without model code) use this one rule.
"""

from __future__ import annotations

import math

# VAR's patch sides; 24 and 32 extend the 16-side schedule by one and two scales.
DEFAULT_SIDES: dict[int, tuple[int, ...]] = {
    4: (1, 2, 3, 4),
    6: (1, 2, 3, 4, 6),
    8: (1, 2, 3, 4, 5, 6, 8),
    12: (1, 2, 3, 4, 6, 8, 10, 12),
    16: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    24: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 24),
    32: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 24, 32),
}


def default_scale_sizes(num_latents: int, mode: str = "2d") -> list[int]:
    """Token counts per scale: VAR's squared patch sides (2d) or doubling counts (1d)."""
    if mode == "2d":
        side = math.isqrt(num_latents)
        if side * side != num_latents:
            raise ValueError(f"2d scales need a square number of latents, got {num_latents}")
        sides = DEFAULT_SIDES.get(side)
        if sides is None:  # roughly geometric sides ending at `side`
            sides = sorted({max(1, round(side ** (i / 7))) for i in range(8)} | {side})
        return [s * s for s in sides]
    if mode == "1d":
        sizes, n = [], 1
        while n < num_latents:
            sizes.append(n)
            n *= 2
        return sizes + [num_latents]
    raise ValueError(f"unknown scale mode {mode!r} (use '2d' or '1d')")
