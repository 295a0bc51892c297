"""The encode effort used when none is named, chosen by measurement (docs/codec.md, "`turned`"). Free of
torch, so command-line option defaults and the app can read it."""

#: Effort of ``vat3d encode``, ``encode_mesh``, ``vat3d eval`` and the app: the amortised encoder in the six
#: axis-aligned turns that helped most on validation meshes, the best-scoring one kept (median 0.17 s per
#: shape on 2 idle cores; :data:`vat3d.codec.refine.EFFORTS` holds the others).
DEFAULT_EFFORT = "turned"
