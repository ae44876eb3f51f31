"""Sections 4 and 5: the manifest (``tiled-archive.json``) and the BagIt tag files, against the
files present and (full mode) their digests."""

from __future__ import annotations

import re

from ..rules import bag
from ..rules.manifest import FileEntry, Manifest, canonical_problem, parse_manifest
from ..rules.names import (
    BAG_INFO_NAME,
    BAGIT_NAME,
    CATALOG_NAME,
    MANIFEST_NAME,
    PAYLOAD_MANIFEST_NAME,
    REQUIRED_FILES,
    TAG_FILES,
    TAG_MANIFEST_NAME,
)
from .layout import StopValidation

_BAG_INFO_LABELS = (b"Bag-Software-Agent", b"Bagging-Date")


class ManifestChecks:
    """The manifest and BagIt files, on the run's state (:class:`~.checker.Checker`)."""

    def _check_manifest(self) -> Manifest | None:
        raw = self._read(MANIFEST_NAME)
        if raw is None:
            return None
        problems, manifest = parse_manifest(raw)
        self.problems.extend(problems)
        if any(p.code == "TA-E302" for p in problems):
            raise StopValidation  # the rules of another major version are unknown here
        if manifest is not None:
            self.format_version = manifest.format_version
            canonical = canonical_problem(raw)
            if canonical is not None:
                self.problems.append(canonical)
        return manifest

    def _check_bagit(self, manifest: Manifest | None) -> None:
        raw = self._read(BAGIT_NAME)
        if raw is not None:
            self.problems.extend(bag.check_bagit_txt(raw))
        info = self._read(BAG_INFO_NAME)
        if info is not None:
            for label in _BAG_INFO_LABELS:
                if not re.search(rb"^" + label + rb":", info, re.MULTILINE):
                    self.add("TA-W400", BAG_INFO_NAME, f"no {label.decode()} line")
        if manifest is None:
            return  # the other checks compare with the manifest
        if info is not None:
            self.problems.extend(bag.check_bag_info(info, manifest))
        raw = self._read(PAYLOAD_MANIFEST_NAME)
        if raw is not None:
            self.problems.extend(bag.check_payload_manifest(raw, manifest))
            self.problems.extend(bag.order_problems(raw, PAYLOAD_MANIFEST_NAME))

    def _check_listing(self, manifest: Manifest) -> None:
        """Manifest against the files present: missing, unlisted, wrong size (no reading)."""
        listed: dict[str, FileEntry] = {}
        for entry in manifest.files:
            listed.setdefault(entry.path, entry)
        fetchable = manifest.fetch.files if manifest.fetch is not None and not self.is_zip else {}
        for path, entry in listed.items():
            size = self.present.get(path)
            if size is None and path in fetchable:
                self.absent.add(path)
                self.add("TA-W310", path, "absent: the archive is incomplete (lazy)")
            elif size is None:
                self.add("TA-E305", path, "listed in the manifest but not in the archive")
            elif size != entry.size:
                self.add("TA-E307", path, f"{size} bytes, the manifest says {entry.size}")
        for path in self.payload:
            if path not in listed:
                self.add("TA-E306", path, "payload file not listed in the manifest")
        if self.absent and self.complete:
            self.add(
                "TA-E940",
                str(self.path),
                f"{len(self.absent)} of its files are absent (it was asked to be complete)",
                f"Run `tiled-archive fetch {self.path}` first.",
            )
        size = self.present.get(CATALOG_NAME)
        if size is not None and size != manifest.catalog.size:
            self.add(
                "TA-E309", CATALOG_NAME, f"{size} bytes, the manifest says {manifest.catalog.size}"
            )

    def _check_digests(self, manifest: Manifest) -> None:
        """SHA-256 against the manifest, for every file whose size was right."""
        for entry in (*manifest.files, manifest.catalog):
            digest = self.digests.get(entry.path)
            if digest is None or entry.sha256 is None or self.present.get(entry.path) != entry.size:
                continue  # (no sha256: an incomplete archive's file, checked by size, §4.1)
            if digest != entry.sha256:
                code = "TA-E309" if entry is manifest.catalog else "TA-E308"
                self.add(code, entry.path, f"SHA-256 is {digest}, the manifest says {entry.sha256}")

    def _check_tag_manifest(self) -> None:
        raw = self._read(TAG_MANIFEST_NAME)
        if raw is None:
            return
        lines, problems = bag.parse_digest_lines(raw, TAG_MANIFEST_NAME, "TA-E402")
        self.problems.extend(problems)
        self.problems.extend(bag.order_problems(raw, TAG_MANIFEST_NAME))
        for name in (*TAG_FILES, CATALOG_NAME):
            if name not in lines:
                self.add("TA-E402", name, f"not listed in {TAG_MANIFEST_NAME}")
        for name, expected in sorted(lines.items()):
            if name not in self.present:
                if name not in REQUIRED_FILES:  # a missing required file is TA-E002 already
                    self.add("TA-E402", name, f"{TAG_MANIFEST_NAME} lists a file that is absent")
                continue
            digest = self.digests.get(name)
            if digest is not None and digest != expected:
                self.add(
                    "TA-E402", name, f"{TAG_MANIFEST_NAME} says {expected}, the file's is {digest}"
                )
