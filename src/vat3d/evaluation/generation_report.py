"""The report of ``vat3d eval-generation``: the result of
:func:`vat3d.evaluation.generation.evaluate_generation` as JSON (non-finite numbers as null) and as a
Markdown table, overall and per family."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown_report", "write_generation_report"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    return str(value)


def markdown_report(result: dict, title: str = "Generation evaluation") -> str:
    s = result["summary"]
    lines = [f"# {title}", "",
             f"{s['num_generated']} generated shapes for {s['num_references']} held-out shapes "
             f"(cond_type {result.get('cond_type')!s}, prompts: {result['settings'].get('condition', 'auto')}); "
             f"{result['settings']['n_points']} points per shape, "
             f"normalisation {result['settings']['normalize']!r}, squared-L2 Chamfer (CD)."
             + (f" {s['num_skipped']} held-out shapes without a usable condition were left out ("
                + ", ".join(f"{n}: {why}" for why, n in s['skipped_reasons'].items()) + ")."
                if s.get("num_skipped") else ""), "",
             "| metric | value | better |", "|---|---|---|"]
    rows = [("MMD-CD", "lower"), ("COV-CD", "higher"), ("1-NNA-CD", "0.5"),
            ("MMD-CD_reconstructed", "(tokenizer ceiling)"), ("COV-CD_reconstructed", "(tokenizer ceiling)"),
            ("1-NNA-CD_reconstructed", "(tokenizer ceiling)"),
            ("1-NNA-CD_reconstructed_unpaired", "(tokenizer floor: each pair left out)"), ("family_match", "higher"),
            ("family_match_reference", "(ceiling)"),
            ("family_match_reconstructed", "(tokenizer ceiling: each pair left out)"), ("empty_fraction", "lower"),
            ("degenerate_fraction", "lower"),
            ("fragmentation_generated", "lower"), ("fragmentation_real", "(held-out shapes)"),
            ("fragmentation_reconstructed", "(tokenizer ceiling)"), ("fragmentation_ratio", "≤ 1.5"),
            ("seconds_per_shape", "lower"), ("seconds_per_shape_tokens", "lower"),
            ("seconds_per_shape_decode", "lower")]
    for key, better in rows:
        if key in s:  # the ceiling rows only when the held-out shapes were meshed
            lines.append(f"| {key} | {_fmt(s[key])} | {better} |")
    families = result.get("per_family") or {}
    if families:
        lines += ["", "Per family (fragmentation: mean share of surface area outside the largest piece):", "",
                  "| family | generated | empty | degenerate | fragmentation | real | reconstructed | family match |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, f in families.items():
            lines.append(f"| {name} | {f['generated']} | {_fmt(f['empty_fraction'])} | {_fmt(f['degenerate_fraction'])} | "
                         f"{_fmt(f['fragmentation_generated'])} | {_fmt(f['fragmentation_real'])} | "
                         f"{_fmt(f['fragmentation_reconstructed'])} | {_fmt(f['family_match'])} |")
    if result.get("sheet"):
        lines += ["", f"Samples: `{Path(result['sheet']).name}` (held-out shape, then its samples)."]
    lines.append("")
    return "\n".join(lines)


def write_generation_report(result: dict, out_dir: str | Path, name: str = "eval_generation") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (np.floating, np.integer)):
            return clean(value.item())
        return value

    json_path.write_text(json.dumps(clean(result), indent=2) + "\n")
    md_path.write_text(markdown_report(result))
    return json_path, md_path
