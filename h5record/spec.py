"""Constants of the file format; docs/FORMAT.md is the specification."""

FORMAT_NAME = "h5record"
# The newest version this package reads and writes (section 8). A file is
# written with the lowest version its schema needs: nullable fields need 2.
FORMAT_VERSION = 2
FIRST_VERSION = 1
NULLABLE_VERSION = 2

# Root attributes.
ATTR_FORMAT = "h5record_format"
ATTR_VERSION = "h5record_version"
ATTR_SCHEMA = "schema"
ATTR_NUM_ROWS = "num_rows"
ATTR_WRITER = "writer"

# Checksums (section 6).
ATTR_METADATA_XXH3 = "metadata_xxh3"
ATTR_BLOCK_BYTES = "block_bytes"
CHECKSUM_SUFFIX = "_xxh3"
CHECKSUM_BLOCK_BYTES = 1 << 16

# Tree.
FIELDS_GROUP = "fields"
VALUES = "values"
OFFSETS = "offsets"
BLOCKS = "blocks"
DICTIONARY = "dictionary"
VALIDITY = "validity"  # nullable fields: one bit a row (section 10)
CHUNK_TABLE_SUFFIX = "_chunks"

# A chunk of about this many bytes keeps chunk tables small (8 bytes per MiB
# of data) while a partly filled last chunk wastes little.
TARGET_CHUNK_BYTES = 1 << 20

# Codec ids are never renamed or reused.
CODEC_NONE = "none"
CODEC_LZF = "lzf"
CODEC_GZIP = "gzip"
CODEC_ZSTD = "zstd"
CODEC_IDS = (CODEC_NONE, CODEC_LZF, CODEC_GZIP, CODEC_ZSTD)


def field_path(name: str, dataset: str) -> str:
    """HDF5 path of one dataset of a field."""
    return f"{FIELDS_GROUP}/{name}/{dataset}"


# Writing (section 9). An unfinished new file lives at <path>.partial; a
# commit in progress keeps the old content of the pages it changes in
# <file>.journal.
PARTIAL_SUFFIX = ".partial"
JOURNAL_SUFFIX = ".journal"
JOURNAL_MAGIC = b"H5RJRNL1"
