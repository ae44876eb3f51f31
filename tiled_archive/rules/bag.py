"""BagIt 1.0 (RFC 8493) tag files of an archive, rendered from and checked against the manifest.

The manifest (``tiled-archive.json``) is the source of truth; the BagIt files are a projection of
it, so `bagit.py --validate` and ``sha256sum -c manifest-sha256.txt`` work without our code.
Pure functions: bytes in, bytes or problems out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .manifest import Manifest
from .names import BAG_INFO_NAME, BAGIT_NAME, PAYLOAD_MANIFEST_NAME
from .problems import Problem

BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
_LINE = re.compile(r"^([0-9a-f]{64}) [ *]?(.+)$")


def bag_info(manifest: Manifest) -> bytes:
    """``bag-info.txt``: producer, bagging date and the payload's octet count (Payload-Oxum);
    for a download, where it came from (the manifest's ``provenance``, spec §5)."""
    producer = " ".join(
        v for v in (manifest.producer["name"], manifest.producer.get("version")) if v
    )
    lines = [f"Bag-Software-Agent: {producer}", f"Bagging-Date: {manifest.created[:10]}"]
    provenance = manifest.extra.get("provenance")
    if isinstance(provenance, dict):
        source = f"{provenance.get('server', '')}{provenance.get('node', '')}"
        lines.append(f"External-Identifier: {_one_line(source)}")
        searched = "; ".join(
            f"{q.get('type', 'query')} {_one_line(str(q))}" for q in provenance.get("queries") or []
        )
        description = (
            f"Downloaded from Tiled {provenance.get('tiled_version', '?')} at "
            f"{provenance.get('retrieved', '?')}" + (f", searched: {searched}" if searched else "")
        )
        lines.append(f"External-Description: {_one_line(description)}")
    lines.append(f"Payload-Oxum: {manifest.payload_oxum}")
    return "".join(line + "\n" for line in lines).encode()


def _one_line(text: str) -> str:
    """A BagIt tag value: one line (BagIt's continuation lines are not worth the ambiguity)."""
    return " ".join(text.split())


def digest_lines(digests: Mapping[str, str]) -> bytes:
    """A BagIt manifest (also ``sha256sum`` format): ``<sha256>  <path>`` lines sorted by path.

    Paths never hold ``%``, CR or LF (format path rules), so no percent-encoding is needed.
    """
    return "".join(f"{digests[p]}  {p}\n" for p in sorted(digests)).encode("utf-8")


def payload_manifest(manifest: Manifest) -> bytes:
    # An incomplete archive's files of unknown digest have no line (spec 5): not yet a bag.
    return digest_lines({f.path: f.sha256 for f in manifest.files if f.sha256 is not None})


def parse_digest_lines(raw: bytes, name: str, code: str) -> tuple[dict[str, str], list[Problem]]:
    """Parse a BagIt manifest; malformed lines become problems with ``code``."""
    digests: dict[str, str] = {}
    problems = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {}, [Problem(code, name, "not UTF-8")]
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.match(line)
        if not match:
            problems.append(Problem(code, name, f"line {number} is not '<sha256>  <path>'"))
            continue
        digest, path = match.groups()
        if path in digests:
            problems.append(Problem(code, name, f"line {number} repeats {path!r}"))
        digests[path] = digest
    return digests, problems


def order_problems(raw: bytes, name: str) -> list[Problem]:
    """TA-W401 when a BagIt manifest's well-formed lines are not in ascending order of path
    (by code point, which is bytewise UTF-8 order: ``LC_ALL=C sort``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return []  # malformed: an error of its own
    numbered = [
        (number, match.group(2))
        for number, line in enumerate(text.splitlines(), start=1)
        if (match := _LINE.match(line))
    ]
    for (_, before), (number, after) in zip(numbered, numbered[1:], strict=False):
        if after <= before:
            return [
                Problem(
                    "TA-W401",
                    name,
                    f"line {number} ({after!r}) is not after {before!r}: lines are not sorted "
                    "by path",
                )
            ]
    return []


def check_bag_info(raw: bytes, manifest: Manifest) -> list[Problem]:
    """TA-E403 unless ``Payload-Oxum`` is present and matches the manifest."""
    match = re.search(rb"^Payload-Oxum:\s*(\d+\.\d+)\s*$", raw, re.MULTILINE)
    if not match:
        return [Problem("TA-E403", BAG_INFO_NAME, "no Payload-Oxum line")]
    if match.group(1).decode() != manifest.payload_oxum:
        return [
            Problem(
                "TA-E403",
                BAG_INFO_NAME,
                f"Payload-Oxum {match.group(1).decode()} but data/ holds {manifest.payload_oxum}",
            )
        ]
    return []


def check_bagit_txt(raw: bytes) -> list[Problem]:
    if raw.replace(b"\r\n", b"\n") != BAGIT_TXT:
        return [Problem("TA-E400", BAGIT_NAME, "not the BagIt 1.0 / UTF-8 declaration")]
    return []


def check_payload_manifest(raw: bytes, manifest: Manifest) -> list[Problem]:
    """TA-E401 for every disagreement between manifest-sha256.txt and tiled-archive.json."""
    digests, problems = parse_digest_lines(raw, PAYLOAD_MANIFEST_NAME, "TA-E401")
    expected = {f.path: f.sha256 for f in manifest.files if f.sha256 is not None}
    for path in sorted(expected.keys() | digests.keys()):
        if digests.get(path) != expected.get(path):
            problems.append(
                Problem(
                    "TA-E401",
                    path,
                    f"{PAYLOAD_MANIFEST_NAME} says "
                    f"{digests.get(path)}, tiled-archive.json says "
                    f"{expected.get(path)}",
                )
            )
    return problems
