"""Sections 3.2 and 3.3: each data source's parameters and what its files hold
(:mod:`tiled_archive.inspectors`), once the catalog has named them and hashing found them whole."""

from __future__ import annotations

from ..inspectors import inspect as inspect_data_source


class DataFileChecks:
    """The data file checks, on the run's state (:class:`~.checker.Checker`)."""

    def _check_data_files(self) -> None:
        """Each data source's parameters and what its files hold, except files already found
        damaged or missing (that is their one problem)."""
        damaged = {
            p.path for p in self.problems if p.code in ("TA-E111", "TA-E305", "TA-E307", "TA-E308")
        } | self.absent  # an incomplete archive's absent files: checked once fetched
        for row in self.data_sources:
            folders = [a.member + "/" for a in row.assets if a.is_directory]
            if any(m in damaged for m in row.members()) or any(
                path.startswith(folder) for path in damaged for folder in folders
            ):
                continue
            inspection = inspect_data_source(self.source, row)
            self.problems.extend(inspection.problems)
            warning = inspection.bomb_warning(row.where)
            if warning is not None:
                self.problems.append(warning)
