"""Benchmark: dense vs coarse-to-fine surface extraction, marching cubes and CPU rendering.

Fields: an analytic one (torus + two spheres) and a small random MLP (3 -> 128 -> 128 -> 1, tanh)
added to a sphere so that it has a bumpy closed surface. For each: seconds and points evaluated,
dense and coarse-to-fine at 256^3 (and coarse-to-fine at 512^3), speed-up, and whether both meshes are
identical. Also marching cubes alone at 256^3 and render time per 224 px image.

    .venv/bin/python benchmarks/extraction.py [--resolution 256] [--no-512] [--out benchmarks/results/extraction.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from vat3d.evaluation.baselines import simplify
from vat3d.renderers import render_mesh
from vat3d.geometry.marching import extract_surface, marching_cubes_grid


def analytic_field(points: torch.Tensor) -> torch.Tensor:
    """Union of a torus and two spheres, positive inside."""
    ring = torch.sqrt(points[:, 0] ** 2 + points[:, 2] ** 2) - 0.55
    torus = 0.15 - torch.sqrt(ring**2 + points[:, 1] ** 2)
    a = 0.3 - torch.linalg.norm(points - torch.tensor([0.0, 0.45, 0.0]), dim=-1)
    b = 0.25 - torch.linalg.norm(points - torch.tensor([0.0, -0.5, 0.2]), dim=-1)
    return torch.maximum(torus, torch.maximum(a, b))


class MLPField(torch.nn.Module):
    """``0.6 - |p| + 0.25 * tanh(MLP(p))``: a sphere with random smooth bumps (seeded)."""

    def __init__(self, width: int = 128, seed: int = 0, frequency: float = 6.0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.frequency = frequency
        self.l1 = torch.nn.Linear(3, width)
        self.l2 = torch.nn.Linear(width, width)
        self.l3 = torch.nn.Linear(width, 1)
        with torch.no_grad():
            for layer in (self.l1, self.l2, self.l3):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / layer.weight.shape[1] ** 0.5)
                layer.bias.copy_(0.5 * torch.randn(layer.bias.shape, generator=gen))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.l1(self.frequency * points))
        h = torch.tanh(self.l2(h))
        bumps = torch.tanh(self.l3(h))[:, 0]
        return 0.6 - torch.linalg.norm(points, dim=-1) + 0.25 * bumps


def _same(a, b) -> bool:
    return a.vertices.shape == b.vertices.shape and np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)


def bench_field(name: str, field, resolution: int, with_512: bool, chunk_size: int) -> dict:
    out: dict = {"field": name}
    t = time.perf_counter()
    dense = extract_surface(field, resolution, dense=True, chunk_size=chunk_size)
    dense_s = time.perf_counter() - t
    t = time.perf_counter()
    fine = extract_surface(field, resolution, chunk_size=chunk_size)
    fine_s = time.perf_counter() - t
    out[f"dense_{resolution}"] = {"seconds": dense_s, **dense.metadata["extraction"], "faces": len(dense.faces)}
    out[f"coarse_to_fine_{resolution}"] = {"seconds": fine_s, **fine.metadata["extraction"], "faces": len(fine.faces)}
    out["speedup"] = dense_s / fine_s
    out["points_ratio"] = dense.metadata["extraction"]["points_evaluated"] / fine.metadata["extraction"]["points_evaluated"]
    out["identical_meshes"] = _same(dense, fine)
    print(
        f"[{name}] {resolution}^3 dense {dense_s:.2f}s ({dense.metadata['extraction']['points_evaluated']:,} pts) | "
        f"coarse-to-fine {fine_s:.2f}s ({fine.metadata['extraction']['points_evaluated']:,} pts, "
        f"coarse {fine.metadata['extraction']['coarse_resolution']}) | speed-up {out['speedup']:.1f}x, "
        f"points {out['points_ratio']:.1f}x fewer, identical={out['identical_meshes']}",
        flush=True,
    )
    if with_512:
        t = time.perf_counter()
        big = extract_surface(field, 512, chunk_size=chunk_size)
        big_s = time.perf_counter() - t
        out["coarse_to_fine_512"] = {"seconds": big_s, **big.metadata["extraction"], "faces": len(big.faces)}
        print(
            f"[{name}] 512^3 coarse-to-fine {big_s:.2f}s ({big.metadata['extraction']['points_evaluated']:,} pts = "
            f"{100 * big.metadata['extraction']['points_evaluated'] / 512**3:.1f}% of dense)",
            flush=True,
        )
    return out, dense


def bench_marching(resolution: int, repeats: int = 3) -> dict:
    from vat3d.geometry.marching import grid_points

    values = analytic_field(torch.from_numpy(grid_points(resolution))).numpy().reshape((resolution,) * 3)
    marching_cubes_grid(values)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mesh = marching_cubes_grid(values)
        times.append(time.perf_counter() - t)
    print(f"marching cubes {resolution}^3: {min(times):.3f}s (best of {repeats}), {len(mesh.faces):,} faces", flush=True)
    return {"resolution": resolution, "seconds_best": min(times), "seconds_all": times, "faces": len(mesh.faces)}


def bench_render(mesh, label: str, size: int = 224, repeats: int = 20) -> dict:
    fresh = mesh.copy()
    t = time.perf_counter()
    render_mesh(fresh, size=size)
    first_ms = (time.perf_counter() - t) * 1e3
    times = []
    for k in range(repeats):
        t = time.perf_counter()
        render_mesh(fresh, size=size, azimuth_deg=18.0 * k)
        times.append((time.perf_counter() - t) * 1e3)
    smooth_t = time.perf_counter()
    render_mesh(fresh, size=size, smooth=True)
    smooth_ms = (time.perf_counter() - smooth_t) * 1e3
    out = {
        "mesh": label,
        "faces": len(mesh.faces),
        "size": size,
        "first_ms_incl_bvh": first_ms,
        "median_ms": float(np.median(times)),
        "smooth_ms": smooth_ms,
    }
    print(
        f"render {size}px {label} ({len(mesh.faces):,} faces): first {first_ms:.1f} ms (BVH build), "
        f"then median {out['median_ms']:.1f} ms/image; smooth shading {smooth_ms:.1f} ms",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--no-512", action="store_true", help="skip the 512^3 coarse-to-fine runs")
    parser.add_argument("--chunk-size", type=int, default=262_144)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads (default: torch's choice). On a shared, oversubscribed machine 1 thread "
        "can be much faster than 2 for element-wise fields.",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extraction.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    print(info, flush=True)
    results: dict = {"machine": info}
    analytic, analytic_mesh = bench_field("analytic", analytic_field, args.resolution, not args.no_512, args.chunk_size)
    mlp, mlp_mesh = bench_field("mlp_3-128-128-1", MLPField().eval(), args.resolution, not args.no_512, args.chunk_size)
    results["fields"] = [analytic, mlp]
    results["marching_cubes"] = bench_marching(args.resolution)
    results["render"] = [
        bench_render(mlp_mesh, f"mlp mesh {args.resolution}^3"),
        bench_render(simplify(mlp_mesh, 10_000), "mlp mesh simplified to 10K faces"),
    ]
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
