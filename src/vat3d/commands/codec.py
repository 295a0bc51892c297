"""``vat3d encode`` and ``vat3d decode``: meshes to .vat token files and back.

Both take files or folders (searched recursively), show a progress bar, write every output
atomically (temporary file + rename), never overwrite an input, report each failing file and go on
with the rest of the batch (exit code 1 if any failed).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import typer

from vat3d.codec.effort_defaults import DEFAULT_EFFORT

OUT_SUFFIXES = {".obj", ".ply", ".glb", ".stl", ".off"}
# Face budget of decoded meshes: on 12 held-out real meshes, simplifying the 256^3 decode (170K-1M faces) to
# 20K faces changed F@0.01 against the input by at most 0.003 (docs/codec.md, "Meshes sized for use").
DEFAULT_DECODE_FACES = 20000


def _expand(inputs: list[Path], suffixes: "set[str] | frozenset[str]") -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        elif item.is_file():
            files.append(item)
        else:
            raise typer.BadParameter(f"{item} does not exist")
    if not files:
        raise typer.BadParameter(f"no input files with suffix {sorted(suffixes)} in {', '.join(map(str, inputs))}")
    return files


def _targets(files: list[Path], inputs: list[Path], out: Path, suffix: str) -> list[Path]:
    """One output per input: OUT itself for a single input with OUT's suffix, else OUT/<relative>.suffix."""
    if len(files) == 1 and out.suffix.lower() == suffix and not out.is_dir():
        return [out]
    if out.exists() and not out.is_dir():
        if any(os.path.realpath(out) == os.path.realpath(f) for f in files):
            raise typer.BadParameter(f"refusing to overwrite input file {out}")
        raise typer.BadParameter(f"{out} is an existing file: give a {suffix} path (one input) or a folder")
    targets = []
    for f in files:
        root = next((i for i in inputs if i.is_dir() and f.resolve().is_relative_to(i.resolve())), None)
        rel = f.resolve().relative_to(root.resolve()) if root else Path(f.name)
        targets.append(out / rel.with_suffix(suffix))
    return targets


def _write(dst: Path, data: bytes, protect: list[Path]) -> None:
    from vat3d.codec.vatfile import atomic_write_bytes

    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dst, data, protect=protect)


def _fail(src: Path, error: Exception) -> None:
    typer.secho(f"failed: {src}: {error}", fg=typer.colors.RED, err=True)


def load_entropy_generator(name: str, tokenizer):
    """The ``--entropy`` generator, checked against ``tokenizer`` (a clear CLI error if it does not fit)."""
    from vat3d.codec.api import model_fingerprint_bytes
    from vat3d.codec.entropy import check_generator
    from vat3d.pretrained import load_generator

    generator = load_generator(name)
    try:
        check_generator(generator, model_fingerprint_bytes(tokenizer), tokenizer.scale_sizes, tokenizer.codebook_size)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--entropy") from None
    return generator


def encode(
    model: str = typer.Argument(..., help="Tokenizer folder (config.json + model.safetensors) or 'default'."),
    inputs: list[Path] = typer.Argument(..., help="Mesh files or folders (searched recursively)."),
    out: Path = typer.Option(..., "--output", "-o", help="A .vat path (one input) or a folder."),
    seed: int = typer.Option(0, help="Seed of the surface sampling (encoding is deterministic per seed)."),
    entropy: Optional[str] = typer.Option(None, "--entropy", help="Entropy-code with this generator (or 'default')."),
    effort: str = typer.Option(DEFAULT_EFFORT, "--effort", help="turned (the amortised encoder in 6 axis-aligned "
                               "turns, the best kept: about 0.2 s); fast (one pass, no turn); oriented (all 24 turns: "
                               "about 0.7 s); balanced or best: search the tokens against the mesh's own occupancy "
                               "(seconds; never worse on held-out points)."),
    max_bytes: Optional[int] = typer.Option(None, "--max-bytes", min=1,
                                            help="Keep the longest prefix of scales whose file fits in N bytes."),
    target_iou: Optional[float] = typer.Option(None, "--target-iou", min=0.0, max=1.0,
                                               help="Keep the shortest prefix of scales whose held-out IoU reaches X."),
) -> None:
    """Encode meshes to .vat token files (raw bit-packed, or entropy-coded with --entropy GENERATOR)."""
    from rich.progress import Progress

    from vat3d.codec.api import encode_mesh
    from vat3d.codec.refine import EFFORTS
    from vat3d.geometry.io import MESH_SUFFIXES
    from vat3d.pretrained import load_tokenizer

    if effort not in EFFORTS:
        raise typer.BadParameter(f"--effort must be one of {', '.join(EFFORTS)}, got {effort!r}")
    tokenizer = load_tokenizer(model)
    generator = load_entropy_generator(entropy, tokenizer) if entropy else None
    files = _expand(inputs, MESH_SUFFIXES)
    targets = _targets(files, inputs, out, ".vat")
    total, failed, seconds = 0, 0, 0.0
    verbose = effort not in ("fast", DEFAULT_EFFORT) or target_iou is not None or max_bytes is not None
    with Progress(transient=True) as progress:
        task = progress.add_task("encoding", total=len(files))
        for src, dst in zip(files, targets):
            try:
                shape = encode_mesh(tokenizer, src, seed=seed, generator=generator, effort=effort,
                                    max_bytes=max_bytes, target_iou=target_iou)
                _write(dst, shape.data, files)
                total += shape.num_bytes
                seconds += shape.seconds
                if verbose:
                    score = (f", held-out IoU {shape.score:.3f} (fast {shape.fast_score:.3f})"
                             if shape.score is not None else "")
                    turn = f", turn {shape.transform.orientation}" if shape.transform.orientation else ""
                    progress.console.print(
                        f"{src.name}: {shape.num_bytes} B, {shape.num_scales} of {len(tokenizer.scale_sizes)} "
                        f"scales{score}{turn}, {shape.seconds:.1f} s")
            except Exception as error:  # report and go on with the batch
                failed += 1
                _fail(src, error)
            progress.advance(task)
    done = len(files) - failed
    typer.echo(f"encoded {done} of {len(files)} meshes, {total} bytes in all"
               + (f" ({total / done:.0f} B, {seconds / done:.2f} s per shape)" if done else "")
               + (" [entropy-coded]" if generator is not None else "")
               + f" [effort {effort}] -> {out}")
    if failed:
        raise typer.Exit(1)


def decode(
    model: str = typer.Argument(..., help="Tokenizer folder or 'default' (the one that encoded the files)."),
    inputs: list[Path] = typer.Argument(..., help=".vat files or folders."),
    out: Path = typer.Option(..., "--output", "-o", help="A mesh path (.obj/.ply/.glb/.stl/.off) or a folder."),
    scales: Optional[int] = typer.Option(None, "--scales", min=1, help="Decode only the first K scales (coarser)."),
    resolution: int = typer.Option(256, help="Marching-cubes grid resolution (256 or 512)."),
    precision: str = typer.Option("auto", help="Occupancy MLP precision: auto (bf16 where the CPU/GPU computes it "
                                  "natively, else fp32), fp32 or bf16."),
    faces: int = typer.Option(DEFAULT_DECODE_FACES, "--faces", min=0,
                              help="Simplify each decoded mesh to at most about N faces (0: keep marching cubes' "
                                   "full mesh, 10^5-10^6 faces at 256^3)."),
    band: float = typer.Option(0.0, min=0.0, help="Also refine cells within this many logits of the surface: "
                               "finds small fragments the coarse pass misses (0.25: ~1.5x slower)."),
    dense: bool = typer.Option(False, "--dense", help="Evaluate every grid point (slow reference)."),
    fmt: str = typer.Option("obj", "--format", help="Mesh format when OUT is a folder."),
    entropy: Optional[str] = typer.Option(
        None, "--entropy", help="Generator for entropy-coded files (default: the shipped one, if it matches)."),
) -> None:
    """Decode .vat token files to meshes (in the original mesh's coordinates)."""
    from rich.progress import track

    from vat3d.codec.api import EntropyGeneratorRequired, decode_tokens, read_tokens
    from vat3d.codec.vatfile import VatTruncatedWarning, _read_limited, decode_vat_header
    from vat3d.pretrained import load_generator, load_tokenizer

    if precision not in ("auto", "fp32", "bf16"):
        raise typer.BadParameter(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    tokenizer = load_tokenizer(model)
    files = _expand(inputs, {".vat"})
    suffix = out.suffix.lower() if len(files) == 1 and out.suffix.lower() in OUT_SUFFIXES else f".{fmt.lower()}"
    if suffix not in OUT_SUFFIXES:
        raise typer.BadParameter(f"unsupported mesh format {suffix}; use one of {sorted(OUT_SUFFIXES)}")
    targets = _targets(files, inputs, out, suffix)
    generator = load_generator(entropy) if entropy else None
    tried_default = False
    failed = 0
    for src, dst in track(list(zip(files, targets)), description="decoding", transient=True):
        try:
            data = _read_limited(src)
            if generator is None and not tried_default and decode_vat_header(data).coding == "entropy":
                tried_default = True
                try:
                    generator = load_generator("default")
                except FileNotFoundError:
                    raise EntropyGeneratorRequired(
                        f"the file is entropy-coded with generator {decode_vat_header(data).generator_fingerprint.hex()}"
                        ": pass that generator with --entropy GENERATOR") from None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", VatTruncatedWarning)
                vat, transform = read_tokens(tokenizer, data, max_scales=scales, generator=generator)
            if any(issubclass(w.category, VatTruncatedWarning) for w in caught):
                typer.secho(f"warning: {src}: truncated file, decoding its {len(vat.tokens)} complete scales "
                            f"of {vat.header.num_scales_stored} (coarser)", fg=typer.colors.YELLOW, err=True)
            mesh = decode_tokens(tokenizer, vat.tokens, transform, resolution=resolution, precision=precision,
                                 band=band, dense=dense, faces=faces or None)
            if not len(mesh.faces):
                typer.secho(f"warning: {src}: the decoded field has no surface (empty mesh written)",
                            fg=typer.colors.YELLOW, err=True)
            blob = mesh.export(file_type=suffix[1:])
            _write(dst, blob if isinstance(blob, bytes) else blob.encode(), files)
        except Exception as error:
            failed += 1
            _fail(src, error)
    typer.echo(f"decoded {len(files) - failed} of {len(files)} files -> {out}")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)
    app.command("decode")(decode)
