"""Renderers on the geometry floor: data (tokenize's condition images), training previews and evaluation
all draw meshes with them (:mod:`vat3d.renderers.raycast`)."""

from vat3d.renderers.raycast import camera_pose, make_sheet, render_mesh, render_views, save_sheet

__all__ = ["camera_pose", "make_sheet", "render_mesh", "render_views", "save_sheet"]
