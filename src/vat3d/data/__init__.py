"""Data: procedural shapes, mesh sources, dataset preparation and the PyTorch dataset.

Names are imported lazily so that ``import vat3d.data`` (and the preparation workers) do not
import torch; only :class:`PreparedShapeDataset` needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "FAMILIES": "vat3d.data.procedural",
    "ProceduralShape": "vat3d.data.procedural",
    "make_family": "vat3d.data.procedural",
    "make_shape": "vat3d.data.procedural",
    "SourceItem": "vat3d.data.sources",
    "list_source": "vat3d.data.sources",
    "PrepareSettings": "vat3d.data.prepare",
    "PrepareSummary": "vat3d.data.prepare",
    "load_prepared": "vat3d.data.prepare",
    "prepare_dataset": "vat3d.data.prepare",
    "prepare_shape": "vat3d.data.prepare",
    "read_metadata": "vat3d.data.metadata",
    "PreparedShapeDataset": "vat3d.data.dataset",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from vat3d.data.dataset import PreparedShapeDataset
    from vat3d.data.metadata import read_metadata
    from vat3d.data.prepare import PrepareSettings, PrepareSummary, load_prepared, prepare_dataset, prepare_shape
    from vat3d.data.procedural import FAMILIES, ProceduralShape, make_family, make_shape
    from vat3d.data.sources import SourceItem, list_source


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'vat3d.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
