"""tiled-archive: a versioned archive format for offline Tiled data, and its reference
implementation (writer, reader, validator, in-process server)."""

__version__ = "0.1.0"
