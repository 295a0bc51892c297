"""The renderer now lives on the geometry floor, :mod:`vat3d.renderers`; this name stays importable."""

from vat3d.renderers.raycast import camera_pose, make_sheet, render_mesh, render_views, save_sheet

__all__ = ["camera_pose", "make_sheet", "render_mesh", "render_views", "save_sheet"]
