"""Codec configurations: how a field's ``values`` are compressed.

A codec is stored in the schema as a small JSON object with an ``id``
(see docs/FORMAT.md, section 5). ``lzf`` and ``gzip`` are HDF5 chunk
filters; ``zstd`` is block compression done by h5record itself.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

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
        block = codec.setdefault("block_bytes", ZSTD_BLOCK_BYTES)
        if not isinstance(block, int) or not 1 <= block <= 1 << 30:
            raise SchemaError(f"{where}zstd block_bytes must be an int in 1..2**30, got {block!r}")
        if codec.get("dictionary") not in (None, True, False):
            raise SchemaError(f"{where}zstd dictionary must be True, False or None")
        dict_bytes = codec.get("dictionary_bytes")
        if dict_bytes is not None and (
            not isinstance(dict_bytes, int) or not 256 <= dict_bytes <= ZSTD_MAX_DICT_BYTES
        ):
            raise SchemaError(
                f"{where}zstd dictionary_bytes must be None or an int in "
                f"256..{ZSTD_MAX_DICT_BYTES}, got {dict_bytes!r}"
            )
    elif set(codec) - {"id", "requested"}:
        raise SchemaError(f"{where}codec {cid!r} takes no parameters, got {codec!r}")
    return codec


def hdf5_filter(codec: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``h5py.Group.create_dataset`` for this codec."""
    cid = codec["id"]
    if cid == spec.CODEC_LZF:
        return {"compression": "lzf"}
    if cid == spec.CODEC_GZIP:
        return {"compression": "gzip", "compression_opts": codec["level"]}
    return {}


# Raw bytes per zstd block. The random-access default keeps a block small
# enough that reading one row decompresses little more than that row;
# larger blocks trade random-read speed for a smaller file.
ZSTD_BLOCK_BYTES = 256
# A dictionary pays off only for small blocks, and needs enough samples.
ZSTD_DICT_MAX_BLOCK = 64 << 10
# Default dictionary size, at most an eighth of the sample it is trained on.
# Measured on the benchmark's real English sentences: for blocks of a few
# hundred bytes, whose decoding is dominated by lookups in the dictionary, a
# 1 MiB dictionary made random reads ~15% slower than 112 KiB (which stays in
# L2 cache) for a 8% smaller file; for blocks of 2 KiB and more it costs no
# speed and makes the file ~10% smaller. On text without repeated sentences
# the larger dictionary gains only ~2%. Readers hold one dictionary per field.
ZSTD_DICT_BYTES_SMALL_BLOCKS = 112 << 10
ZSTD_DICT_BYTES = 1 << 20
ZSTD_LARGE_BLOCK = 1 << 10
ZSTD_MAX_DICT_BYTES = 16 << 20
ZSTD_MIN_DICT_SAMPLES = 64
# Store a field raw when zstd saves less than this fraction (JPEG, PNG, ...).
INCOMPRESSIBLE_RATIO = 0.9


def zstd(
    level: int = DEFAULT_ZSTD_LEVEL,
    block_bytes: int = ZSTD_BLOCK_BYTES,
    dictionary: bool | None = None,
    dictionary_bytes: int | None = None,
) -> dict[str, Any]:
    """A zstd codec config.

    Parameters
    ----------
    level:
        zstd compression level.
    block_bytes:
        Raw bytes per block of rows. Small (the default, 256 bytes) keeps
        random access fast; 2 KiB and more give a smaller file.
    dictionary:
        Train a zstd dictionary on the first rows and compress every block
        with it; ``None`` decides by block size.
    dictionary_bytes:
        Size of the trained dictionary; ``None`` picks up to 112 KiB for
        blocks under 1 KiB and up to 1 MiB for larger blocks, as the
        sample allows. Larger dictionaries help data whose rows
        share content; readers keep one per field in memory.
    """
    return parse(
        {
            "id": spec.CODEC_ZSTD,
            "level": level,
            "block_bytes": block_bytes,
            "dictionary": dictionary,
            "dictionary_bytes": dictionary_bytes,
        }
    )


class ZstdBlockEncoder:
    """Compress rows into zstd blocks of ``rows_per_block`` rows (FORMAT.md, section 5).

    :meth:`plan` looks at the first rows once: it picks the rows per block,
    trains a dictionary when that helps, and says whether the data
    compresses at all. :meth:`encode` then turns rows into frames, using
    every core through zstandard's multi-threaded batch API.
    """

    def __init__(self, codec: dict[str, Any], element_bytes: int, variable: bool) -> None:
        import zstandard

        self._zstd = zstandard
        self.level = int(codec.get("level", DEFAULT_ZSTD_LEVEL))
        self.block_bytes = int(codec.get("block_bytes") or ZSTD_BLOCK_BYTES)
        self.want_dictionary = codec.get("dictionary")
        self.dictionary_bytes = codec.get("dictionary_bytes")
        # Frames carry zstd's content checksum (FORMAT.md section 6).
        self.checksum = bool(codec.get("checksum"))
        self.element_bytes = element_bytes
        self.variable = variable
        self.rows_per_block = 1
        self.dictionary: bytes | None = None
        self.max_block_bytes = 0
        self.threads = max(1, min(4, os.cpu_count() or 1))
        self._cctx: Any = None

    def _blocks(
        self, flat: np.ndarray, offsets: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw blocks back to back, and their (start, size) segments."""
        from ._fast import build_blocks

        raw = np.ascontiguousarray(flat).reshape(-1).view(np.uint8)
        if self.variable:
            assert offsets is not None
            return build_blocks(raw, offsets, self.rows_per_block, self.element_bytes)
        n = len(flat)
        starts = np.arange(0, n, self.rows_per_block, dtype=np.uint64)
        sizes = np.minimum(self.rows_per_block, n - starts.astype(np.int64)).astype(np.uint64)
        segments = np.stack([starts * self.element_bytes, sizes * self.element_bytes], axis=1)
        return raw, np.ascontiguousarray(segments, np.uint64)

    def _compressor(self, dictionary: bytes | None) -> Any:
        z = self._zstd
        dict_data = z.ZstdCompressionDict(dictionary) if dictionary else None
        return z.ZstdCompressor(
            level=self.level,
            dict_data=dict_data,
            write_content_size=True,
            write_checksum=self.checksum,
            write_dict_id=False,
        )

    def _compress(
        self, cctx: Any, raw: np.ndarray, segments: np.ndarray
    ) -> tuple[bytes, np.ndarray]:
        if len(segments) == 0:
            return b"", np.zeros(0, np.int64)
        buffers = self._zstd.BufferWithSegments(raw.tobytes(), segments.tobytes())
        frames = list(cctx.multi_compress_to_buffer(buffers, threads=self.threads))
        sizes = np.fromiter(map(len, frames), np.int64, len(frames))
        return b"".join(frames), sizes

    def plan(self, flat: np.ndarray, offsets: np.ndarray | None) -> bool:
        """Choose block size and dictionary from sample rows; False if incompressible."""
        n = len(offsets) - 1 if offsets is not None else len(flat)
        raw_bytes = flat.nbytes + (4 * n if self.variable else 0)
        per_row = max(raw_bytes / max(n, 1), 1.0)
        self.rows_per_block = int(min(max(1, round(self.block_bytes / per_row)), 1 << 20))
        # Plan on at most ~8 MiB of rows.
        keep = n if raw_bytes <= 8 << 20 else max(1, int(n * (8 << 20) / raw_bytes))
        if offsets is not None:
            sample_offsets = offsets[: keep + 1]
            sample = flat[: sample_offsets[-1]]
        else:
            sample_offsets, sample = None, flat[:keep]
        raw, segments = self._blocks(sample, sample_offsets)
        if raw.nbytes == 0:
            self._cctx = self._compressor(None)
            return True
        plain_size = len(self._compress(self._compressor(None), raw, segments)[0])
        best_size = plain_size
        use_dict = self.want_dictionary
        if use_dict is None:
            use_dict = self.rows_per_block * per_row <= ZSTD_DICT_MAX_BLOCK
        if use_dict and len(segments) >= ZSTD_MIN_DICT_SAMPLES:
            samples = [raw[int(s) : int(s) + int(z)].tobytes() for s, z in segments]
            cap = (
                ZSTD_DICT_BYTES
                if self.rows_per_block * per_row >= ZSTD_LARGE_BLOCK
                else ZSTD_DICT_BYTES_SMALL_BLOCKS
            )
            size = self.dictionary_bytes or int(min(cap, max(4096, raw.nbytes // 8)))
            try:
                trained = self._zstd.train_dictionary(
                    size, samples, k=64, d=8, level=self.level, threads=self.threads
                ).as_bytes()
            except self._zstd.ZstdError:
                trained = None
            if trained:
                dict_size = len(self._compress(self._compressor(trained), raw, segments)[0])
                if dict_size + len(trained) < plain_size:
                    self.dictionary = trained
                    best_size = dict_size
        if best_size > INCOMPRESSIBLE_RATIO * raw.nbytes:
            return False
        self._cctx = self._compressor(self.dictionary)
        return True

    def restore(self, config: dict[str, Any], dictionary: bytes | None) -> None:
        """Continue the plan stored in a file's codec entry (append, resume)."""
        self.rows_per_block = int(config["rows_per_block"])
        self.max_block_bytes = int(config.get("max_block_bytes", 0))
        self.dictionary = dictionary
        self._cctx = self._compressor(dictionary)

    def decode(self, frame: bytes) -> bytes:
        """Decompress one frame written by this encoder."""
        dict_data = self._zstd.ZstdCompressionDict(self.dictionary) if self.dictionary else None
        return bytes(self._zstd.ZstdDecompressor(dict_data=dict_data).decompress(frame))

    def encode(self, flat: np.ndarray, offsets: np.ndarray | None) -> tuple[bytes, np.ndarray]:
        """Compress whole blocks of rows; return the frames and each frame's size."""
        raw, segments = self._blocks(flat, offsets)
        if len(segments):
            self.max_block_bytes = max(self.max_block_bytes, int(segments[:, 1].max()))
        return self._compress(self._cctx, raw, segments)

    def config(self, codec: dict[str, Any]) -> dict[str, Any]:
        """The codec entry to store in the schema."""
        out = dict(codec)
        out.update(
            rows_per_block=self.rows_per_block,
            max_block_bytes=self.max_block_bytes,
            block_bytes=self.block_bytes,
            dictionary=self.dictionary is not None,
        )
        return out
