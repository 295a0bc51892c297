"""A sheet of generations for the README: 6 captions and 2 images, fixed seeds.

Each row is one prompt. An image row starts with the image it was given, then comes each of ``-n``
samples, decoded at ``--resolution``. The image prompts are renders of procedural shapes from seeds
that no shipped model was trained on (``--image-seed``), or files (``--image``). Besides the PNG, a
JSON file records the command, the settings, and per prompt the empty count, the mean
fragmentation (the share of surface area outside the largest piece,
``vat3d.evaluation.metrics.fragmentation``) and the seconds per shape.

    .venv/bin/python benchmarks/generation_sheet.py --out docs/images/generations.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vat3d.models.sampling_defaults import CFG_SCALE, CFG_SCHEDULE

ROOT = Path(__file__).resolve().parents[1]

CAPTIONS = (
    "a mug with a handle",
    "a table with four legs",
    "a spur gear with 19 teeth and a hub",
    "a vase with a round belly",
    "a bent pipe with two bends",
    "a chamfered L bracket with holes",
)
#: Seeds far above every training range of the shipped data (docs/data.md), so the renders are new shapes.
IMAGE_SEEDS = (9_000_004, 9_000_014)  # a stool and a snowman


def image_prompts(seeds, paths, size: int = 224) -> list[tuple[str, np.ndarray]]:
    """(label, RGB uint8 image) per prompt: renders of procedural shapes of ``seeds``, then ``paths``."""
    from vat3d.data.procedural import make_shape
    from vat3d.geometry.normalize import normalize_mesh
    from vat3d.pipelines import load_image
    from vat3d.renderers import render_views

    prompts = []
    for seed in seeds:
        shape = make_shape(int(seed))
        # rendered as the training views are: the shape normalised into the [-1, 1] box first
        views, _ = render_views(normalize_mesh(shape.mesh)[0], 1, size=size, elevations=(20.0,), seed=int(seed))
        prompts.append((f"image: {shape.family} (seed {seed})", np.asarray(views[0])))
    for path in paths:
        image_3HW = load_image(path, size=size)
        prompts.append((f"image: {Path(path).name}", (image_3HW.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)))
    return prompts


def build_sheet(generator, tokenizer, *, captions, images, n: int = 4, seed: int = 0,
                cfg: float = CFG_SCALE,
                resolution: int = 128, out: Path, size: int = 160) -> dict:
    """Generate ``n`` shapes per caption and per (label, image) prompt, save the sheet to ``out``;
    returns the record written beside it."""
    from vat3d.evaluation.metrics import fragmentation
    from vat3d.pipelines import generate_meshes, is_empty
    from vat3d.renderers import save_sheet

    rows, labels, record = [], [], []
    blank = np.full((size, size, 3), 255, dtype=np.uint8)  # a caption row has no picture of its prompt
    prompts = [(f'"{c}"', {"text": c}, None) for c in captions]
    prompts += [(label, {"image": image}, image) for label, image in images]
    for label, condition, shown in prompts:
        start = time.perf_counter()
        result = generate_meshes(generator, tokenizer, n=n, seed=seed, cfg_scale=cfg, resolution=resolution,
                                 **condition)
        seconds = (time.perf_counter() - start) / n
        meshes = result.meshes
        kept = [m for m in meshes if not is_empty(m)]
        rows.append([shown if shown is not None else blank] + list(meshes))
        labels.append(label)
        sampling = {k: result.settings[k] for k in ("cfg_scale", "cfg_schedule", "temperature", "top_k", "top_p",
                                                    "candidates", "mend")}
        mended = sum(level < 0 for level in result.settings["levels"])
        record.append({"prompt": label, "empty": n - len(kept), "mended": mended,
                       "fragmentation": float(np.mean([fragmentation(m) for m in kept])) if kept else None,
                       "seconds_per_shape": seconds})
    col_labels = ["prompt"] + [f"sample {k}" for k in range(n)]
    save_sheet(out, rows, row_labels=labels, col_labels=col_labels, size=size)
    return {"sheet": str(out), "samples_per_prompt": n, "seed": seed, "cfg": cfg, "cfg_schedule": CFG_SCHEDULE,
            "sampling": sampling, "resolution": resolution, "prompts": record}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", default="default")
    parser.add_argument("--tokenizer", default="default")
    parser.add_argument("--caption", action="append", help="repeatable; default: 6 captions of the procedural families")
    parser.add_argument("--image-seed", type=int, action="append", help="procedural seed rendered as an image prompt")
    parser.add_argument("--image", action="append", default=[], help="an image file as a prompt (repeatable)")
    parser.add_argument("-n", "--num-samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg", type=float, default=CFG_SCALE, help="guidance scale (the schedule is the default's)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--size", type=int, default=160, help="pixels per cell")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "generations.png")
    args = parser.parse_args(argv)
    from vat3d.pretrained import load_generator, load_tokenizer

    generator, tokenizer = load_generator(args.generator), load_tokenizer(args.tokenizer)
    seeds = IMAGE_SEEDS if args.image_seed is None else args.image_seed
    images = image_prompts(seeds, args.image)
    record = build_sheet(generator, tokenizer, captions=args.caption or CAPTIONS, images=images,
                         n=args.num_samples, seed=args.seed, cfg=args.cfg, resolution=args.resolution,
                         out=args.out, size=args.size)
    record["command"] = "python benchmarks/generation_sheet.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    for row in record["prompts"]:
        frag = "-" if row["fragmentation"] is None else f"{row['fragmentation']:.3f}"
        print(f"{row['prompt']:<40} empty {row['empty']}  fragmentation {frag}  {row['seconds_per_shape']:.2f} s/shape")
    print(f"sheet -> {args.out}")
    return record


if __name__ == "__main__":
    main()
