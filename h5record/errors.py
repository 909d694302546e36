"""The exceptions h5record raises.

Each one also subclasses the builtin it refines, so ``except ValueError``
keeps working for callers that do not know h5record.
"""


class H5RecordError(Exception):
    """Base class of every h5record error."""


class SchemaError(H5RecordError, ValueError):
    """A schema or field definition is invalid."""


class RowError(H5RecordError, ValueError):
    """A row given to the writer does not match the schema."""


class RowTypeError(RowError, TypeError):
    """A value in a row has the wrong Python type."""


class FormatError(H5RecordError, ValueError):
    """A file is not an h5record file, is of an unknown version, or is damaged."""


class WriteError(H5RecordError, OSError):
    """The operating system refused a write (a full disk, say).

    The message names the file, what was being written and the free space;
    ``errno`` is the system's. The rows of the last commit stay readable.
    """
