"""The ``vat3d app`` web interface (Gradio; install with ``pip install 'vat3d[app]'``).

:mod:`vat3d.app.core` holds the logic (no gradio needed); :mod:`vat3d.app.web` the page.
"""

from __future__ import annotations

__all__ = ["build_app", "launch_app"]


def __getattr__(name: str):  # lazy: importing vat3d.app must not import gradio
    if name in __all__:
        from vat3d.app import web

        return getattr(web, name)
    raise AttributeError(f"module 'vat3d.app' has no attribute {name!r}")
