"""The shipped generator's sampling defaults, chosen by ``benchmarks/sampling_sweep.py`` with its stated rule
(docs/generation.md, "Sampling defaults"). Free of torch, so command-line option defaults can read them."""

#: Classifier-free guidance scale of ``vat3d generate``, the pipelines, the app and ``eval-generation``.
CFG_SCALE = 2.0
#: ``"constant"`` (the same scale at every scale index) or ``"linear"`` (1 at the first, rising to CFG_SCALE).
CFG_SCHEDULE = "constant"
