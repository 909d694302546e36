"""Turning fetched rows into torch tensors: the collate function.

The fastest DataLoader set-up (see README) passes ``collate_fn=collate``:
PyTorch then fetches each batch with one ``__getitems__`` call, and
:func:`collate` builds each tensor with one compiled call per field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from ._fast import null_mask
from .dataset import Batch, _pad_ragged
from .fields import Field, Kind


class Collate:
    """Collate rows of an :class:`~h5record.H5Dataset` into a dict of tensors.

    Numeric fields become tensors of shape (batch, ...); variable-length
    numeric fields are padded to the longest row with ``pad_value`` and
    come with ``<name><lengths_suffix>`` (int64 lengths); String and Bytes
    fields stay lists. A nullable field comes with ``<name><valid_suffix>``,
    a bool tensor that is False at nulls; its values hold zeros there (a
    variable-length field, a row of length 0; String and Bytes, ``None``).
    Rows that a ``transform`` turned into something other than dicts (an
    ``(image, label)`` tuple, say) are collated by
    ``torch.utils.data.default_collate``.

    Parameters
    ----------
    pad_value:
        Value that fills the tail of shorter sequences.
    lengths_suffix:
        Key suffix of the lengths tensor of each padded field.
    valid_suffix:
        Key suffix of the mask of each nullable field (and, in rows changed
        by a ``transform``, of each column holding ``None``).
    tensors:
        ``True`` (default): numeric columns of an h5record batch become
        tensors. ``False``: they stay numpy arrays. ``"auto"``: arrays of
        1 MiB or more become tensors, smaller ones stay arrays, which cross
        from DataLoader workers faster (:class:`DataLoader` uses this and
        makes them tensors in the main process). Rows changed by a
        ``transform`` always give tensors.
    """

    def __init__(
        self,
        pad_value: float = 0,
        lengths_suffix: str = "_lengths",
        tensors: bool | Literal["auto"] = True,
        valid_suffix: str = "_valid",
    ) -> None:
        if tensors not in (True, False, "auto"):
            raise ValueError(f"tensors must be True, False or 'auto', got {tensors!r}")
        if valid_suffix == lengths_suffix:
            raise ValueError(f"valid_suffix and lengths_suffix are both {valid_suffix!r}")
        self.pad_value = pad_value
        self.lengths_suffix = lengths_suffix
        self.valid_suffix = valid_suffix
        self.tensors = tensors

    def __call__(self, batch: Any) -> Any:
        if isinstance(batch, Batch):
            return self._from_batch(batch)
        if isinstance(batch, Sequence) and batch and isinstance(batch[0], Mapping):
            return self._from_rows(batch)
        if isinstance(batch, Sequence) and batch:
            # Rows a transform made tuples, arrays or tensors (torchvision's habit).
            return torch.utils.data.default_collate(list(batch))
        raise TypeError(
            "collate expects an h5record Batch or a non-empty list of rows, "
            f"got {type(batch).__name__}"
        )

    def _pad_bytes(self, dtype: np.dtype, element_shape: tuple[int, ...]) -> bytes:
        return np.full(element_shape, self.pad_value, dtype).tobytes()

    def _from_batch(self, batch: Batch) -> dict[str, Any]:
        ds = batch.dataset
        out: dict[str, Any] = {}
        self._check_keys(
            [f.name for f in ds.schema],
            lambda name: ds.kind(name) == Kind.VARIABLE,
            lambda name: ds.schema[name].nullable,
        )
        for field in ds.schema:
            name = field.name
            kind = ds.kind(name)
            if kind in (Kind.STRING, Kind.BYTES):
                out[name] = batch.column(name)
            elif kind == Kind.VARIABLE:  # null rows are stored empty: length 0
                pad = self._pad_bytes(field.dtype, field.element_shape)
                padded, lengths = ds.padded(name, batch.indices, pad)
                self._put_padded(out, name, padded, lengths)
            else:  # null rows are stored as zeros
                out[name] = self._tensor(batch.column(name))
            if field.nullable:
                out[name + self.valid_suffix] = self._tensor(batch.valid(name))
        return out

    def _tensor(self, array: np.ndarray) -> Any:
        if self.tensors is True or (self.tensors == "auto" and array.nbytes >= _SHARE_BYTES):
            return torch.from_numpy(array)
        return array

    def _check_keys(self, names: list[str], padded: Any, nullable: Any) -> None:
        """Refuse a lengths or mask key that would overwrite a field, wherever it is."""
        taken = set(names)
        for name in names:
            for suffix, what, has in (
                (self.lengths_suffix, "lengths", padded),
                (self.valid_suffix, "valid", nullable),
            ):
                key = name + suffix
                if key in taken and has(name):
                    raise ValueError(
                        f"collate: {what} key {key!r} of field {name!r} clashes with a field; "
                        f"set {what}_suffix"
                    )

    def _put_padded(self, out: dict[str, Any], name: str, padded: Any, lengths: Any) -> None:
        out[name] = self._tensor(padded)
        out[name + self.lengths_suffix] = self._tensor(lengths)

    def _from_rows(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """General path for rows changed by a transform.

        Where a batch still carries the schema (see ``TransformedRows``),
        values the transform left as they were collate exactly as the
        untransformed batch does: stored dtypes, and padding with lengths
        for variable-length fields even when the lengths happen to agree.
        """
        schema: dict[str, Field] = {f.name: f for f in getattr(rows, "schema", ())}
        out: dict[str, Any] = {}
        names = list(rows[0])
        columns = {}
        for name in names:
            values = [row[name] for row in rows]
            field = schema.get(name)
            valid = null_mask(values)
            if valid is not None or (field is not None and field.nullable):
                out[name + self.valid_suffix] = torch.from_numpy(
                    np.ones(len(values), np.bool_) if valid is None else valid
                )
            columns[name] = values if valid is None else _fill_nulls(values, field)
        self._check_keys(
            names,
            lambda name: _is_ragged(columns[name], schema.get(name)),
            lambda name: name + self.valid_suffix in out,
        )
        for name in names:
            values = columns[name]
            first = values[0]
            field = schema.get(name)
            if first is None or isinstance(first, (str, bytes)):
                out[name] = values
            elif isinstance(first, torch.Tensor):
                out[name] = torch.stack(values)
            elif isinstance(first, np.ndarray) and first.ndim >= 1:
                if not _is_ragged(values, field):
                    out[name] = torch.from_numpy(np.stack(values))
                else:
                    lengths = np.fromiter((len(v) for v in values), np.int64, len(values))
                    offsets = np.zeros(len(values) + 1, np.int64)
                    np.cumsum(lengths, out=offsets[1:])
                    flat = np.concatenate(values)
                    pad = self._pad_bytes(flat.dtype, flat.shape[1:])
                    padded, lens = _pad_ragged(flat, offsets, pad)
                    self._put_padded(out, name, padded, lens)
            elif isinstance(first, (int, float, np.number, bool)):
                array = np.asarray(values)
                if _is_scalar(field) and array.dtype.kind == field.dtype.kind:
                    array = array.astype(field.dtype)  # e.g. float32 given back as Python floats
                out[name] = torch.as_tensor(array)
            else:
                out[name] = values
        return out


def _is_scalar(field: Field | None) -> bool:
    return field is not None and not field.variable and field.element_shape == ()


def _is_ragged(values: list[Any], field: Field | None) -> bool:
    """Whether this column of arrays is padded (variable field, or unequal shapes)."""
    first = values[0]
    if not isinstance(first, np.ndarray) or first.ndim < 1:
        return False
    if field is not None and field.variable:
        return True
    return any(v.shape != first.shape for v in values)


def _fill_nulls(values: list[Any], field: Field | None) -> list[Any]:
    """A column of transformed rows with its ``None`` values made zeros of the
    column's kind: empty rows for numpy rows of a variable field, zeros shaped
    like the first value for tensors (torch.stack takes one shape); text stays
    ``None``."""
    example = next((v for v in values if v is not None), None)
    if isinstance(example, (str, bytes)):
        return values
    if example is None:  # every row null: the field says what a null stores
        if field is None or field.kind in (Kind.STRING, Kind.BYTES):
            return values
        fill = field.null_value()
        fill = field.dtype.type(fill) if np.ndim(fill) == 0 else fill
    elif isinstance(example, torch.Tensor):
        fill = torch.zeros_like(example)
    elif isinstance(example, np.ndarray):
        if field is not None:
            variable = field.variable
        else:  # arrays of one shape: fixed; of several: padded rows, a null is empty
            variable = any(v.shape != example.shape for v in values if v is not None)
        shape = (0, *example.shape[1:]) if variable else example.shape
        fill = np.zeros(shape, example.dtype)
    else:
        fill = type(example)(0)
    return [fill if v is None else v for v in values]


collate = Collate()

# Worker batches cross to the main process by pickling. A tensor travels
# through a new shared-memory segment and a file descriptor (costly for
# small tensors); an array is copied through the pipe (costly for big ones).
_SHARE_BYTES = 1 << 20


def _to_tensors(batch: Any) -> Any:
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(batch)
    if isinstance(batch, dict):
        return {k: _to_tensors(v) for k, v in batch.items()}
    return batch


class DataLoader(torch.utils.data.DataLoader):
    """A ``torch.utils.data.DataLoader`` set up for h5record datasets.

    It collates with :class:`Collate` and, with worker processes, sends
    small arrays from workers as numpy arrays (a plain copy through the
    pipe) instead of tensors (a shared-memory segment each), then makes
    them tensors in the main process without copying. Batches are the
    same dicts of tensors and lists as ``collate`` gives.

    Takes every ``torch.utils.data.DataLoader`` argument; ``collate_fn``
    defaults to ``Collate(tensors="auto")`` (see :class:`Collate`).
    """

    def __init__(self, dataset: Any, *args: Any, collate_fn: Any = None, **kwargs: Any) -> None:
        self._convert = collate_fn is None
        if collate_fn is None:
            collate_fn = Collate(tensors="auto")
        super().__init__(dataset, *args, collate_fn=collate_fn, **kwargs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        batches = super().__iter__()
        if not self._convert:
            yield from batches
            return
        for batch in batches:
            yield _to_tensors(batch)
