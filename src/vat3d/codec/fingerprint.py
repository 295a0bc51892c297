"""A model's fingerprint as ``.vat`` files record it (shared by raw and entropy coding)."""

from __future__ import annotations

__all__ = ["model_fingerprint_bytes"]


def model_fingerprint_bytes(model) -> bytes:
    """The model's 8-byte fingerprint, cached on the model until a weight changes.

    A ``.vat`` file keeps its first 4 bytes (``vatfile.FINGERPRINT_BYTES``); readers compare
    those, and mismatch errors show the file's 4 bytes next to the model's full fingerprint.

    ``fingerprint()`` hashes every weight (tens of ms for a small model); the cache key is each
    state tensor's identity and in-place version counter, so training or loading weights
    invalidates it.
    """
    key = tuple((id(t), t._version) for t in model.state_dict(keep_vars=True).values())
    cached = getattr(model, "_vat3d_fingerprint_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    fingerprint = bytes.fromhex(model.fingerprint())
    try:
        object.__setattr__(model, "_vat3d_fingerprint_cache", (key, fingerprint))
    except (AttributeError, TypeError):  # pragma: no cover - exotic model objects
        pass
    return fingerprint
