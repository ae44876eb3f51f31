"""One validation run: the checks of each spec section (one module each) in the order each
needs the ones before."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..rules.catalog_rows import DataSourceRow
from ..rules.manifest import Manifest
from ..rules.problems import Problem
from .catalog_checks import CatalogChecks
from .data_files import DataFileChecks
from .digests import WORKERS, DigestReading
from .layout import LayoutChecks, StopValidation
from .manifest_checks import ManifestChecks

if TYPE_CHECKING:
    from rich.progress import Progress


@dataclass
class Checker(LayoutChecks, ManifestChecks, CatalogChecks, DigestReading, DataFileChecks):
    """The state of one run and the order of its checks; each spec section's checks are a
    base class from a module of their own, working on this state."""

    path: Path | str
    fast: bool
    progress: Progress | None
    #: For a remote archive (URL): what opening it takes (headers, S3 keys, endpoint).
    storage_options: Mapping[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    form: str | None = None
    format_version: str | None = None
    bytes_verified: int = 0
    digests: dict[str, str] = field(default_factory=dict)
    #: The catalog's data sources, found by the catalog checks, for the data file checks.
    data_sources: list[DataSourceRow] = field(default_factory=list)
    #: An incomplete archive's absent files (spec 4.1), found by the listing check.
    absent: set[str] = field(default_factory=set)
    #: Whether an incomplete archive is an error (TA-E940), not only its absent files warned of.
    complete: bool = False

    def __post_init__(self) -> None:
        self._thread = threading.local()
        self._task: Any = None

    def add(self, code: str, path: str | None, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(code, path, message, hint))

    def run(self) -> None:
        source = self._open()
        if source is None:
            return
        with source, contextlib.ExitStack() as self._cleanup:
            self.source = source
            try:
                self._check_archive()
            except StopValidation:
                pass
            finally:
                if self._task is not None:
                    self.progress.remove_task(self._task)  # type: ignore[union-attr]

    @property
    def is_zip(self) -> bool:
        return self.form == "zip"

    def _check_archive(self) -> None:
        self._inventory()
        self._check_layout()
        self._check_mimetype()
        manifest = self._check_manifest()
        self._check_bagit(manifest)
        if manifest is not None:
            self._check_listing(manifest)
        catalog = self._local_catalog()
        batches = self._hash_batches()
        if not batches:  # fast mode: no pool to start (or to import)
            self._check_catalog(catalog, manifest)
        else:
            self._hash_while_checking_catalog(batches, catalog, manifest)
        if manifest is not None and not self.fast:
            self._check_digests(manifest)
        self._check_tag_manifest()
        self._check_data_files()

    def _hash_while_checking_catalog(
        self, batches: list[list[str]], catalog: Path | None, manifest: Manifest | None
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(WORKERS, thread_name_prefix="validate") as pool:
            try:
                digested = pool.map(self._digest_all, batches)
                self._check_catalog(catalog, manifest)  # while the pool hashes
                for batch in digested:
                    for result in batch:
                        self._record(result)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
