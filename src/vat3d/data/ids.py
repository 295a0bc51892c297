"""What follows from a shape's id alone: its random stream, its shard, its file path, its split.

Every per-shape stream of the dataset toolkit (prepare's samples, tokenize's views, the dataset's
per-epoch subsets) is a pure function of (seed, id, ...), so results do not depend on the order,
the sharding or the number of workers.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["id_entropy", "id_rng", "id_relpath", "id_shard", "id_unit", "parse_shard"]


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def id_entropy(item_id: str) -> int:
    """64 bits of the id's SHA-1."""
    return int(_sha1(item_id)[:16], 16)


def id_rng(seed: int, item_id: str, *extra: int, seed_bits: int = 32) -> np.random.Generator:
    """A random stream that is a pure function of ``(seed, *extra, id)`` (the seed's low ``seed_bits`` bits)."""
    mask = (1 << seed_bits) - 1
    return np.random.default_rng(np.random.SeedSequence([int(seed) & mask, *extra, id_entropy(item_id)]))


def id_shard(item_id: str, count: int) -> int:
    """The shard (0..count-1) an id belongs to: a hash of the id, independent of order."""
    return int(_sha1(item_id)[:8], 16) % count


def parse_shard(shard: "tuple[int, int] | str | None") -> tuple[int, int]:
    """``"I/N"``, ``(I, N)`` or None (all) -> ``(index, count)``, checked."""
    if shard is None:
        return 0, 1
    if isinstance(shard, str):
        try:
            index_text, count_text = shard.split("/")
            shard = (int(index_text), int(count_text))
        except ValueError as err:
            raise ValueError(f"--shard must look like I/N (e.g. 3/8), got {shard!r}") from err
    index, count = int(shard[0]), int(shard[1])
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1} (got {index}/{count})")
    return index, count


def id_relpath(folder: str, item_id: str, suffix: str = ".npz") -> str:
    """``folder/ab/<id><suffix>`` with ``ab`` the first two hex digits of the id's SHA-1 (256 subfolders)."""
    return f"{folder}/{_sha1(item_id)[:2]}/{item_id}{suffix}"


def id_unit(item_id: str, salt: str) -> float:
    """A number in [0, 1) from a salted hash of the id (the train/val split uses salt ``"split"``)."""
    return int(_sha1(f"{salt}:{item_id}")[:12], 16) / float(1 << 48)
