"""vat3d: compact 3D shape tokens and autoregressive 3D generation."""

__version__ = "0.1.0"
