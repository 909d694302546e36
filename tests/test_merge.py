"""merge and `h5record merge`: shards concatenated equal the single file, atomically."""

from __future__ import annotations

import os

import numpy as np
import pytest

from h5record import H5Dataset, ImageSequence, Integer
from h5record.cli import main
from h5record.merge import merge
from h5record.reader import read_layout

from .test_shards import BOUNDS, CODECS, data, write  # noqa: F401 - the shared fixture


def test_merge_equals_the_single_file(data, tmp_path):  # noqa: F811
    single, folder, paths = data
    out = tmp_path / "merged.h5"
    assert merge(out, folder) == BOUNDS[-1]
    assert H5Dataset(str(out))[0:300] == H5Dataset(single)[0:300]
    # Each field keeps the first shard's codec; the merged file is complete, no leftovers.
    codecs = [(f.codec or {"id": "none"})["id"] for f in read_layout(str(out)).schema]
    assert codecs == [(f.codec or {"id": "none"})["id"] for f in read_layout(paths[0]).schema]
    assert sorted(os.listdir(tmp_path)) == ["merged.h5"]
    again = tmp_path / "zstd.h5"
    merge(again, paths, compression="zstd")
    assert H5Dataset(str(again))[0:300] == H5Dataset(single)[0:300]
    assert {
        (f.codec or {"id": "none"})["id"] for f in read_layout(str(again)).schema if f.variable
    } <= {
        "zstd",
        "none",
    }


def test_merge_refuses_to_replace_and_leaves_nothing_on_error(data, tmp_path):  # noqa: F811
    _, folder, paths = data
    out = tmp_path / "m.h5"
    merge(out, paths[:2])
    with pytest.raises(FileExistsError):
        merge(out, folder)
    merge(out, folder, overwrite=True)
    assert len(H5Dataset(str(out))) == 300
    with pytest.raises(FileNotFoundError):
        merge(tmp_path / "n.h5", str(tmp_path / "nothing-*.h5"))
    assert sorted(os.listdir(tmp_path)) == ["m.h5"]


def test_cli(data, tmp_path, capsys):  # noqa: F811
    single, folder, paths = data
    out = tmp_path / "c.h5"
    assert main(["merge", str(out), *paths]) == 0
    assert "300 rows merged from 5 files" in capsys.readouterr().out
    assert H5Dataset(str(out))[0:300] == H5Dataset(single)[0:300]
    assert main(["merge", str(out), folder]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["merge", "--overwrite", str(out), os.path.join(folder, "part-*.h5")]) == 0


CLIP = (3, 5, 6)


def clip_row(i: int) -> dict:
    frames = np.random.default_rng(i).integers(0, 256, (i % 4, *CLIP), dtype=np.uint8)
    return {"id": i, "clip": frames}


def test_merge_copies_image_sequences_joined(tmp_path, monkeypatch):
    schema = [Integer("id"), ImageSequence(*CLIP[1:], c=CLIP[0], name="clip")]
    single = write(tmp_path / "one.h5", map(clip_row, range(BOUNDS[-1])), schema)
    paths = [
        write(tmp_path / f"part-{k}.h5", map(clip_row, range(*BOUNDS[k : k + 2])), schema, codec)
        for k, codec in enumerate(CODECS)
    ]

    def one_row(*args, **kwargs):
        raise AssertionError("merge converted an ImageSequence row on its own")

    # Frames travel as one joined array and offsets, whatever the shard's codec.
    monkeypatch.setattr(ImageSequence, "convert", one_row)
    out = tmp_path / "merged.h5"
    assert merge(out, paths) == BOUNDS[-1]
    monkeypatch.undo()
    merged = H5Dataset(str(out))
    assert merged[0 : BOUNDS[-1]] == H5Dataset(single)[0 : BOUNDS[-1]]
    for i in (0, 1, 36, 37, 120, 299):
        got = merged[i]["clip"]
        assert got.dtype == np.uint8 and got.shape == (i % 4, *CLIP)
        np.testing.assert_array_equal(got, clip_row(i)["clip"])
