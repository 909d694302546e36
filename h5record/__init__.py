"""h5record: large training datasets for PyTorch in one HDF5 file."""

from ._version import __version__

try:
    from . import _fast  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "h5record's compiled extension h5record._fast is missing or was built for another "
        "Python or numpy; reinstall with `pip install .` (or `pip install -e .`) in the "
        f"source tree ({exc})"
    ) from exc

from .dataset import Batch, H5Dataset
from .errors import FormatError, H5RecordError, RowError, RowTypeError, SchemaError
from .fields import (
    Array,
    Bytes,
    Field,
    Float,
    Float16,
    Float16Sequence,
    FloatSequence,
    Image,
    ImageSequence,
    Integer,
    Schema,
    Sequence,
    String,
)
from .infer import infer_schema
from .merge import merge
from .parallel import ShardWriteError, write_shards
from .sampler import ResumableSampler
from .shards import ShardedDataset
from .writer import H5Writer


def __getattr__(name: str):  # torch is imported only when collate is used
    if name in ("collate", "Collate", "DataLoader"):
        from . import torch as _torch

        return getattr(_torch, name)
    raise AttributeError(f"module 'h5record' has no attribute {name!r}")


__all__ = [
    "Array",
    "Batch",
    "Bytes",
    "Collate",
    "DataLoader",
    "Field",
    "Float",
    "Float16",
    "Float16Sequence",
    "FloatSequence",
    "FormatError",
    "H5Dataset",
    "H5RecordError",
    "H5Writer",
    "Image",
    "ImageSequence",
    "Integer",
    "ResumableSampler",
    "RowError",
    "RowTypeError",
    "Schema",
    "SchemaError",
    "Sequence",
    "ShardWriteError",
    "ShardedDataset",
    "String",
    "__version__",
    "collate",
    "infer_schema",
    "merge",
    "write_shards",
]
