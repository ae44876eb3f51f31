"""The archive an update replaces, as a source of payload files that need not be fetched
again (:func:`tiled_archive.downloader.update.update`).

A file is taken from it, never fetched, when the server still names the same content: the
SHA-256 the server reports (an archive served by Tiled, or the archive route's manifest)
equals the file's, or the validators the server sends today (ETag, Last-Modified, size)
equal those the archive's fetch record kept from the file's download (spec 4.1). Files are
matched by their URL at the server, not by archive path: a node added elsewhere on the server
may move every file to a new archive path (the archive's ``data/`` mirrors the deepest folder
holding them all), and the bytes are the same.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ..files.blobs import Validators, http_date
from ..reader import Archive
from ..rules.manifest import FileEntry
from ..sources.directory import DirectorySource
from ..sources.lazy import LazySource
from ..writer import PayloadFile
from .state import Run, ServerFile


@dataclass(frozen=True)
class Kept:
    """A present file of the previous archive: its manifest entry and the validators its fetch
    record kept (None: not recorded)."""

    entry: FileEntry
    validators: Validators | None


class Previous:
    """The present payload files of ``archive`` (open for the whole update), by the URL they
    were fetched from and by digest."""

    def __init__(self, archive: Archive):
        self.archive = archive
        source = archive.source
        present = source.is_present if isinstance(source, LazySource) else None
        members = archive.members()
        self._kept: dict[str, Kept] = {}
        self._by_url: dict[str, Kept] = {}
        self._by_digest: dict[str, Kept] = {}
        record = archive.manifest.fetch
        for entry in archive.manifest.files:
            member = members.get(entry.path)
            if member is None or member.size != entry.size:  # absent, or not what it says
                continue
            if present is not None and not present(entry.path):
                continue
            source_of = record.files.get(entry.path) if record is not None else None
            validators = None
            if source_of is not None and (source_of.etag or source_of.last_modified):
                validators = Validators(source_of.etag, source_of.last_modified)
            kept = Kept(entry, validators)
            self._kept[entry.path] = kept
            if source_of is not None:
                self._by_url[record.url(entry.path)] = kept  # type: ignore[union-attr]
            if entry.sha256 is not None:
                self._by_digest.setdefault(entry.sha256, kept)

    def kept_for(self, remote: ServerFile) -> Kept | None:
        """The present file that may be ``remote`` 's content today: the one with the digest
        the server reports (then it is), else the one fetched from ``remote`` 's URL whose
        validators were kept (it is while the server still sends them: the caller asks)."""
        if remote.server_sha256 is not None:
            return self.by_digest(remote.server_sha256, remote.size)
        kept = self._by_url.get(remote.url())
        return kept if kept is not None and kept.validators is not None else None

    def by_digest(self, sha256: str, size: int | None) -> Kept | None:
        """A present file with this SHA-256 (and ``size``, when given)."""
        kept = self._by_digest.get(sha256)
        return kept if kept is not None and size in (None, kept.entry.size) else None

    def payload(self, kept: Kept, member: str) -> PayloadFile:
        """``kept`` 's bytes as the new archive's payload file ``member``: a directory
        archive's file is hard-linked (its digest known; its size checked, not its bytes:
        a directory's files are not read to update it) or copied, a ZIP member's bytes are
        copied through a hashing pass that holds them to the manifest's digest."""
        source = self.archive.source
        path = kept.entry.path
        if isinstance(source, DirectorySource):
            local = Path(source.location, path)
            mtime = int(local.stat().st_mtime)
            opener = functools.partial(open, local, "rb")
            return PayloadFile(
                member, kept.entry.size, opener, mtime, kept.entry.sha256, local_path=local
            )
        # As a download stamps a fetched file: the server's Last-Modified (a ZIP's records
        # keep the time too, but only to the even second and in local time).
        modified = kept.validators.last_modified if kept.validators is not None else None
        # No CRC-32 given: the writer hashes the member as it copies it and holds it to the
        # manifest's digest (TA-E308), so damage is never carried into the new archive.
        return PayloadFile(
            member,
            kept.entry.size,
            functools.partial(self.archive.open, path),
            http_date(modified),
            kept.entry.sha256,
        )


def reuse_unchanged(run: Run) -> None:
    """After a lazy download's probes (no payload fetched): take each file the server still
    names as it was from the previous archive (present there), so an update of a lazy
    archive keeps what it had fetched of unchanged files, and a dry run sees them as
    unchanged."""
    previous: Previous | None = run.previous
    if previous is None:
        return
    for node in run.nodes:
        if node.method != "raw":
            continue
        for remote in node.files:
            if remote.member in run.reused:
                continue
            kept = previous.kept_for(remote)
            now = remote.probed
            if kept is not None and remote.server_sha256 is None:
                assert kept.validators is not None
                if now is None or now[0] != kept.entry.size or not kept.validators.matches(now[1]):
                    kept = None
            if kept is not None:
                run.file_reused(remote.member, previous.payload(kept, remote.member))
