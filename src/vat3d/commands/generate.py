"""``vat3d generate``: sample shapes from a next-scale generator and write meshes + a preview sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vat3d.models.sampling_defaults import CANDIDATES, CFG_SCALE, CFG_SCHEDULE, MEND_STEPS, TOP_P

FORMATS = ("obj", "ply", "glb")
MEND_HELP = ("Lowerings of the meshed level tried on a shape that comes out torn, comma-separated "
             "(e.g. 0.5,1,2); 'off' meshes the level 0 only.")


def mend_text(steps) -> str:
    return ",".join(f"{s:g}" for s in steps) if steps else "off"


def parse_mend(text: str) -> tuple[float, ...]:
    """``--mend`` text -> lowerings: '0.5,1,2' -> (0.5, 1.0, 2.0); 'off', 'none', '0' or '' -> ()."""
    text = text.strip().lower()
    if text in ("", "off", "none", "0"):
        return ()
    try:
        steps = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"--mend takes comma-separated numbers or 'off', got {text!r}") from None
    if any(step <= 0 for step in steps):
        raise typer.BadParameter(f"--mend lowerings must be > 0, got {text!r}")
    return steps


def generate(
    model: str = typer.Argument("default", help="Generator folder or 'default' (the shipped generator)."),
    tokenizer: str = typer.Option("default", "--tokenizer", "-t", help="Tokenizer folder or 'default'."),
    text: Optional[str] = typer.Option(None, "--text", help="Caption (text-conditioned generators)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Image file (image-conditioned generators)."),
    class_label: Optional[str] = typer.Option(None, "--class", help="Class name or id (class-conditioned generators)."),
    unconditional: bool = typer.Option(False, "--unconditional", help="Sample without a condition (the null condition)."),
    n: int = typer.Option(4, "-n", "--num-samples", min=1, help="Number of shapes."),
    out: Path = typer.Option(Path("generated"), "--output", "-o", help="Output folder."),
    fmt: str = typer.Option("obj", "--format", "-f", help="Mesh format: obj, ply or glb."),
    seed: int = typer.Option(0, help="Random seed (the same seed gives the same shapes)."),
    cfg: float = typer.Option(CFG_SCALE, "--cfg", help="Classifier-free guidance scale (1 = none)."),
    cfg_schedule: str = typer.Option(CFG_SCHEDULE, "--cfg-schedule", help="'linear' (1 -> cfg over the scales) or 'constant'."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (0 = greedy)."),
    top_k: int = typer.Option(0, "--top-k", help="Keep the k most likely tokens (0 = all)."),
    top_p: float = typer.Option(TOP_P, "--top-p", help="Nucleus sampling mass (1 = off)."),
    candidates: int = typer.Option(CANDIDATES, "--candidates", min=1,
                                   help="Best of N: draw N per shape, keep a whole one needing the least mending, "
                                        "else the least torn (N times the time)."),
    mend: str = typer.Option(mend_text(MEND_STEPS), "--mend", help=MEND_HELP),
    resolution: int = typer.Option(128, help="Marching-cubes resolution."),
    num_scales: Optional[int] = typer.Option(None, "--num-scales", help="Stop after this many scales (coarser shapes)."),
    min_piece: float = typer.Option(0.0, "--min-piece", min=0.0, max=0.99,
                                    help="Drop loose pieces under this share of the surface area (0 = keep all)."),
    views: int = typer.Option(2, help="Rendered views per shape in the preview sheet (0 = no sheet)."),
    save_tokens: bool = typer.Option(True, "--save-tokens/--no-save-tokens", help="Also write each shape's .vat tokens."),
    device: str = typer.Option("cpu", help="Torch device."),
) -> None:
    """Generate shapes: one mesh per sample (+ .vat tokens) and a PNG preview sheet in OUT."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    given = [name for name, value in (("--text", text), ("--image", image), ("--class", class_label)) if value is not None]
    if unconditional and given:
        raise typer.BadParameter(f"--unconditional cannot be combined with {', '.join(given)}")
    if image is not None and not image.is_file():
        raise typer.BadParameter(f"image file not found: {image}")
    mend_steps = parse_mend(mend)

    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vat3d.pipelines import COND_TYPES, cond_type_of, generate_meshes
    from vat3d.pretrained import load_generator, load_tokenizer

    try:
        gen = load_generator(model, device=device)
        tok = load_tokenizer(tokenizer, device=device)
    except FileNotFoundError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    cond_type = cond_type_of(gen)
    if not given and not unconditional and cond_type != "none":
        accepted = " / ".join(f"--{'class' if a == 'class_label' else a}" for a in COND_TYPES.get(cond_type, ()))
        raise typer.BadParameter(f"this generator is {cond_type!r}-conditioned: give {accepted} (or --unconditional)")
    try:
        gen.check_tokenizer(tok)
    except ValueError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None

    start = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task(f"sampling tokens for {n} shape(s)", total=n)

        def progress(done: int, total: int, stage: str) -> None:
            bar.update(task, completed=done, total=total, description=stage)

        try:
            meshes = generate_meshes(gen, tok, text=text, image=image, class_label=class_label, n=n, seed=seed,
                                     cfg_scale=cfg, cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k,
                                     top_p=top_p, resolution=resolution, num_scales=num_scales, min_piece=min_piece,
                                     candidates=candidates, mend=mend_steps, progress=progress)
        except ValueError as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    written = write_outputs(meshes, tok, out, fmt=fmt, views=views, save_tokens=save_tokens,
                            label=text or (image.name if image else None) or class_label or "unconditional")
    seconds = time.perf_counter() - start
    typer.echo(f"generated {n} shape(s) in {seconds:.1f} s (tokens {meshes.seconds_tokens:.2f} s, "
               f"meshes {meshes.seconds_decode:.2f} s)")
    for i in meshes.empty:
        typer.secho(f"warning: sample {i} is empty (the decoded occupancy has no surface)", fg=typer.colors.YELLOW,
                    err=True)
    for path in written:
        typer.echo(f"wrote {path}")


def write_outputs(meshes, tokenizer, out: Path, *, fmt: str = "obj", views: int = 2, save_tokens: bool = True,
                  label: str | None = None, prefix: str = "sample") -> list[Path]:
    """Write each mesh (and its .vat tokens), a PNG sheet and a small JSON record; returns the paths."""
    import json

    from vat3d.codec.vatfile import encode_vat

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, mesh in enumerate(meshes):
        path = out / f"{prefix}_{i:03d}.{fmt}"
        mesh.export(path, file_type=fmt)
        written.append(path)
        if save_tokens:
            tokens = [t[i].cpu().numpy() for t in meshes.tokens]
            data = encode_vat(tokens, model_fingerprint=bytes.fromhex(tokenizer.fingerprint()),
                              codebook_size=tokenizer.codebook_size, scale_sizes=tokenizer.scale_sizes)
            vat = path.with_suffix(".vat")
            vat.write_bytes(data)
            written.append(vat)
    if views > 0:
        from vat3d.renderers import render_views, save_sheet

        rows = [render_views(mesh, views, size=192, seed=i)[0] if len(mesh.faces) else [None] * views
                for i, mesh in enumerate(meshes)]
        labels = [f"#{i}" for i in range(len(meshes))]
        sheet = save_sheet(out / f"{prefix}_sheet.png", rows, row_labels=labels,
                           col_labels=[f"view {v + 1}" for v in range(views)], size=192)
        written.append(sheet)
    record = {"label": label, "settings": meshes.settings, "empty": meshes.empty,
              "seconds_tokens": round(meshes.seconds_tokens, 4), "seconds_decode": round(meshes.seconds_decode, 4),
              "files": [p.name for p in written]}
    (out / f"{prefix}.json").write_text(json.dumps(record, indent=2) + "\n")
    written.append(out / f"{prefix}.json")
    return written


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
