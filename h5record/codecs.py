"""Codec configurations: how a field's ``values`` are compressed.

A codec is stored in the schema as a small JSON object with an ``id``
(see docs/FORMAT.md, section 5). ``lzf`` and ``gzip`` are HDF5 chunk
filters; ``zstd`` is block compression done by h5record itself.
"""

from __future__ import annotations

from typing import Any

from . import spec
from .errors import SchemaError

DEFAULT_GZIP_LEVEL = 4
DEFAULT_ZSTD_LEVEL = 3


def parse(value: Any, field: str | None = None) -> dict[str, Any]:
    """Normalise a user's ``compression=`` value to a codec config.

    Accepts ``None``/``"none"``, ``"lzf"``, ``"gzip"``, ``"zstd"``, a
    ``(name, level)`` tuple, or a dict with an ``id`` key.
    """
    where = f"field {field!r}: " if field else ""
    if value is None:
        return {"id": spec.CODEC_NONE}
    if isinstance(value, tuple) and len(value) == 2:
        value = {"id": value[0], "level": value[1]}
    if isinstance(value, str):
        value = {"id": value}
    if not isinstance(value, dict) or value.get("id") not in spec.CODEC_IDS:
        raise SchemaError(
            f"{where}unknown compression {value!r}; choose one of "
            f"None, 'lzf', 'gzip', 'zstd' or (name, level)"
        )
    codec = dict(value)
    cid = codec["id"]
    if cid == spec.CODEC_GZIP:
        codec.setdefault("level", DEFAULT_GZIP_LEVEL)
        if not isinstance(codec["level"], int) or not 0 <= codec["level"] <= 9:
            raise SchemaError(f"{where}gzip level must be an int in 0..9, got {codec['level']!r}")
    elif cid == spec.CODEC_ZSTD:
        codec.setdefault("level", DEFAULT_ZSTD_LEVEL)
        if not isinstance(codec["level"], int) or not -7 <= codec["level"] <= 22:
            raise SchemaError(f"{where}zstd level must be an int in -7..22, got {codec['level']!r}")
    elif "level" in codec:
        raise SchemaError(f"{where}codec {cid!r} takes no level")
    return codec


def hdf5_filter(codec: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``h5py.Group.create_dataset`` for this codec."""
    cid = codec["id"]
    if cid == spec.CODEC_LZF:
        return {"compression": "lzf"}
    if cid == spec.CODEC_GZIP:
        return {"compression": "gzip", "compression_opts": codec["level"]}
    return {}
