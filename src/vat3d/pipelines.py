"""High-level generation and reconstruction, as used by the CLI, the demo and the web app.

    from vat3d.pretrained import load_generator, load_tokenizer
    from vat3d.pipelines import generate_meshes, reconstruct

    gen, tok = load_generator("default"), load_tokenizer("default")
    meshes = generate_meshes(gen, tok, text="a mug with a handle", n=4, seed=0)
    meshes[0].export("mug.glb"); meshes.tokens       # per-scale (n, n_k) token tensors
    mesh = reconstruct(tok, "chair.obj")              # encode + decode, in the chair's units

:func:`generate_meshes` builds the condition structure the generator's conditioner expects from
its ``cond_type``:

============  ======================================================================
cond_type     conditions passed to ``generator.generate``
============  ======================================================================
none          None with ``batch_size=n``
class         LongTensor (n,) of class ids (``class_label`` is a name or an int)
text          list of n captions
image         (n, 3, H, W) float tensor in [0, 1] (the conditioner resizes/normalises)
text+image    ``{"text": list[str] | None, "image": tensor | None}``
============  ======================================================================

Giving no condition to a conditional model samples from its learned null condition (what
classifier-free guidance uses as the unconditional branch); giving a condition the model cannot
take (text to a class-conditioned model, ...) is a :class:`ValueError` naming what it accepts.

Generated meshes live in the tokenizer's ``[-1, 1]^3`` box. A sample whose occupancy never
crosses zero (common with untrained weights) gives an **empty** mesh (no vertices, no faces)
rather than an error; ``meshes.empty`` lists which.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import trimesh

from vat3d.codec.effort_defaults import DEFAULT_EFFORT
from vat3d.geometry.pieces import drop_small_pieces, is_speck, torn_share
from vat3d.models.sampling_defaults import CANDIDATES, CFG_SCALE, CFG_SCHEDULE, MEND_SHARE, MEND_STEPS, TOP_P

__all__ = ["GeneratedMeshes", "generate_meshes", "generate_tokens", "build_conditions", "image_conditioner_of",
           "load_image", "tokens_to_mesh", "mend_torn", "candidate_score", "candidate_rank",
           "candidate_seed", "reconstruct",
           "COND_TYPES"]

#: The conditioner kinds the pipeline knows, and the inputs each accepts.
COND_TYPES: dict[str, tuple[str, ...]] = {
    "none": (),
    "class": ("class_label",),
    "text": ("text",),
    "image": ("image",),
    "text+image": ("text", "image"),
}
_INPUT_NAMES = {"text": "text", "image": "image", "class_label": "a class label"}

ImageLike = "str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor"


class GeneratedMeshes(list):
    """A list of ``trimesh.Trimesh`` (one per sample) that also carries how they were made.

    Attributes:
        tokens: per-scale token tensors, ``[(n, n_k) int64, ...]`` (CPU).
        empty: indices of the samples whose mesh is empty.
        seconds_tokens: wall-clock seconds of token sampling (all samples).
        seconds_decode: wall-clock seconds of decoding + surface extraction (all samples).
        settings: the sampling settings used (JSON-able).
    """

    def __init__(self, meshes: Sequence[trimesh.Trimesh], tokens: list[torch.Tensor], *,
                 seconds_tokens: float = 0.0, seconds_decode: float = 0.0, settings: dict | None = None):
        super().__init__(meshes)
        self.tokens = tokens
        self.seconds_tokens = seconds_tokens
        self.seconds_decode = seconds_decode
        self.settings = dict(settings or {})

    @property
    def meshes(self) -> list[trimesh.Trimesh]:
        return list(self)

    @property
    def empty(self) -> list[int]:
        return [i for i, mesh in enumerate(self) if is_empty(mesh)]

    def sample_tokens(self, i: int) -> list[torch.Tensor]:
        """Sample ``i``'s tokens as a list of (1, n_k) tensors."""
        return [t[i:i + 1] for t in self.tokens]


def is_empty(mesh: trimesh.Trimesh | None) -> bool:
    return mesh is None or len(mesh.faces) == 0 or len(mesh.vertices) == 0


# --------------------------------------------------------------------------- conditions


def cond_type_of(generator) -> str:
    """The generator's condition kind, aliases spelled out (``"multi"`` is ``"text+image"``)."""
    from vat3d.models.conditioners import canonical_cond_type

    return canonical_cond_type(str(generator.config.get("cond_type", "class")))


def image_conditioner_of(generator):
    """The generator's image conditioner (it sets the image size), or None if it takes no image."""
    from vat3d.models.conditioners import ImageConditioner

    for module in generator.conditioner.modules():
        if isinstance(module, ImageConditioner):
            return module
    return None


def load_image(image: Any, size: int | None = None, background: tuple[int, int, int] = (255, 255, 255)
               ) -> torch.Tensor:
    """One image -> a (3, H, W) float32 tensor in [0, 1].

    Accepts a path, a PIL image, a numpy array (H, W), (H, W, 3|4) uint8 or float in [0, 1], or a
    tensor (3, H, W) / (H, W, 3) in [0, 1]. Transparent pixels are composited on ``background``
    (the renderer's white); non-square images are padded to a square with it. With ``size`` the
    image is resized to ``size`` x ``size`` (the conditioner would resize anyway).
    """
    from PIL import Image

    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)  # CHW -> HWC
        image = t.numpy()
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = np.asarray(array, dtype=np.float64)
            if array.max(initial=0.0) <= 1.0 + 1e-6:
                array = array * 255.0
            array = np.clip(array + 0.5, 0, 255).astype(np.uint8)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
        image = Image.fromarray(array)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        image = Image.open(path)
        image.load()
    elif not isinstance(image, Image.Image):
        raise TypeError(f"unsupported image type {type(image).__name__} (give a path, PIL image, array or tensor)")

    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        image = Image.alpha_composite(canvas, rgba)
    image = image.convert("RGB")
    w, h = image.size
    if w != h:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), background)
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _as_image_batch(image: Any, n: int, size: int | None) -> torch.Tensor:
    """An image, a list of images or a (B, 3, H, W) batch -> (n, 3, S, S) in [0, 1]."""
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] > 1:
        items = list(image)
    elif isinstance(image, (list, tuple)):
        items = list(image)
    else:
        items = [image]
    tensors = [load_image(item, size) for item in items]
    if len({tuple(t.shape) for t in tensors}) > 1:  # mixed sizes: bring them to the first one's
        side = tensors[0].shape[-1]
        tensors = [torch.nn.functional.interpolate(t[None], size=(side, side), mode="bilinear",
                                                   align_corners=False)[0] for t in tensors]
    return _repeat(torch.stack(tensors), n, "images")


def _repeat(batch, n: int, what: str):
    """A batch of 1 repeated n times, or a batch of exactly n."""
    count = batch.shape[0] if isinstance(batch, torch.Tensor) else len(batch)
    if count == n:
        return batch
    if count == 1:
        return batch.expand(n, *batch.shape[1:]).contiguous() if isinstance(batch, torch.Tensor) else list(batch) * n
    raise ValueError(f"got {count} {what} for n={n} samples (give one, or one per sample)")


def _class_ids(generator, class_label: Any, n: int) -> torch.Tensor:
    conditioner = generator.conditioner
    labels = list(class_label) if isinstance(class_label, (list, tuple)) else [class_label]
    resolved = []
    for label in labels:
        if isinstance(label, torch.Tensor):
            label = int(label)
        if isinstance(label, str) and label not in getattr(conditioner, "class_to_id", {}):
            if label.strip().lstrip("-").isdigit():  # "3" from a command line
                label = int(label)
            else:
                names = getattr(conditioner, "class_names", None)
                known = ", ".join(names) if names else f"ids 0..{conditioner.num_classes - 1} (the model has no class names)"
                raise ValueError(f"unknown class {label!r}; this model knows: {known}")
        resolved.append(label)
    try:
        ids = conditioner.ids(resolved)
    except (KeyError, ValueError) as error:
        raise ValueError(str(error).strip("'\"")) from None
    return _repeat(ids, n, "class labels")


def build_conditions(generator, *, text: str | Sequence[str] | None = None, image: Any = None,
                     class_label: Any = None, n: int = 1) -> Any:
    """The ``conditions`` argument of ``generator.generate`` for n samples (None: the null condition).

    Raises ValueError for an input the generator's conditioner does not take.
    """
    cond_type = cond_type_of(generator)
    accepted = COND_TYPES.get(cond_type)
    if accepted is None:
        raise ValueError(f"unsupported cond_type {cond_type!r} (the pipeline knows {', '.join(COND_TYPES)})")
    given = {"text": text, "image": image, "class_label": class_label}
    for name, value in given.items():
        if value is not None and name not in accepted:
            takes = " or ".join(_INPUT_NAMES[a] for a in accepted) if accepted else "no condition (unconditional)"
            raise ValueError(f"this generator is {cond_type!r}-conditioned: it takes {takes}, "
                             f"not {_INPUT_NAMES[name]}")
    if isinstance(text, str):
        text = [text]
    if text is not None:
        text = _repeat([str(t) for t in text], n, "captions")
    if image is not None:
        conditioner = image_conditioner_of(generator)
        image = _as_image_batch(image, n, getattr(conditioner, "image_size", None))
    if cond_type == "none" or all(v is None for v in given.values()):
        return None
    if cond_type == "class":
        return _class_ids(generator, class_label, n)
    if cond_type == "text":
        return text
    if cond_type == "image":
        return image
    return {"text": text, "image": image}  # text+image / multi: either part may be None (its null tokens)


# --------------------------------------------------------------------------- generation


@torch.no_grad()
def generate_tokens(generator, *, text=None, image=None, class_label=None, n: int = 1, seed: int | None = 0,
                    cfg_scale: float = CFG_SCALE, cfg_schedule: str = CFG_SCHEDULE, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, num_scales: int | None = None,
                    **generate_kwargs: Any) -> list[torch.Tensor]:
    """Sample n shapes' tokens: per-scale (n, n_k) int64 tensors on the CPU."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    conditions = build_conditions(generator, text=text, image=image, class_label=class_label, n=n)
    if conditions is None:
        cfg_scale = 1.0  # null vs null: guidance would change nothing but double the batch
    tokens = generator.generate(conditions, batch_size=n, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule,
                                temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                num_scales=num_scales, **generate_kwargs)
    return [t.cpu() for t in tokens]


@torch.no_grad()
def tokens_to_mesh(tokenizer, tokens: Sequence[torch.Tensor], *, resolution: int = 128,
                   **extract_kwargs: Any) -> trimesh.Trimesh:
    """One shape's tokens (per-scale (1, n_k) or (n_k,)) of the first k scales -> a mesh in the box.

    An occupancy that never crosses zero gives an empty mesh (no vertices or faces).
    """
    from vat3d.geometry.marching import extract_surface

    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    indices = [torch.as_tensor(t, dtype=torch.long).reshape(1, -1).to(device) for t in tokens]
    return extract_surface(tokenizer.occupancy_fn(indices), resolution=resolution, device=device, **extract_kwargs)


def mend_torn(tokenizer, tokens: Sequence[torch.Tensor], *, resolution: int = 128, iso: float = 0.0,
              mend: Sequence[float] = MEND_STEPS, mend_share: float = MEND_SHARE,
              **extract_kwargs: Any) -> tuple[trimesh.Trimesh, float]:
    """One shape's tokens -> (mesh, the level meshed): :func:`tokens_to_mesh` at ``iso``, and, when that mesh is
    torn (more than ``mend_share`` of its area outside the largest piece), at ``iso - step`` for each
    ``step`` of ``mend`` in turn, keeping the first level whose mesh is whole (or else the least torn,
    the higher level on a tie). A lower level draws a slightly fatter surface, which joins the thin parts
    the decoder draws broken (a lamp's stem, a shelf's sides); shapes that are whole at ``iso`` are
    untouched, and so are empty meshes and specks. ``mend=()`` meshes ``iso`` only."""
    mesh, level, _ = _mend_scored(tokenizer, tokens, resolution=resolution, iso=iso, mend=mend,
                                  mend_share=mend_share, **extract_kwargs)
    return mesh, level


def _mend_scored(tokenizer, tokens, *, resolution, iso, mend, mend_share, **extract_kwargs):
    """:func:`mend_torn`, plus the kept mesh's :func:`candidate_score` (None when ``mend`` is empty and no
    score was needed), so that :func:`generate_meshes` does not score the same mesh twice."""
    mesh = tokens_to_mesh(tokenizer, tokens, resolution=resolution, iso=iso, **extract_kwargs)
    if not mend:
        return mesh, iso, None
    best, best_level = mesh, iso
    best_score = candidate_score(mesh)
    if best_score >= 2.0:  # empty or a speck: nothing to mend (lower levels do not bring shapes back)
        return best, best_level, best_score
    for step in mend:
        if best_score % 1.0 <= mend_share:  # the torn share (a shrunken shape is mended as well)
            break
        level = iso - float(step)
        mesh = tokens_to_mesh(tokenizer, tokens, resolution=resolution, iso=level, **extract_kwargs)
        score = candidate_score(mesh)
        if score < best_score:
            best, best_level, best_score = mesh, level, score
    return best, best_level, best_score


#: A generated shape whose bounding box's longest side is under this (box units) has shrunk: shapes are
#: normalised to a longest side of about 1.9, so a candidate under half of that ranks after full-size ones.
SHRUNKEN_EXTENT = 1.0


def candidate_score(mesh: trimesh.Trimesh) -> float:
    """How :func:`generate_meshes` ranks a condition's candidates, lower is better. The fractional part is
    the share of the surface outside the largest piece (0 for a whole shape); the integer part ranks what
    is not a full shape after those that are: +1 for a shape that has shrunk (longest side under
    :data:`SHRUNKEN_EXTENT`), 2 for a speck and 3 for an empty mesh."""
    if is_empty(mesh):
        return 3.0
    if is_speck(mesh):
        return 2.0
    extent = float(np.ptp(np.asarray(mesh.vertices), axis=0).max())
    return torn_share(mesh) + (1.0 if extent < SHRUNKEN_EXTENT else 0.0)


def candidate_rank(score: float, level: float, iso: float = 0.0, mend_share: float = MEND_SHARE) -> tuple:
    """The key :func:`generate_meshes` keeps the smallest of (with the draw's index appended, so that the
    earlier draw wins a tie): a whole draw (:func:`candidate_score` at most ``mend_share``) first, the
    one meshed at the highest level among them, since a lowered level fattens the shape; then the
    others, the least torn first, then the highest level. On all 289 held-out captions of the project's
    data this kept the caption's family more often than ranking by the torn share alone (0.561 against
    0.526 on the same draws, 1-NNA 0.706 against 0.715; docs/generation.md, "What the tokenizer allows")."""
    if score <= mend_share:
        return (0, iso - level)
    return (1, score, iso - level)


def candidate_seed(seed: int | None, k: int) -> int | None:
    """Candidate 0 keeps ``seed`` (so one candidate is plain sampling); the others get seeds derived from it."""
    if seed is None or k == 0:
        return seed
    return int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0])


def generate_meshes(generator, tokenizer, *, text: str | Sequence[str] | None = None, image: Any = None,
                    class_label: Any = None, n: int = 1, seed: int | None = 0, cfg_scale: float = CFG_SCALE,
                    cfg_schedule: str = CFG_SCHEDULE, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = TOP_P, resolution: int = 128, num_scales: int | None = None, iso: float = 0.0,
                    min_piece: float = 0.0, candidates: int = CANDIDATES, mend: Sequence[float] = MEND_STEPS,
                    mend_share: float = MEND_SHARE, progress=None,
                    **generate_kwargs: Any) -> GeneratedMeshes:
    """Generate ``n`` meshes (in the ``[-1, 1]^3`` box) for one condition.

    Args:
        generator: a :class:`~vat3d.models.generator.NextScaleGenerator`.
        tokenizer: the :class:`~vat3d.models.tokenizer.VATokenizer` it was trained on (checked).
        text / image / class_label: the condition, as the generator's ``cond_type`` allows (see
            the module docstring); none of them samples the null condition. A list of n values
            gives one condition per sample.
        n: number of samples. seed: randomness of the whole batch (None: nondeterministic).
        cfg_scale, cfg_schedule, temperature, top_k, top_p: sampling (see ``generator.generate``).
        resolution: marching-cubes grid of the decoded surface.
        num_scales: decode only the first k scales (a coarser shape).
        iso: the occupancy logit meshed as the surface (0: probability 1/2; below 0 a fatter shape).
        min_piece: drop loose pieces whose area is under this share of the surface (floaters; the
            largest piece always stays); 0 keeps everything the decoder draws.
        mend, mend_share: a sample whose mesh at ``iso`` is torn (over ``mend_share`` of its area outside
            the largest piece) is meshed again at ``iso - step`` for each step of ``mend`` until it is
            whole (:func:`mend_torn`); ``settings["levels"]`` records the level of each kept mesh.
            ``()`` turns it off.
        candidates: best of this many: every sample is drawn ``candidates`` times (the first with
            ``seed`` itself, so 1 is plain sampling), each is decoded (and mended), and one is kept by
            :func:`candidate_rank`: a whole draw (torn share at most ``mend_share``) meshed at the
            highest level, else the least torn (:func:`candidate_score`), then the earlier draw. It
            costs ``candidates`` times the sampling and decoding; ``settings["candidate_scores"]`` and
            ``settings["candidate_levels"]`` keep every draw's score and level, ``settings["chosen"]``
            the kept index per sample.
        progress: optional callable ``progress(done, total, stage)`` called as meshes are decoded.

    Returns:
        :class:`GeneratedMeshes`: a list of ``trimesh.Trimesh`` with ``.tokens`` (per-scale
        (n, n_k) tensors of the kept samples), ``.empty``, timings and settings.
    """
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    generator.check_tokenizer(tokenizer)
    settings = dict(n=n, seed=seed, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, temperature=temperature,
                    top_k=top_k, top_p=top_p, resolution=resolution, num_scales=num_scales, iso=iso,
                    min_piece=min_piece, candidates=candidates, mend=[float(m) for m in mend],
                    mend_share=mend_share)
    seconds_tokens = seconds_decode = 0.0
    best_meshes: list[trimesh.Trimesh | None] = [None] * n
    best_ranks: list[tuple] = [()] * n
    chosen = [0] * n
    levels = [iso] * n
    scores_NK: list[list[float]] = [[] for _ in range(n)]
    levels_NK: list[list[float]] = [[] for _ in range(n)]
    kept_tokens: list[torch.Tensor] | None = None
    for k in range(candidates):
        start = time.perf_counter()
        tokens = generate_tokens(generator, text=text, image=image, class_label=class_label, n=n,
                                 seed=candidate_seed(seed, k), cfg_scale=cfg_scale, cfg_schedule=cfg_schedule,
                                 temperature=temperature, top_k=top_k, top_p=top_p, num_scales=num_scales,
                                 **generate_kwargs)
        seconds_tokens += time.perf_counter() - start
        if kept_tokens is None:
            kept_tokens = [t.clone() for t in tokens]
        if progress is not None:
            progress(k * n, n * candidates, "decoding")
        start = time.perf_counter()
        for i in range(n):
            mesh, level, score = _mend_scored(tokenizer, [t[i:i + 1] for t in tokens], resolution=resolution,
                                              iso=iso, mend=mend, mend_share=mend_share)
            kept_mesh = drop_small_pieces(mesh, min_piece)  # min_piece 0: the mesh itself
            if candidates == 1:
                score = 0.0
            elif score is None or kept_mesh is not mesh:  # not scored yet, or pieces were dropped
                score = candidate_score(kept_mesh)
            mesh = kept_mesh
            scores_NK[i].append(score)
            levels_NK[i].append(level)
            # a whole draw at the highest level; else the least torn; then the earlier draw
            rank = candidate_rank(score, level, iso, mend_share)
            if best_meshes[i] is None or rank < best_ranks[i]:
                best_meshes[i], best_ranks[i], chosen[i], levels[i] = mesh, rank, k, level
                for kept, t in zip(kept_tokens, tokens):
                    kept[i] = t[i]
            if progress is not None:
                progress(k * n + i + 1, n * candidates, "decoding")
        seconds_decode += time.perf_counter() - start
    settings["levels"] = levels
    if candidates > 1:
        settings.update(candidate_scores=scores_NK, candidate_levels=levels_NK, chosen=chosen)
    return GeneratedMeshes(best_meshes, kept_tokens, seconds_tokens=seconds_tokens, seconds_decode=seconds_decode,
                           settings=settings)


# --------------------------------------------------------------------------- reconstruction


@dataclass
class Reconstruction:
    mesh: trimesh.Trimesh
    tokens: list[np.ndarray] = field(default_factory=list)
    num_bytes: int = 0


def reconstruct(tokenizer, mesh: "str | os.PathLike | trimesh.Trimesh", num_scales: int | None = None,
                resolution: int = 256, *, seed: int = 0, normalized: bool = False, effort: Any = DEFAULT_EFFORT,
                return_tokens: bool = False) -> "trimesh.Trimesh | Reconstruction":
    """Tokenize a mesh and decode it again (the first ``num_scales`` scales).

    Returns the decoded mesh in the input's units (``normalized=True``: in the ``[-1, 1]^3`` box, unturned
    whatever turn the encoder chose); with ``return_tokens`` a :class:`Reconstruction` with the tokens
    (in the turn the encoder chose) and the ``.vat`` size too. ``effort``: as :func:`vat3d.codec.api.encode_mesh`.
    """
    from vat3d.codec.api import decode_tokens, encode_mesh
    from vat3d.geometry.normalize import Transform

    if num_scales is not None and not 1 <= num_scales <= len(tokenizer.scale_sizes):
        raise ValueError(f"num_scales must lie in 1..{len(tokenizer.scale_sizes)}, got {num_scales}")
    encoded = encode_mesh(tokenizer, mesh, seed=seed, effort=effort)
    transform = Transform(orientation=encoded.transform.orientation) if normalized else encoded.transform
    out = decode_tokens(tokenizer, encoded.tokens, transform, resolution=resolution, num_scales=num_scales)
    if return_tokens:
        return Reconstruction(out, encoded.tokens[: num_scales or len(encoded.tokens)], encoded.num_bytes)
    return out
