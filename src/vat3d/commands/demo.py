"""``vat3d demo``: the main job on the shipped models, offline, in a few minutes on a laptop CPU.

1. Encodes sample meshes the model never saw in training (held-out pybullet_data objects and a
   procedural shape with an unseen seed) to ``.vat`` files and decodes them back to meshes in the
   original coordinates.
2. Prints a table against the classical competitor: bytes, F-scores, Draco, and quadric
   simplification + Draco at the same byte budget; writes JSON/Markdown and a PNG sheet showing
   progressive decoding (each prefix of scales).
3. Generates shapes from two captions and one image with the shipped generator.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

#: pybullet_data objects in the held-out (val) split of the shipped models' training data
HELD_OUT_PYBULLET = ("pybullet-soccerball", "pybullet-table_square-table", "pybullet-quadruped-tmotor3",
                     "pybullet-random_urdfs-019")
UNSEEN_PROCEDURAL_SEEDS = (1_000_006,)  # training used seeds 0..1999
CAPTIONS = ("a mug with a handle", "a table with four legs")
IMAGE_SEED = 1_000_008  # the image prompt: a rendered view of an unseen procedural shape


def _sample_meshes(out: Path, count: int) -> list[tuple[str, Path]]:
    """Write the demo's input meshes into ``out`` (as the user would have them) and list them."""
    from vat3d.data.procedural import make_shape
    from vat3d.data.sources import load_item, pybullet_items

    out.mkdir(parents=True, exist_ok=True)
    chosen: list[tuple[str, Path]] = []
    try:
        items = {item.id: item for item in pybullet_items("all")}
    except Exception:  # pybullet_data not installed: procedural shapes only
        items = {}
    for item_id in HELD_OUT_PYBULLET:
        if item_id in items and len(chosen) < count - len(UNSEEN_PROCEDURAL_SEEDS):
            mesh = load_item(items[item_id]).mesh
            path = out / f"{item_id.removeprefix('pybullet-')}.obj"
            mesh.export(path)
            chosen.append((path.stem, path))
    for seed in UNSEEN_PROCEDURAL_SEEDS:
        shape = make_shape(seed)
        path = out / f"procedural-{shape.family}-{seed}.obj"
        shape.mesh.export(path)
        chosen.append((path.stem, path))
    return chosen[:count]


def demo(
    out: Path = typer.Option(Path("vat3d-demo"), "--output", "-o", help="Where everything is written."),
    tokenizer: str = typer.Option("default", "--tokenizer", "-t", help="Tokenizer folder or 'default' (shipped)."),
    generator: str = typer.Option("default", "--generator", "-g", help="Generator folder, 'default' (shipped) or 'none'."),
    shapes: int = typer.Option(4, min=1, max=8, help="How many sample meshes to encode."),
    resolution: int = typer.Option(128, help="Marching-cubes resolution of decoded meshes (256 for final quality)."),
    samples: int = typer.Option(2, min=1, help="Generated shapes per prompt."),
    seed: int = typer.Option(0, help="Seed of the generated shapes."),
    baselines: bool = typer.Option(True, help="Compare with Draco and simplification + Draco."),
) -> None:
    """Run the main job on the shipped models: encode meshes to .vat tokens and back (with a table
    against Draco), show progressive decoding, and generate shapes from captions and an image."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from vat3d.codec.api import decode_file, encode_mesh
    from vat3d.evaluation.baselines import ply_bytes
    from vat3d.evaluation.report import EvalSettings, evaluate_shape, write_report
    from vat3d.geometry.io import load_mesh
    from vat3d.pretrained import load_generator, load_tokenizer

    console = Console()
    t_start = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        tok = load_tokenizer(tokenizer).eval()
    except FileNotFoundError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]vat3d demo")
    console.print(f"tokenizer: {tokenizer} | {sum(p.numel() for p in tok.parameters()) / 1e6:.1f}M params | "
                  f"{len(tok.scale_sizes)} scales, {sum(tok.scale_sizes)} tokens x {tok.bits_per_token} bits "
                  f"(codebook {tok.codebook_size}) | fingerprint {tok.fingerprint()}")

    # ---- 1. encode and decode ------------------------------------------------------------------
    inputs = _sample_meshes(out / "inputs", shapes)
    console.rule("1. meshes -> .vat tokens -> meshes")
    codec_table = Table("mesh", "faces", "input bytes (PLY)", ".vat bytes", "ratio", "encode s", "decode s")
    (out / "tokens").mkdir(exist_ok=True)
    (out / "decoded").mkdir(exist_ok=True)
    for name, path in inputs:
        mesh = load_mesh(path)
        t0 = time.perf_counter()
        shape = encode_mesh(tok, mesh)
        enc_s = time.perf_counter() - t0
        vat_path = out / "tokens" / f"{name}.vat"
        vat_path.write_bytes(shape.data)
        t0 = time.perf_counter()
        decoded, _ = decode_file(tok, vat_path, resolution=resolution)
        dec_s = time.perf_counter() - t0
        decoded.export(out / "decoded" / f"{name}.obj")  # in the input's own coordinates
        ply = ply_bytes(mesh)
        codec_table.add_row(name, f"{len(mesh.faces):,}", f"{ply:,}", f"{shape.num_bytes}",
                            f"{ply / shape.num_bytes:.0f}x", f"{enc_s:.2f}", f"{dec_s:.2f}")
    console.print(codec_table)

    # ---- 2. quality vs the classical pipeline, progressive decoding ------------------------------
    console.rule("2. quality per scale vs Draco and simplification + Draco at the same bytes")
    settings = EvalSettings(resolution=resolution, scale_resolution=min(resolution, 96), n_points=10_000,
                            n_volume=20_000, n_near=20_000, budgets=(512, 1024) if baselines else (),
                            draco_qbits=(8, 11) if baselines else (), baselines=baselines)
    rows = []
    for name, path in inputs:
        with console.status(f"evaluating {name}"):
            rows.append(evaluate_shape(tok, path, settings, name=name))
    summary = write_report(rows, out / "eval", sheet_scales=min(4, len(tok.scale_sizes)))
    eval_table = Table("mesh", ".vat B", "F@0.01", "F@0.02", "F@0.05", "vol IoU", "cross-scale IoU",
                       *(["simp+Draco same B: F@0.02", "Draco 11-bit B / F@0.02"] if baselines else []))
    for r in rows:
        extra = []
        if baselines:
            same = next((b for b in r["budget"] if b.get("budget_bytes") == r["vat_bytes"]), None)
            draco = next((d for d in r["draco"] if d["qbits"] == 11), r["draco"][-1])
            extra = ["-" if not same or same.get("fscore@0.02") is None else f"{same['fscore@0.02']:.3f}",
                     f"{draco['bytes']} / {draco['fscore@0.02']:.3f}"]
        eval_table.add_row(r["name"], str(r["vat_bytes"]), f"{r['fscore@0.01']:.3f}", f"{r['fscore@0.02']:.3f}",
                           f"{r['fscore@0.05']:.3f}", f"{r['vol_iou']:.3f}", f"{r['cross_scale_iou']:.3f}", *extra)
    console.print(eval_table)
    console.print("F@0.02 per scale prefix (tokens): " + " | ".join(
        f"{s['scale']} ({s['tokens']}): {sum(r['scales'][i]['fscore@0.02'] for r in rows) / len(rows):.3f}"
        for i, s in enumerate(rows[0]["scales"])))

    # ---- 3. generation -------------------------------------------------------------------------------
    gen_dirs: list[Path] = []
    if generator != "none":
        console.rule("3. generation from captions and an image")
        try:
            gen = load_generator(generator).eval()
        except FileNotFoundError as e:
            console.print(f"[yellow]skipping generation: {e}[/yellow]")
            gen = None
        if gen is not None:
            from vat3d.commands.generate import write_outputs
            from vat3d.data.procedural import make_shape
            from vat3d.renderers import render_views
            from vat3d.pipelines import cond_type_of, generate_meshes

            cond = cond_type_of(gen)
            prompts: list[tuple[str, dict]] = []
            if "text" in cond:  # "text", "text+image"
                prompts += [(f"text-{i + 1}", {"text": c}) for i, c in enumerate(CAPTIONS)]
            if "image" in cond:
                from PIL import Image

                shape = make_shape(IMAGE_SEED)
                from vat3d.geometry.normalize import normalize_mesh

                view = render_views(normalize_mesh(shape.mesh)[0], 1, size=224, seed=0)[0][0]
                image_path = out / "generated" / "image-prompt.png"
                image_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(view).save(image_path)
                prompts.append(("image-1", {"image": str(image_path)}))
                console.print(f"image prompt: {image_path} (a rendered {shape.family} the model never saw)")
            if cond == "class":
                names = list(gen.config.get("class_names") or [])[:2]
                prompts += [(f"class-{n}", {"class_label": n}) for n in names]
            for label, condition in prompts:
                t0 = time.perf_counter()
                meshes = generate_meshes(gen, tok, n=samples, seed=seed, resolution=resolution, **condition)
                folder = out / "generated" / label
                write_outputs(meshes, tok, folder, views=2, label=str(condition))
                gen_dirs.append(folder)
                console.print(f"{label}: {condition} -> {samples} shapes in {time.perf_counter() - t0:.1f} s "
                              f"({len(meshes.empty)} empty) -> {folder}")

    # ---- where everything went -------------------------------------------------------------------
    console.rule("outputs")
    console.print(f"input meshes:        {out / 'inputs'}")
    console.print(f".vat token files:    {out / 'tokens'}")
    console.print(f"decoded meshes:      {out / 'decoded'} (original coordinates)")
    console.print(f"evaluation:          {out / 'eval' / 'eval.md'}, eval.json, eval.png (ground truth | scale prefixes | simp+Draco)")
    for folder in gen_dirs:
        console.print(f"generated:           {folder} (meshes, .vat, sheet PNG)")
    console.print(f"mean F@0.02 {summary.get('fscore@0.02', float('nan')):.3f} at "
                  f"{summary.get('vat_bytes', float('nan')):.0f} B per shape; "
                  f"done in {time.perf_counter() - t_start:.0f} s")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
