"""Keep a run's CSV log across resumes.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when a new ``Trainer`` starts writing
into the same folder, so a resumed run (``--resume auto``) would lose every row logged before the
interruption. :func:`keep_csv_history` swaps each CSV logger's writer for one that appends to the
existing file (same header; new columns rewrite the file with the union of the headers), so
``RUN_DIR/csv/metrics.csv`` holds the whole run. Rows logged after the last checkpoint of an
interrupted run appear twice (once from each attempt); readers should keep the last row per step.
"""

from __future__ import annotations

import csv


def _appending_writer_class():
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class AppendingExperimentWriter(ExperimentWriter):
        """An ``ExperimentWriter`` that continues an existing ``metrics.csv`` instead of deleting it."""

        def _check_log_dir_exists(self) -> None:
            if self._fs.isfile(self.metrics_file_path):
                with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                    header = next(csv.reader(handle), [])
                self.metrics_keys = list(header)

    return AppendingExperimentWriter


def keep_csv_history(trainer) -> None:
    """Make every CSV logger of ``trainer`` append to its existing ``metrics.csv`` (call before ``fit``)."""
    from lightning.pytorch.loggers import CSVLogger

    writer_class = _appending_writer_class()
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger) and trainer.global_rank == 0:
            logger._experiment = writer_class(log_dir=logger.log_dir)
