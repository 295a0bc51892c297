"""Evaluation of a generator against held-out shapes (PointFlow protocol), for ``vat3d eval-generation``.

For every held-out shape (the ``val`` split of a prepared dataset, :func:`vat3d.data.dataset.split_of`)
the generator samples ``samples_per_condition`` shapes from that shape's condition (its caption, class,
a rendered view, or nothing for an unconditional model). Then:

* **Point clouds**: ``n_points`` (2048) surface points per generated mesh and per reference shape.
  References come from the prepared ``.npz`` surface samples (``reference="points"``, default: they are
  area-uniform samples of the normalised mesh) or, for procedural shapes, from the mesh rebuilt from its
  seed (:func:`vat3d.data.procedural.make_shape`) and normalised with the stored transform
  (``reference="mesh"``). Both sets then get the same per-cloud normalisation (``normalize``: ``"box"``
  centres the bounding box and scales its longest side to 2, ``"sphere"`` centres the mean and scales
  the farthest point to 1, ``"none"`` keeps the tokenizer's box). An empty generated mesh becomes a
  cloud of ``n_points`` copies of the origin (it counts, badly) and is reported in ``empty_fraction``.
* **MMD-CD, COV-CD, 1-NNA-CD** (squared-L2 Chamfer, as :func:`vat3d.evaluation.metrics.mmd_cov_1nna`),
  computed from one set of pairwise distance matrices.
* **Family match** (procedural captions): a 1-nearest-neighbour Chamfer classifier over the held-out
  references labels each generated shape with its nearest reference's family; the rate is the fraction
  labelled with the family of the shape whose condition produced it. ``family_match_reference`` is the
  same classifier's leave-one-out accuracy on the references themselves (its ceiling).
* **Fragmentation** (:func:`vat3d.evaluation.metrics.fragmentation`): the share of a generated mesh's
  surface area outside its largest connected component, beside the same statistic on the held-out
  shapes themselves (``fragmentation_real``: procedural references rebuilt from their seed and meshed
  by marching cubes of their winding number at the same resolution, so that both sides are made the
  same way) and on the tokenizer's reconstructions of them (``fragmentation_reconstructed``: what a
  generator that draws the held-out shapes' own tokens would score). Means over non-empty meshes.
* **Empty / degenerate rate**: no surface at all, or a speck (:func:`vat3d.evaluation.metrics.is_degenerate`).
* **Per family**: every statistic also per procedural family (``per_family``).
* **Seconds per shape**: token sampling and decoding (occupancy + marching cubes) per generated shape.

:func:`evaluate_generation` can also save a sheet of the first conditions' held-out shape beside its
generated samples (fixed seeds: the same sheet for the same settings).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import trimesh

from vat3d.models.sampling_defaults import CANDIDATES, CFG_SCALE, CFG_SCHEDULE, MEND_SHARE, MEND_STEPS, TOP_P

__all__ = ["GenerationEvalSettings", "load_references", "normalize_clouds", "generation_metrics",
           "family_match", "leave_one_out_family_match", "reconstruction_ceiling", "evaluate_generation",
           "normalized_reference_mesh", "real_surface", "reconstructed_surface", "reference_fragmentation",
           "per_family_summary"]


@dataclass
class GenerationEvalSettings:
    num_conditions: int | None = None  # held-out shapes used (None: all)
    samples_per_condition: int = 1
    n_points: int = 2048
    resolution: int = 128
    split: str = "val"
    val_fraction: float = 0.05
    reference: str = "points"  # "points" (stored samples) or "mesh" (procedural rebuild; else stored points)
    normalize: str = "box"  # "box", "sphere" or "none"
    seed: int = 0
    batch_size: int = 8
    cfg_scale: float = CFG_SCALE
    cfg_schedule: str = CFG_SCHEDULE
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = TOP_P
    num_scales: int | None = None
    iso: float = 0.0  # occupancy logit meshed as the generated surface
    min_piece: float = 0.0  # drop generated pieces under this share of the surface (0: keep all)
    candidates: int = CANDIDATES  # best of N per shape, the least torn kept (generate_meshes(candidates=))
    mend: tuple[float, ...] = MEND_STEPS  # lowerings of the level tried on a torn shape (pipelines.mend_torn)
    mend_share: float = MEND_SHARE
    image_size: int = 224  # renders of reference shapes for image-conditioned generators
    condition: str = "auto"  # what a text+image generator is given: "auto" (= text), "text", "image" or "text+image"
    backend: str = "auto"  # pairwise Chamfer backend
    sources: tuple[str, ...] | None = None  # keep only held-out shapes of these sources (e.g. ("procedural",))
    reference_fragmentation: bool = True  # mesh the held-out shapes too (real and reconstructed) for the comparison
    sheet_shapes: int = 12  # rows of the sample sheet (held-out shape + its samples), when a sheet is asked for


# --------------------------------------------------------------------------- references


def _procedural_seed(row: dict) -> int | None:
    path = str(row.get("path") or "")
    if row.get("source") == "procedural" and path.startswith("procedural:seed="):
        try:
            return int(path.split("=", 1)[1])
        except ValueError:
            return None
    return None


def reference_mesh(row: dict, data: dict) -> trimesh.Trimesh | None:
    """The normalised mesh of a procedural reference (rebuilt from its seed), else None."""
    seed = _procedural_seed(row)
    if seed is None:
        return None
    from vat3d.data.procedural import make_shape
    from vat3d.geometry.normalize import Transform

    shape = make_shape(seed)
    transform = Transform.from_array(data["transform"])
    return trimesh.Trimesh(transform.apply(np.asarray(shape.mesh.vertices)), np.asarray(shape.mesh.faces),
                           process=False)


def load_references(root: str | Path, settings: GenerationEvalSettings) -> list[dict]:
    """Held-out rows with ``points`` (n_points, 3) in box units, plus id, caption, family, class,
    ``mesh`` (procedural only, else None) and the stored surface samples/normals (for the tokenizer)."""
    from vat3d.data.dataset import split_of
    from vat3d.data.metadata import read_metadata
    from vat3d.data.prepare import load_prepared

    root = Path(root)
    rows = read_metadata(root, status="done")
    if not rows:
        raise FileNotFoundError(f"no prepared shapes in {root} (run `vat3d prepare` first)")
    if settings.split != "all":
        rows = [row for row in rows if split_of(row["id"], settings.val_fraction) == settings.split]
    if not rows:
        raise ValueError(f"the {settings.split!r} split of {root} is empty (val_fraction={settings.val_fraction}); "
                         f"raise --val-fraction or use --split all")
    if settings.sources:
        present = sorted({str(row.get("source", "")) for row in rows})
        rows = [row for row in rows if str(row.get("source", "")) in settings.sources]
        if not rows:
            raise ValueError(f"no held-out shapes of source {', '.join(settings.sources)} in {root} "
                             f"(sources present: {', '.join(present)})")
    if settings.num_conditions is not None and len(rows) > settings.num_conditions:
        order = np.random.default_rng(settings.seed).permutation(len(rows))[: settings.num_conditions]
        rows = [rows[i] for i in sorted(order)]
    out = []
    for row in rows:
        data = load_prepared(root / row["file"])
        meta = data["meta"]
        rng = np.random.default_rng(np.random.SeedSequence([settings.seed, len(out)]))
        mesh = reference_mesh(row, data) if settings.reference == "mesh" else None
        if mesh is not None:
            from vat3d.evaluation.metrics import sample_surface_points

            points = sample_surface_points(mesh, settings.n_points, seed=int(rng.integers(1 << 31)))
        else:
            surface = data["surface_points"]
            replace = len(surface) < settings.n_points
            points = surface[rng.choice(len(surface), settings.n_points, replace=replace)]
        out.append({
            "id": row["id"],
            "caption": str(meta.get("caption") or row.get("caption") or ""),
            "family": str(meta.get("family") or row.get("family") or ""),
            "class": str(meta.get("class") or row.get("class") or ""),
            "source": row.get("source", ""),
            "procedural_seed": _procedural_seed(row),
            "points": np.asarray(points, dtype=np.float32),
            "mesh": mesh,
            "surface_points": data["surface_points"],
            "surface_normals": data["surface_normals"],
        })
    return out


# --------------------------------------------------------------------------- point clouds


def normalize_clouds(clouds_BN3: np.ndarray, mode: str = "box") -> np.ndarray:
    """Per-cloud normalisation (the same for generated and reference sets); degenerate clouds
    (a single point repeated) are only centred."""
    clouds = np.asarray(clouds_BN3, dtype=np.float64)
    if mode == "none":
        return clouds.astype(np.float32)
    if mode == "box":
        lo, hi = clouds.min(axis=1, keepdims=True), clouds.max(axis=1, keepdims=True)
        center = (lo + hi) / 2.0
        half = ((hi - lo).max(axis=2, keepdims=True)) / 2.0
    elif mode == "sphere":
        center = clouds.mean(axis=1, keepdims=True)
        half = np.linalg.norm(clouds - center, axis=2).max(axis=1)[:, None, None]
    else:
        raise ValueError(f"unknown normalisation {mode!r} (use 'box', 'sphere' or 'none')")
    half = np.where(half > 1e-9, half, 1.0)
    return ((clouds - center) / half).astype(np.float32)


def mesh_points(mesh: trimesh.Trimesh | None, n: int, seed: int = 0) -> tuple[np.ndarray, bool]:
    """``n`` surface points of a mesh, or n copies of the origin (and True) when it is empty."""
    from vat3d.evaluation.metrics import sample_surface_points

    points = sample_surface_points(mesh, n, seed=seed) if mesh is not None else np.zeros((0, 3))
    if len(points) == 0:
        return np.zeros((n, 3), dtype=np.float32), True
    return points.astype(np.float32), False


def generation_metrics(d_rg: np.ndarray, d_rr: np.ndarray, d_gg: np.ndarray) -> dict[str, float]:
    """MMD-CD, COV-CD and 1-NNA-CD from the (R, G), (R, R) and (G, G) Chamfer matrices (the
    definitions of :func:`vat3d.evaluation.metrics.mmd_cov_1nna`)."""
    d_rg, d_rr, d_gg = (np.asarray(d, dtype=np.float64) for d in (d_rg, d_rr, d_gg))
    n_ref, n_gen = d_rg.shape
    mmd = float(d_rg.min(axis=1).mean())
    cov = len(np.unique(d_rg.argmin(axis=0))) / n_ref
    full = np.block([[d_rr, d_rg], [d_rg.T, d_gg]])
    np.fill_diagonal(full, math.inf)
    labels = np.concatenate([np.ones(n_ref), np.zeros(n_gen)])
    correct = labels[full.argmin(axis=1)] == labels
    return {"MMD-CD": mmd, "COV-CD": cov, "1-NNA-CD": float(correct.mean()),
            "1-NNA-CD-ref": float(correct[:n_ref].mean()), "1-NNA-CD-gen": float(correct[n_ref:].mean())}


def family_match(d_gr: np.ndarray, ref_families: list[str], target_families: list[str]) -> dict[str, Any]:
    """1-NN (Chamfer) family classifier over references: predicted family of each generated cloud
    and the rate at which it equals the target family (targets "" are skipped)."""
    d_gr = np.asarray(d_gr)
    predicted = [ref_families[j] for j in d_gr.argmin(axis=1)] if d_gr.shape[1] else [""] * d_gr.shape[0]
    scored = [(p, t) for p, t in zip(predicted, target_families) if t]
    rate = float(np.mean([p == t for p, t in scored])) if scored else float("nan")
    return {"rate": rate, "scored": len(scored), "predicted": predicted}


def reconstruction_ceiling(d_rc: np.ndarray, d_rr: np.ndarray, d_cc: np.ndarray,
                           families: list[str]) -> dict[str, float]:
    """What the tokenizer allows: the statistics of its reconstructions ``c_i`` of the held-out shapes
    ``r_i`` scored as if they were generated, from the (R, C), (R, R) and (C, C) Chamfer matrices.

    ``*_reconstructed`` pair each reconstruction with its own shape, which is then its nearest
    neighbour (1-NNA under 0.5). ``1-NNA-CD_reconstructed_unpaired`` and ``family_match_reconstructed``
    leave each pair out (``r_i`` is not a neighbour of ``c_i``, nor ``c_i`` of ``r_i``): a generator that drew
    new shapes from the held-out shapes' distribution exactly, through this tokenizer, would score
    about these, so they are the floor of 1-NNA and the ceiling of family match that a generator can
    reach on these tokens."""
    d_rc = np.asarray(d_rc, dtype=np.float64)
    out = {f"{k}_reconstructed": v for k, v in generation_metrics(d_rc, d_rr, d_cc).items()
           if k in ("MMD-CD", "COV-CD", "1-NNA-CD")}
    unpaired_rc = d_rc.copy()
    np.fill_diagonal(unpaired_rc, math.inf)
    out["1-NNA-CD_reconstructed_unpaired"] = generation_metrics(unpaired_rc, d_rr, d_cc)["1-NNA-CD"]
    out["family_match_reconstructed"] = family_match(unpaired_rc.T, families, families)["rate"]
    return out


def leave_one_out_family_match(d_rr: np.ndarray, families: list[str]) -> float:
    """The 1-NN Chamfer family classifier's leave-one-out accuracy on the held-out shapes themselves:
    the ceiling of :func:`family_match` (``family_match_reference``)."""
    if len(families) < 2 or not any(families):
        return float("nan")
    d = np.array(d_rr, dtype=np.float64)
    np.fill_diagonal(d, math.inf)
    nearest = d.argmin(axis=1)
    scored = [families[j] == f for j, f in zip(nearest, families) if f]
    return float(np.mean(scored)) if scored else float("nan")


# --------------------------------------------------------------------------- conditions


#: ``GenerationEvalSettings.condition``: the prompt kind(s) given to the generator per held-out shape.
CONDITIONS = ("auto", "text", "image", "text+image")


def prompt_kinds(cond_type: str, condition: str = "auto") -> str:
    """The condition a ``cond_type`` generator is evaluated with: ``condition``, or for ``"auto"`` its own
    kind (text for a text+image generator). Raises ValueError for one the generator does not take."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    if condition == "auto":
        return "text" if cond_type == "text+image" else cond_type
    if condition == cond_type:
        return condition
    if cond_type != "text+image":
        raise ValueError(f"a {cond_type!r}-conditioned generator cannot be evaluated with {condition!r} prompts")
    return condition


def _condition_kwargs(generator, refs: list[dict], tokenizer, image_size: int, resolution: int,
                      condition: str = "auto") -> list[dict | str]:
    """The pipeline keywords (text= / class_label= / image=) of each reference for this generator, or,
    for a reference that has no such condition (no caption for a text model, a class the generator
    does not know), a string saying why it is skipped. ``condition`` picks the prompt of a text+image
    generator (:func:`prompt_kinds`); an image prompt is one rendered view of the held-out shape."""
    from vat3d.pipelines import cond_type_of

    cond_type = prompt_kinds(cond_type_of(generator), condition)
    out: list[dict | str] = []
    for ref in refs:
        if cond_type == "none":
            out.append({})
        elif cond_type == "class":
            names = getattr(generator.conditioner, "class_names", None) or []
            label = next((ref[key] for key in ("class", "family") if ref[key] and ref[key] in names), None)
            out.append({"class_label": label} if label is not None else
                       f"class {ref['class'] or ref['family'] or '(none)'!r} unknown to the generator")
        elif cond_type == "text":
            out.append({"text": ref["caption"]} if ref["caption"] else "no caption")
        elif cond_type == "text+image":
            out.append({"text": ref["caption"], "image": _condition_image(ref, tokenizer, image_size, resolution)}
                       if ref["caption"] else "no caption")
        elif cond_type == "image":
            out.append({"image": _condition_image(ref, tokenizer, image_size, resolution)})
        else:
            raise ValueError(f"unsupported cond_type {cond_type!r}")
    return out


def normalized_reference_mesh(ref: dict) -> trimesh.Trimesh | None:
    """The held-out shape's own mesh in the box: its rebuilt procedural mesh, else None."""
    if ref.get("mesh") is not None:
        return ref["mesh"]
    if ref.get("procedural_seed") is None:
        return None
    from vat3d.data.procedural import make_shape
    from vat3d.geometry.normalize import normalize_mesh

    return normalize_mesh(make_shape(ref["procedural_seed"]).mesh)[0]


def reconstructed_surface(ref: dict, tokenizer, resolution: int) -> trimesh.Trimesh:
    """The tokenizer's reconstruction of a held-out shape (from its stored surface samples), meshed at
    ``resolution``: what the generator would draw if it drew that shape's own tokens."""
    from vat3d.pipelines import tokens_to_mesh

    as_t = lambda a: torch.from_numpy(np.asarray(a[: tokenizer.num_points], dtype=np.float32))[None]  # noqa: E731
    device = next(tokenizer.parameters()).device
    with torch.no_grad():
        tokens = tokenizer.encode(as_t(ref["surface_points"]).to(device), as_t(ref["surface_normals"]).to(device))
    return tokens_to_mesh(tokenizer, tokens, resolution=resolution)


def real_surface(ref: dict, resolution: int) -> trimesh.Trimesh | None:
    """A held-out shape's own mesh (procedural: rebuilt from its seed) meshed again by marching cubes of
    its winding number at ``resolution``, as generated shapes are, so that statistics such as
    fragmentation compare like with like; None when the shape's mesh is not available."""
    from vat3d.geometry.marching import extract_surface
    from vat3d.geometry.occupancy import winding_number

    mesh = normalized_reference_mesh(ref)
    if mesh is None:
        return None
    return extract_surface(lambda points: winding_number(mesh, points) - 0.5, resolution=resolution,
                           input_kind="numpy")


def reference_fragmentation(refs: list[dict], tokenizer, resolution: int) -> None:
    """Store ``fragmentation_real`` and ``fragmentation_reconstructed`` (and the two meshes, for sheets)
    in each reference dict, once: later calls with the same references (a sweep) reuse them."""
    from vat3d.evaluation.metrics import fragmentation

    for ref in refs:
        if ref.get("fragmentation_resolution") == resolution:
            continue
        real = real_surface(ref, resolution)
        recon = reconstructed_surface(ref, tokenizer, resolution)
        ref.update(real_mesh=real, reconstructed_mesh=recon, fragmentation_resolution=resolution,
                   fragmentation_real=fragmentation(real) if real is not None else float("nan"),
                   fragmentation_reconstructed=fragmentation(recon))


def _condition_image(ref: dict, tokenizer, size: int, resolution: int) -> np.ndarray:
    """One rendered view of a reference: its procedural mesh, else its tokenizer reconstruction."""
    from vat3d.renderers import render_views

    mesh = normalized_reference_mesh(ref)
    if mesh is None:
        mesh = reconstructed_surface(ref, tokenizer, resolution)
    return render_views(mesh, 1, size=size, seed=0)[0][0]


def _nanmean(values) -> float:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(values)) if values else float("nan")


def per_family_summary(rows: list[dict], refs: list[dict]) -> dict[str, dict[str, Any]]:
    """Per procedural family (and ``"all"``): generated shapes, empty and degenerate rates, mean
    fragmentation of generated / real / reconstructed shapes, and the family match rate."""
    families = sorted({row["family"] for row in rows if row["family"]})
    out: dict[str, dict[str, Any]] = {}
    for family in families + ["all"]:
        gen = [row for row in rows if family == "all" or row["family"] == family]
        ref = [r for r in refs if family == "all" or r["family"] == family]
        matched = [row["predicted_family"] == row["family"] for row in gen
                   if row["family"] and "predicted_family" in row]
        out[family] = {
            "generated": len(gen),
            "references": len(ref),
            "empty_fraction": _nanmean([row["empty"] for row in gen]),
            "degenerate_fraction": _nanmean([row["degenerate"] for row in gen]),
            "fragmentation_generated": _nanmean([row["fragmentation"] for row in gen]),
            "fragmentation_real": _nanmean([r.get("fragmentation_real") for r in ref]),
            "fragmentation_reconstructed": _nanmean([r.get("fragmentation_reconstructed") for r in ref]),
            "family_match": _nanmean(matched),
        }
    return out


# --------------------------------------------------------------------------- the evaluation


def evaluate_generation(generator, tokenizer, data_dir: str | Path, settings: GenerationEvalSettings | None = None,
                        progress: Callable[[int, int, str], None] | None = None,
                        references: list[dict] | None = None,
                        sheet_path: str | Path | None = None) -> dict[str, Any]:
    """Generate for held-out conditions and score against the held-out shapes; returns a JSON-able dict
    with ``summary`` (the metrics), ``per_family`` and ``shapes`` (one row per generated shape).
    ``sheet_path`` (a .png) also saves the first ``settings.sheet_shapes`` conditions: the held-out
    shape, then its generated samples, one row each."""
    from vat3d.evaluation.metrics import fragmentation, is_degenerate, pairwise_chamfer
    from vat3d.pipelines import generate_meshes

    settings = settings or GenerationEvalSettings()
    generator.check_tokenizer(tokenizer)
    refs = references if references is not None else load_references(data_dir, settings)
    from vat3d.pipelines import cond_type_of, image_conditioner_of

    image_conditioner = image_conditioner_of(generator)
    image_size = int(image_conditioner.image_size) if image_conditioner is not None else settings.image_size
    conditions = _condition_kwargs(generator, refs, tokenizer, image_size, settings.resolution, settings.condition)
    # Held-out shapes without this generator's kind of condition are left out of both sets (the
    # references stay the shapes whose conditions were generated from) and counted per reason.
    skipped: dict[str, int] = {}
    for condition in conditions:
        if isinstance(condition, str):
            skipped[condition] = skipped.get(condition, 0) + 1
    kept = [i for i, condition in enumerate(conditions) if not isinstance(condition, str)]
    if not kept:
        reasons = "; ".join(f"{n} with {why}" for why, n in skipped.items())
        raise ValueError(f"none of the {len(refs)} held-out shapes has a condition for this "
                         f"{cond_type_of(generator)}-conditioned generator ({reasons}); pick a dataset or "
                         f"--source with such shapes")
    refs, conditions = [refs[i] for i in kept], [conditions[i] for i in kept]

    # one job per (reference, repeat); every condition has the same keywords, so any jobs share a batch
    jobs = [(i, r) for i in range(len(refs)) for r in range(settings.samples_per_condition)]
    gen_points, empty, rows, sheet_meshes = [], [], [], {}
    seconds_tokens = seconds_decode = 0.0
    total = len(jobs)
    for start in range(0, total, settings.batch_size):
        batch = jobs[start:start + settings.batch_size]
        kwargs_list = [conditions[i] for i, _ in batch]
        merged = {key: [kw[key] for kw in kwargs_list] for key in kwargs_list[0]}
        meshes = generate_meshes(generator, tokenizer, n=len(batch), seed=settings.seed + start,
                                 cfg_scale=settings.cfg_scale, cfg_schedule=settings.cfg_schedule,
                                 temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
                                 resolution=settings.resolution, num_scales=settings.num_scales, iso=settings.iso,
                                 min_piece=settings.min_piece, candidates=settings.candidates,
                                 mend=settings.mend, mend_share=settings.mend_share, **merged)
        seconds_tokens += meshes.seconds_tokens
        seconds_decode += meshes.seconds_decode
        for (i, r), mesh, level in zip(batch, meshes, meshes.settings["levels"]):
            points, is_empty = mesh_points(mesh, settings.n_points, seed=settings.seed + len(gen_points))
            gen_points.append(points)
            empty.append(is_empty)
            rows.append({"reference": refs[i]["id"], "repeat": r, "condition": _describe(conditions[i]),
                         "family": refs[i]["family"], "empty": is_empty, "faces": int(len(mesh.faces)),
                         "degenerate": is_degenerate(mesh), "fragmentation": fragmentation(mesh),
                         "level": level})
            if sheet_path is not None and i < settings.sheet_shapes:
                sheet_meshes.setdefault(i, []).append(mesh)
        if progress is not None:
            progress(min(start + len(batch), total), total, "generating")

    if settings.reference_fragmentation:
        if progress is not None:
            progress(0, len(refs), "meshing held-out shapes")
        reference_fragmentation(refs, tokenizer, settings.resolution)

    if progress is not None:
        progress(0, 1, "chamfer distances")
    gen_GN3 = normalize_clouds(np.stack(gen_points), settings.normalize)
    ref_RN3 = normalize_clouds(np.stack([r["points"] for r in refs]), settings.normalize)
    t0 = time.perf_counter()
    d_rg = pairwise_chamfer(ref_RN3, gen_GN3, backend=settings.backend).numpy()
    d_rr = pairwise_chamfer(ref_RN3, ref_RN3, backend=settings.backend).numpy()
    d_gg = pairwise_chamfer(gen_GN3, gen_GN3, backend=settings.backend).numpy()
    seconds_metrics = time.perf_counter() - t0
    metrics = generation_metrics(d_rg, d_rr, d_gg)
    # The tokenizer's ceiling: the same statistics for its own reconstructions of the held-out shapes,
    # what a generator that drew each held-out shape's tokens exactly would score.
    ceiling = {}
    if settings.reference_fragmentation:
        rec_points = [mesh_points(r["reconstructed_mesh"], settings.n_points, seed=settings.seed + k)[0]
                      for k, r in enumerate(refs)]
        rec_RN3 = normalize_clouds(np.stack(rec_points), settings.normalize)
        d_rc = pairwise_chamfer(ref_RN3, rec_RN3, backend=settings.backend).numpy()
        d_cc = pairwise_chamfer(rec_RN3, rec_RN3, backend=settings.backend).numpy()
        ceiling = reconstruction_ceiling(d_rc, d_rr, d_cc, [r["family"] for r in refs])

    ref_families = [r["family"] for r in refs]
    targets = [refs[i]["family"] for i, _ in jobs]  # procedural shapes have a family; others ""
    match = family_match(d_rg.T, ref_families, targets)
    for row, predicted in zip(rows, match["predicted"]):
        row["predicted_family"] = predicted
    n_gen = len(jobs)
    summary = {
        **metrics,
        **ceiling,
        "family_match": match["rate"],
        "family_match_scored": match["scored"],
        "family_match_reference": leave_one_out_family_match(d_rr, ref_families),
        "empty_fraction": float(np.mean(empty)) if empty else float("nan"),
        "degenerate_fraction": _nanmean([row["degenerate"] for row in rows]),
        "mended_fraction": _nanmean([row["level"] < settings.iso for row in rows]),
        "fragmentation_generated": _nanmean([row["fragmentation"] for row in rows]),
        "fragmentation_real": _nanmean([r.get("fragmentation_real") for r in refs]),
        "fragmentation_reconstructed": _nanmean([r.get("fragmentation_reconstructed") for r in refs]),
        "num_references": len(refs),
        "num_skipped": sum(skipped.values()),
        "skipped_reasons": skipped,
        "num_generated": n_gen,
        "seconds_per_shape": (seconds_tokens + seconds_decode) / max(n_gen, 1),
        "seconds_per_shape_tokens": seconds_tokens / max(n_gen, 1),
        "seconds_per_shape_decode": seconds_decode / max(n_gen, 1),
        "seconds_metrics": seconds_metrics,
    }
    summary["fragmentation_ratio"] = (summary["fragmentation_generated"] / summary["fragmentation_real"]
                                      if summary["fragmentation_real"] > 0 else float("nan"))
    result = {"summary": summary, "per_family": per_family_summary(rows, refs), "settings": asdict(settings),
              "cond_type": generator.config.get("cond_type"), "shapes": rows}
    if sheet_path is not None and sheet_meshes:
        result["sheet"] = str(_save_sample_sheet(sheet_path, refs, conditions, sheet_meshes, tokenizer,
                                                 settings.resolution))
    return result


def _save_sample_sheet(path, refs, conditions, sheet_meshes, tokenizer, resolution) -> Path:
    from vat3d.renderers import save_sheet

    rows, labels = [], []
    for i, meshes in sorted(sheet_meshes.items()):
        ref = refs[i]
        held_out = ref.get("real_mesh")
        if held_out is None:
            held_out = normalized_reference_mesh(ref)
        if held_out is None:
            held_out = ref.get("reconstructed_mesh")
        if held_out is None:
            held_out = reconstructed_surface(ref, tokenizer, resolution)
        rows.append([held_out, *meshes])
        label = _describe(conditions[i]).split(": ", 1)[-1]
        labels.append(label if len(label) <= 28 else label[:27] + "…")
    n = max(len(r) for r in rows) - 1
    return save_sheet(path, rows, row_labels=labels, col_labels=["held-out"] + [f"sample {k}" for k in range(n)],
                      size=160)


def _describe(kwargs: dict) -> str:
    if not kwargs:
        return "unconditional"
    key, value = next(iter(kwargs.items()))
    return f"{key}: {value}" if key != "image" else "image: rendered view"
