"""Shape tokens on disk: the ``.vat`` format, mesh <-> token codec, entropy coding.

    from vat3d.codec import encode_mesh, decode_tokens, decode_file

Names are imported lazily so that ``vat3d.codec.vatfile`` stays importable without torch.
"""

from __future__ import annotations

import importlib

_API = ("EncodedShape", "EntropyGeneratorRequired", "decode_file", "decode_tokens", "encode_mesh", "read_tokens",
        "tokens_to_bytes")
_VATFILE = ("VatFormatError", "VatModelMismatch", "VatTruncatedWarning")
_ENTROPY = ("entropy_encode", "entropy_decode")

__all__ = [*_API, *_VATFILE, *_ENTROPY]


def __getattr__(name: str):
    for module, names in (("api", _API), ("vatfile", _VATFILE), ("entropy", _ENTROPY)):
        if name in names:
            return getattr(importlib.import_module(f"vat3d.codec.{module}"), name)
    raise AttributeError(f"module 'vat3d.codec' has no attribute {name!r}")
