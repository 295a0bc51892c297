"""What ``vat3d prepare`` and ``vat3d tokenize`` share: the per-shape progress bar and the end-of-run report."""

from __future__ import annotations

from pathlib import Path

import typer


class ShapeProgress:
    """A rich progress bar of shapes with done / skipped / failed counts; ``on_start`` and ``on_result``
    are the callbacks the dataset jobs take."""

    def __init__(self, name: str, console, enabled: bool = True):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("done {task.fields[done]} skipped {task.fields[skipped]} "
                                       "[red]failed {task.fields[failed]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled)
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.task_id = self.bar.add_task(name, total=None, **self.counts)

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def on_start(self, total: int) -> None:
        self.bar.update(self.task_id, total=total)

    def on_result(self, row: dict, skipped: bool) -> None:
        self.counts["skipped" if skipped else ("done" if row.get("status") == "done" else "failed")] += 1
        self.bar.update(self.task_id, advance=1, **self.counts)


def report_run(console, summary, out_dir: Path, *, strict: bool, timing: str = "", failures_file: str) -> None:
    """Print a run's summary line and its first failures; exit 130 if interrupted, 1 if ``strict`` and any failed."""
    failed_text = f"failed {summary.failed}"
    if summary.skipped_failed:
        failed_text += f" (+{summary.skipped_failed} failed in earlier runs)"
    console.print(
        f"{'interrupted' if summary.interrupted else 'finished'}: {summary.total} shapes | done {summary.done} | "
        f"skipped {summary.skipped} | {failed_text} | {summary.seconds:.1f} s | "
        f"{summary.shapes_per_second:.2f} shapes/s{timing} -> {out_dir}")
    for item_id, reason in summary.failures[:10]:
        console.print(f"  [red]failed[/red] {item_id}: {reason}")
    if len(summary.failures) > 10:
        console.print(f"  ... and {len(summary.failures) - 10} more (see {out_dir}/{failures_file})")
    if summary.interrupted:
        raise typer.Exit(130)
    if strict and summary.any_failed:
        raise typer.Exit(1)
