"""Evaluation: reconstruction / generation metrics, classical baselines and CPU rendering.

Submodules (imported lazily, so ``import vat3d.evaluation`` stays cheap):

* :mod:`vat3d.evaluation.metrics` - Chamfer-L1, F-score, IoU, ``compare_meshes``, PointFlow MMD/COV/1-NNA.
* :mod:`vat3d.evaluation.baselines` - Draco, simplification + Draco under a byte budget, PLY sizes.
* :mod:`vat3d.evaluation.render` - the renderer's old name (it lives in :mod:`vat3d.renderers`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "sample_surface_points": "metrics",
    "point_to_surface_distance": "metrics",
    "chamfer_l1": "metrics",
    "fscore": "metrics",
    "iou": "metrics",
    "compare_meshes": "metrics",
    "pairwise_chamfer": "metrics",
    "mmd_cov_1nna": "metrics",
    "weld": "baselines",
    "draco_encode": "baselines",
    "draco_roundtrip": "baselines",
    "simplify": "baselines",
    "best_under_budget": "baselines",
    "ply_bytes": "baselines",
    "render_mesh": "render",
    "render_views": "render",
    "make_sheet": "render",
    "save_sheet": "render",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"vat3d.evaluation.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'vat3d.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
