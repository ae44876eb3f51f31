"""Names and constants of the tiled-archive format (version 1.3): the format marker, the
top-level files in their order, the data folder, alignment, the Tiled schema revisions.

Pure: nothing here touches an archive.
"""

from __future__ import annotations

#: This package's version (the producer version written into manifests).
__version__ = "0.1.0"
FORMAT_NAME = "tiled-archive"
FORMAT_VERSION = "1.3"
MIMETYPE = "application/x-tiled-archive"

# Top-level names, in the order the reference writer puts them in a ZIP.
MIMETYPE_NAME = "mimetype"
MANIFEST_NAME = "tiled-archive.json"
BAGIT_NAME = "bagit.txt"
BAG_INFO_NAME = "bag-info.txt"
PAYLOAD_MANIFEST_NAME = "manifest-sha256.txt"
TAG_MANIFEST_NAME = "tagmanifest-sha256.txt"
CATALOG_NAME = "catalog.db"
DATA_DIR = "data"
#: The folder where software fetching an incomplete archive's files keeps its work (spec
#: 4.1): not part of the archive; readers and validators ignore it, packing leaves it out.
FETCH_WORK_DIR = ".tiled-archive-fetch"
TAG_FILES = (MIMETYPE_NAME, MANIFEST_NAME, BAGIT_NAME, BAG_INFO_NAME, PAYLOAD_MANIFEST_NAME)
REQUIRED_FILES = (*TAG_FILES, TAG_MANIFEST_NAME, CATALOG_NAME)

# Member data of STORED ZIP members starts on this boundary so it can be memory-mapped.
ALIGNMENT = 4096
# Tiled catalog schema revisions (alembic) that the format allows in catalog.db.
TILED_SCHEMA_REVISIONS = ("917dbbcfc4b1",)
MAX_SEGMENT_BYTES = 255


#: The mimetype of a ragged array's data source: Tiled's rows in an SQL (DuckDB) table.
RAGGED_MIMETYPE = "application/x-ragged+sql"
#: The ids of assets that are a ragged data source's database: Tiled's SQL storage, whose URI
#: names the database file with Tiled's ``duckdb:`` scheme (spec 3.1).
SQL_STORAGE_ASSETS = (
    "SELECT asset_id FROM data_source_asset_association JOIN data_sources "
    f"ON data_sources.id = data_source_id WHERE data_sources.mimetype = '{RAGGED_MIMETYPE}'"
)
#: The scheme of a relocated URI: a file's, or an SQL storage's (a ragged data source's).
RELOCATED_SCHEMES = {False: "file", True: "duckdb"}
