"""The table of error and warning codes of the tiled-archive format.

One row per rule of ``spec/FORMAT.md``: every MUST has an ``E`` code, every SHOULD a ``W`` code.
The spec's code table is checked against this one by the test suite, so the two cannot drift.
Problems are data (a code, the member or path at fault, a message), as in OCFL validators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Code:
    """One rule of the format: its identifier, severity, what it says and what to do about it."""

    id: str
    summary: str
    hint: str
    #: From the identifier (``TA-E``: error), fixed once: a validation run asks it of every
    #: problem, and a ZIP of 200,000 bad members has 400,000.
    severity: Severity = field(init=False, compare=False)

    def __post_init__(self) -> None:
        severity = Severity.ERROR if self.id.startswith("TA-E") else Severity.WARNING
        object.__setattr__(self, "severity", severity)


_TABLE = [
    # -- Recognition and layout ------------------------------------------------------------
    Code(
        "TA-E001",
        "Not a tiled-archive: neither a directory nor a ZIP file, or no `mimetype` file at its "
        "root.",
        "Pass the archive's directory or its .zip file.",
    ),
    Code(
        "TA-E002",
        "A required top-level file or folder is missing.",
        "Re-create the archive; required: mimetype, tiled-archive.json, catalog.db, bagit.txt, "
        "bag-info.txt, manifest-sha256.txt, tagmanifest-sha256.txt, data/.",
    ),
    Code(
        "TA-E003",
        "The `mimetype` file does not hold exactly `application/x-tiled-archive`.",
        "Write the 27 ASCII bytes `application/x-tiled-archive`, no newline.",
    ),
    Code(
        "TA-W001",
        "Unknown top-level entry outside `data/`; readers ignore it.",
        "Move it under data/ (and into the manifest) or remove it.",
    ),
    # -- ZIP packaging ---------------------------------------------------------------------
    Code(
        "TA-E100",
        "The ZIP structure is unreadable (no end of central directory, truncated or "
        "inconsistent central directory).",
        "The file is damaged or not a ZIP; re-download it.",
    ),
    Code(
        "TA-E101",
        "The first ZIP member is not `mimetype`, STORED, without extra field.",
        "Write `mimetype` first, uncompressed, with no extra field (as EPUB does).",
    ),
    Code(
        "TA-E102",
        "A ZIP member uses a compression method other than STORED, Deflate or Deflate64.",
        "Re-pack with `tiled-archive pack`.",
    ),
    Code("TA-E103", "A ZIP member is encrypted.", "Archives must not be encrypted."),
    Code(
        "TA-E104",
        "A ZIP member is neither a regular file nor an empty directory entry "
        "(symlink, device, non-empty directory entry).",
        "Store regular files only.",
    ),
    Code("TA-E105", "Duplicate ZIP member name.", "Each path may appear once."),
    Code(
        "TA-E106",
        "A local file header disagrees with its central directory entry.",
        "The ZIP is damaged or was written by a faulty tool; re-pack it.",
    ),
    Code(
        "TA-E107",
        "ZIP members overlap, or a member extends outside the member area.",
        "The ZIP is damaged or crafted; re-pack it.",
    ),
    Code(
        "TA-E108",
        "Bytes before the first member, between members and the central directory "
        "not accounted for, or after the end record (including a ZIP comment).",
        "Remove prepended or appended data; re-pack.",
    ),
    Code(
        "TA-E109",
        "ZIP64 fields are missing where needed or inconsistent.",
        "Re-pack with a ZIP64-capable writer.",
    ),
    Code(
        "TA-E110",
        "A ZIP member sets the data-descriptor flag (bit 3).",
        "Write sizes and CRC-32 into the local header; re-pack.",
    ),
    Code(
        "TA-E111",
        "A ZIP member's CRC-32 does not match its bytes.",
        "The member is damaged; re-download the archive.",
    ),
    Code("TA-E112", "The ZIP spans several disks.", "Join the parts into one file."),
    Code(
        "TA-W101",
        "A ZIP member is compressed (Deflate/Deflate64); it can only be read sequentially.",
        "Re-pack with `tiled-archive pack` to store members uncompressed.",
    ),
    Code(
        "TA-W102",
        "A STORED member's data does not start on a 4096-byte boundary; it cannot be "
        "memory-mapped from the ZIP.",
        "Re-pack with `tiled-archive pack`.",
    ),
    Code(
        "TA-W103",
        "A ZIP's tag files and `catalog.db` do not all come before its payload members; a "
        "reader of the archive on a web server needs a request for each instead of one.",
        "Re-pack with `tiled-archive pack` (order: mimetype, the tag files, catalog.db, then "
        "data/).",
    ),
    # -- Paths -----------------------------------------------------------------------------
    Code(
        "TA-E200",
        "A path holds a forbidden character (control character, backslash, `?`, "
        "`#`, `%`) or is not valid UTF-8.",
        "Rename the file.",
    ),
    Code(
        "TA-E201",
        "A path is absolute or holds an empty, `.` or `..` segment.",
        "Use relative paths below the archive root.",
    ),
    Code(
        "TA-E202",
        "A path segment is longer than 255 bytes of UTF-8.",
        "Rename the file: no common filesystem can extract it.",
    ),
    Code(
        "TA-E203",
        "A directory archive holds a symlink or a special file.",
        "Replace it with a regular file.",
    ),
    Code("TA-W200", "A path is not in Unicode NFC.", "Rename the file to its NFC form."),
    Code(
        "TA-W201",
        "Two paths differ only by letter case; they collide on case-insensitive filesystems.",
        "Rename one of them.",
    ),
    # -- Manifest (tiled-archive.json) -----------------------------------------------------
    Code("TA-E300", "`tiled-archive.json` is not UTF-8 JSON.", "Re-create the manifest."),
    Code(
        "TA-E301",
        "`tiled-archive.json` does not match `spec/manifest.schema.json`.",
        "Fix the field named in the message.",
    ),
    Code(
        "TA-E302",
        "The archive's major format version is not supported by this reader.",
        "Upgrade tiled-archive.",
    ),
    Code(
        "TA-E303",
        "A manifest path is not a file below `data/`.",
        "List payload files only, as `data/...`.",
    ),
    Code("TA-E304", "A manifest path is listed twice.", "List each file once."),
    Code(
        "TA-E305",
        "A file listed in the manifest is missing from the archive.",
        "Restore the file or re-create the archive.",
    ),
    Code(
        "TA-E306",
        "A file under `data/` is not listed in the manifest.",
        "Add it to the manifest (and BagIt files) or remove it.",
    ),
    Code(
        "TA-E307",
        "A file's size differs from the manifest.",
        "The file is damaged or was changed; re-download.",
    ),
    Code(
        "TA-E308",
        "A file's SHA-256 differs from the manifest.",
        "The file is damaged or was changed; re-download.",
    ),
    Code(
        "TA-E309",
        "`catalog.db` differs from the manifest's `catalog` entry (size or SHA-256).",
        "The catalog is damaged or was changed; re-download, or `tiled-archive relocate`.",
    ),
    Code(
        "TA-E310",
        "The manifest's `fetch` record could make a reader contact something other than its "
        "origin, or is incomplete: the origin is not an http(s) URL with a host and no "
        "credentials, query or fragment ending in `/`; a file's URL is not a relative URL "
        "below it; it names a file `files` does not list; or a file without `sha256` is not "
        "in it.",
        "Write fetch URLs relative to the origin (`asset/bytes/...`), keep credentials out of "
        "the archive, and give every file outside the fetch record its digest.",
    ),
    Code(
        "TA-W311",
        "The manifest's `history` is not in the order the updates were made: an entry's "
        "`updated` time is earlier than the entry before it (the history is informative: the "
        "archive reads the same).",
        "Keep history entries oldest first, each appended by the update it records.",
    ),
    Code(
        "TA-W310",
        "A payload file the `fetch` record lists is absent: the archive is incomplete (a lazy "
        "archive); its readers fetch the file from the origin when asked to.",
        "Run `tiled-archive fetch DIR` to bring every absent file (or `--node PATH` for part).",
    ),
    Code(
        "TA-W300",
        "The archive has a newer minor format version than this reader; features it "
        "does not know are ignored.",
        "Upgrade tiled-archive.",
    ),
    Code(
        "TA-W301",
        "`tiled-archive.json` is not in canonical form (keys sorted at every level, two-space "
        "indent, `files` sorted by path, UTF-8 without escapes, final newline).",
        "Write it as spec section 4 says (Python: `json.dumps(manifest, indent=2, "
        "sort_keys=True, ensure_ascii=False)` and a newline), then update "
        "tagmanifest-sha256.txt.",
    ),
    # -- BagIt -----------------------------------------------------------------------------
    Code(
        "TA-E400",
        "`bagit.txt` is not the BagIt 1.0 declaration in UTF-8.",
        "Write `BagIt-Version: 1.0` and `Tag-File-Character-Encoding: UTF-8`.",
    ),
    Code(
        "TA-E401",
        "`manifest-sha256.txt` is malformed or disagrees with the manifest.",
        "Regenerate it from tiled-archive.json.",
    ),
    Code(
        "TA-E402",
        "`tagmanifest-sha256.txt` is malformed, misses a tag file, lists an absent file or has "
        "a wrong digest.",
        "Regenerate it after every change to a tag file.",
    ),
    Code(
        "TA-E403",
        "`bag-info.txt` lacks a correct `Payload-Oxum`.",
        "Write `Payload-Oxum: <total bytes>.<file count>` of data/.",
    ),
    Code(
        "TA-W400",
        "`bag-info.txt` lacks `Bag-Software-Agent` or `Bagging-Date`.",
        "Name the software that wrote the archive, and the date (YYYY-MM-DD).",
    ),
    Code(
        "TA-W401",
        "The lines of a BagIt manifest (`manifest-sha256.txt`, `tagmanifest-sha256.txt`) are not "
        "sorted by path.",
        "Sort them by path, bytewise (`LC_ALL=C sort -k 2`).",
    ),
    # -- catalog.db ------------------------------------------------------------------------
    Code(
        "TA-E500",
        "`catalog.db` is not an intact SQLite database.",
        "The catalog is damaged; re-download.",
    ),
    Code(
        "TA-E501",
        "`catalog.db` is not stamped with exactly one Tiled catalog schema revision this "
        "format version allows, or the manifest names another one.",
        "Write it with a supported Tiled version.",
    ),
    Code(
        "TA-E502",
        "`catalog.db` lacks a table (or a column) of Tiled's catalog schema.",
        "Create the catalog with Tiled's own catalog initialization, or from "
        "spec/catalog-schema-<revision>.sql.",
    ),
    Code(
        "TA-E503",
        "An asset's `data_uri` is not in archive form (`data/...`, or in a relocated "
        "directory archive an absolute file URI inside its own `data/`, or inside the `data/` "
        "of the one folder it was relocated in before it was moved, naming a file it holds).",
        "Point each asset at a file the archive holds: `data/...`, or in a directory archive "
        "the absolute URI `tiled-archive relocate DIR` writes.",
    ),
    Code(
        "TA-E504",
        "An asset points at a path the archive does not hold.",
        "Add the file, or remove the asset.",
    ),
    Code(
        "TA-E505",
        "An asset's `size`, `hash_type` or `hash_content` disagrees with the manifest.",
        "Set size and sha256 from the manifest.",
    ),
    Code(
        "TA-E506",
        "A node, structure or data source in the catalog is not valid for Tiled.",
        "Write the catalog through Tiled.",
    ),
    Code(
        "TA-E507",
        "`catalog.db` is in WAL journal mode.",
        "Run `PRAGMA journal_mode=DELETE` before packaging.",
    ),
    Code(
        "TA-E508",
        "A data source's `parameters` hold a key its mimetype may not carry in an archive, or "
        "a value of the wrong kind (keys that name files or change how bytes are decoded).",
        "Keep only the parameters Tiled's registration writes (spec section 3.2); re-create "
        "the catalog through Tiled.",
    ),
    Code(
        "TA-E509",
        "JSON in the catalog (node metadata or specs, a structure, parameters) is nested more "
        "than 64 levels deep.",
        "Flatten the metadata; Tiled's encoders cannot serve JSON that deep.",
    ),
    Code(
        "TA-W500",
        "A file under `data/` is not referenced by any asset.",
        "Register it, or leave it out of the archive.",
    ),
    Code(
        "TA-W501",
        "A data source's mimetype has no adapter in Tiled; that node cannot be read.",
        "Use a mimetype Tiled ships an adapter for.",
    ),
    Code(
        "TA-W502",
        "A file asset has no `hash_type`/`hash_content` in the catalog.",
        "Fill them with `sha256` and the manifest digest.",
    ),
    Code(
        "TA-W503",
        "A relocated directory archive's asset URIs point into the `data/` of another folder, "
        "where it was relocated before it was moved or copied: readers read its own files, but "
        "stock `tiled serve catalog` would not find them.",
        "Run `tiled-archive relocate DIR` before serving it with stock `tiled serve catalog`.",
    ),
    # -- Content of data files ----------------------------------------------------------
    Code(
        "TA-E600",
        "A data file refers to a file other than itself (HDF5 external link, external raw "
        "storage or virtual dataset source; a Zarr key outside its store; an OME-TIFF whose "
        "XML names another file).",
        "Copy the referenced data into the file (e.g. h5py `copy`), then re-create the archive.",
    ),
    Code(
        "TA-E601",
        "A data file cannot be read as its data source's mimetype says (malformed header, "
        "Python objects, unknown codec, HDF5 link loop or nesting deeper than 64 groups).",
        "Re-write the file with its own library, or correct the data source's mimetype.",
    ),
    Code(
        "TA-E602",
        "A declared size disagrees with the data: a header declares more bytes than the file "
        "holds, or the catalog's structure differs from the file's own header.",
        "Re-register the file with Tiled so the catalog describes what the file holds.",
    ),
    Code(
        "TA-W600",
        "A data file decodes to more than 1000 times the bytes it stores (at least 64 MiB): "
        "readers refuse to decode it whole beyond their memory budget.",
        "Expected for constant data; otherwise check the file. Read it in slices.",
    ),
    # -- Operational errors of the reference implementation (not format rules) -------------
    Code(
        "TA-E900",
        "A source file or folder is missing or unreadable.",
        "Check the path and its permissions.",
    ),
    Code(
        "TA-E901",
        "Tiled has no adapter for a source file (unknown type) or could not read it.",
        "Remove the file from the sources, or convert it to a format Tiled reads.",
    ),
    Code(
        "TA-E902",
        "Two source items would become the same Tiled node (same name).",
        "Rename one of them (e.g. `scan.csv` and `scan.parquet` in one folder collide).",
    ),
    Code(
        "TA-E903",
        "The destination already exists (or is a non-empty directory).",
        "Choose a new destination, or replace an existing archive: `--force` on the command "
        "line, `force=True` from Python.",
    ),
    Code("TA-E904", "The destination cannot be written.", "Check the folder and free space."),
    Code(
        "TA-E906",
        "The disk (or the user's quota) is full: a file could not be written. Nothing of the "
        "run is left behind.",
        "Free space on that filesystem (or raise the quota), or write elsewhere (for scratch "
        "space: TMPDIR), then re-run.",
    ),
    Code(
        "TA-E905",
        "A source file changed while it was being archived.",
        "Archive data that is not being written to.",
    ),
    Code(
        "TA-E910",
        "A download could not fetch some nodes, neither raw nor through the data API "
        "(the nodes and reasons are listed); nothing was written.",
        "Fix access to the listed nodes (or leave them out with a search), then re-run: "
        "what was fetched is cached.",
    ),
    Code(
        "TA-E911",
        "A download could not reach the server, or the server kept failing (connection "
        "errors or 5xx answers after retries); nothing was written.",
        "Check the server and the network, then re-run: the download resumes from the cache.",
    ),
    Code(
        "TA-E912",
        "A read would decode more than the reader's memory budget (default 300 MB, Tiled's own "
        "response limit), or opening an array would make its library hold more than that for "
        "the chunks it declares (a task or an entry per chunk); nothing was allocated.",
        "Read a smaller slice or fewer columns, or raise TILED_ARCHIVE_READ_BUDGET (bytes).",
    ),
    Code(
        "TA-E913",
        "A download found no node to fetch: the search matched nothing, or the container is "
        "empty; nothing was written.",
        "Check the search terms and the node path; pass --allow-empty (allow_empty=True) to "
        "write an archive that holds only the parent containers.",
    ),
    Code(
        "TA-E914",
        "A download was refused by the server's authentication: it requires an API key and "
        "none was given, or the key given is not valid; nothing was written.",
        "Pass --api-key KEY or set TILED_API_KEY (from Python: api_key=), with a key the "
        "server accepts.",
    ),
    Code(
        "TA-E915",
        "An archive cannot be updated from its server: its manifest records no server and "
        "node (`provenance`: it was not made by a download), or names a search that cannot "
        "be asked again; nothing was changed.",
        "Update only archives `tiled-archive download` wrote; otherwise download the node "
        "again into a new archive.",
    ),
    Code(
        "TA-E930",
        "A remote archive (http, https) cannot be read by range requests: the server cannot be "
        "reached, answers an error, ignores `Range` (a whole-file 200) or answers ranges "
        "wrongly.",
        "Check the URL and the network; serve the archive from a server that honours Range "
        "requests, or download it whole and open the local file.",
    ),
    Code(
        "TA-E931",
        "A remote archive changed while it was read: an answer gave another size, `ETag` or "
        "`Last-Modified` than the first; nothing more is read from it.",
        "Open it again once it is no longer being replaced (a published archive should be "
        "written under a new name, not over the old one).",
    ),
    Code(
        "TA-E940",
        "The archive is incomplete (files its fetch record lists are absent) and this needs "
        "every file: packing it, loading it into a catalog, serving it with stock Tiled, or "
        "`validate --complete`.",
        "Run `tiled-archive fetch DIR` first: it brings the absent files from the origin and "
        "checks them.",
    ),
    Code(
        "TA-E941",
        "A read needs bytes of a file the incomplete archive does not hold, and fetching is "
        "off: offline (`offline=True`, TILED_ARCHIVE_OFFLINE=1), or an archive this user's "
        "download did not make (it contacts nothing until told to).",
        "Run the `tiled-archive fetch` command the message names, or open with fetch=True "
        "(online).",
    ),
    Code(
        "TA-E942",
        "The origin's bytes are not the file the archive lists: another size, SHA-256 or "
        "validators (`ETag`, `Last-Modified`) than recorded; the file changed at the origin. "
        "Nothing fetched was kept.",
        "Download the node again (`tiled-archive download ... --lazy --force`) to follow the "
        "origin's new state.",
    ),
    Code(
        "TA-E943",
        "The origin of an incomplete archive cannot be reached or will not hand out a file "
        "(connection error, an error status, a redirect, a refused API key).",
        "Check the network and the server; pass --api-key KEY or set TILED_API_KEY (from "
        "Python: api_key=) when the server wants one. Work offline with what is present.",
    ),
    Code(
        "TA-E920",
        "A load would put a node where the target catalog already has one (the same key under "
        "the same node path), or a node on the path it loads under is not a container; "
        "nothing was loaded.",
        "Load under another node path: --at PATH (at=...), e.g. --at archives/<name>.",
    ),
    Code(
        "TA-E921",
        "A load would overwrite a file in the data folder that holds other bytes (or is not a "
        "regular file); nothing was loaded.",
        "Load under another node path (--at), whose files go in a folder of their own, or "
        "choose another --data folder.",
    ),
    Code(
        "TA-E922",
        "A Tiled catalog named by URI (the target of a load, the source of create --catalog or "
        "from_catalog) cannot be opened or written (not a database URI, no such file, the "
        "server is down or refuses the user, no catalog or another schema revision); nothing "
        "was loaded or read.",
        "Check the URI (sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DATABASE), that the "
        "server runs and the database exists, and that the user may read it (write, to load).",
    ),
    Code(
        "TA-E923",
        "An asset of a catalog opened with from_catalog names a file outside its readable "
        "storage (symbolic links and `..` resolved), or something that is not a local file; "
        "it is not read.",
        "If the file is meant to be read, pass the folder that holds it in readable_storage "
        "(only folders you trust); otherwise correct the asset's data_uri in the catalog.",
    ),
]

CODES: dict[str, Code] = {code.id: code for code in _TABLE}


def code(identifier: str) -> Code:
    """Return the code with this identifier (``KeyError`` for an unknown one)."""
    return CODES[identifier]


def markdown_table() -> str:
    """The code table as it appears in spec/FORMAT.md §11."""
    rows = ["| code | severity | rule | what to do |", "|---|---|---|---|"]
    rows += [f"| {c.id} | {c.severity.value} | {c.summary} | {c.hint} |" for c in CODES.values()]
    return "\n".join(rows) + "\n"
