"""The shipped generator's sampling and meshing defaults, chosen on held-out captions by the rule of
``benchmarks/sampling_sweep.py`` (no empty shape, family match >= 90 % of the classifier's ceiling, then
the lowest 1-NNA-CD) with the fragmentation target added (docs/generation.md, "Sampling defaults" and
"Whole shapes"). Free of torch, so command-line option defaults can read them."""

#: Classifier-free guidance scale of ``vat3d generate``, the pipelines, the app and ``eval-generation``.
CFG_SCALE = 2.0
#: ``"constant"`` (the same scale at every scale index) or ``"linear"`` (1 at the first, rising to CFG_SCALE).
CFG_SCHEDULE = "constant"
#: Nucleus sampling mass (1: off).
TOP_P = 0.95
#: Best of this many samples per shape, the least torn kept (``generate_meshes(candidates=)``; 1: plain sampling).
CANDIDATES = 4
#: Lowerings of the meshed level tried, in turn, on a generated shape that comes out torn (``mend_torn``; (): off).
MEND_STEPS: tuple[float, ...] = (0.5, 1.0, 2.0)
#: A mesh with more than this share of its area outside its largest piece counts as torn.
MEND_SHARE = 0.01
