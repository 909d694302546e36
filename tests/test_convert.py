"""Converters: each source, read back equal row for row."""

from __future__ import annotations

import io
import json
import tarfile

import h5py
import numpy as np
import pytest

from h5record import Bytes, FormatError, H5Dataset, Integer, RowError, Sequence, String
from h5record.convert import convert, detect_format
from h5record.convert.legacy import looks_like_1_0_4
from h5record.convert.text import from_jsonl

pa = pytest.importorskip("pyarrow")


def _table(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = ["cat", "dög", "ø", "", "long sentence of words"]
    return pa.table(
        {
            "text": [" ".join(rng.choice(words, rng.integers(0, 5))) for _ in range(n)],
            "tokens": pa.array(
                [rng.integers(0, 1000, rng.integers(0, 9)).astype(np.int32) for _ in range(n)],
                pa.list_(pa.int32()),
            ),
            "emb": pa.array(
                [rng.random(3, dtype=np.float32) for _ in range(n)], pa.list_(pa.float32(), 3)
            ),
            "jpeg": [rng.bytes(int(rng.integers(0, 20))) for _ in range(n)],
            "label": rng.integers(-5, 5, n),
        }
    )


def _equal(ds: H5Dataset, rows: list[dict]) -> None:
    assert len(ds) == len(rows)
    for i, want in enumerate(rows):
        got = ds[i]
        assert list(got) == list(want), i
        for name, value in want.items():
            if isinstance(got[name], np.ndarray):
                np.testing.assert_array_equal(got[name], np.asarray(value), err_msg=f"{name} {i}")
            else:
                assert got[name] == value, (name, i)


def test_parquet_by_row_group(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    table = _table(1000)
    pq.write_table(table.slice(0, 600), tmp_path / "a.parquet", row_group_size=128)
    pq.write_table(table.slice(600), tmp_path / "b.parquet", row_group_size=128)
    out = tmp_path / "out.h5"
    assert convert(tmp_path, out, batch_rows=100, progress=False) == 1000
    _equal(H5Dataset(out), table.to_pylist())
    assert H5Dataset(out).schema["tokens"] == Sequence("tokens", dtype="int32")


def test_arrow_ipc_file_and_stream(tmp_path):
    table = _table(300, seed=1)
    with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=70)
    with pa.OSFile(str(tmp_path / "s.arrows"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table, max_chunksize=70)
    for name in ("f.arrow", "s.arrows"):
        out = tmp_path / f"{name}.h5"
        convert(tmp_path / name, out, format="arrow", progress=False)
        _equal(H5Dataset(out), table.to_pylist())


def test_json_lines_and_csv(tmp_path):
    rows = [{"text": f"line {i} ü", "x": [i, i + 1], "y": i / 4} for i in range(500)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    convert(tmp_path / "a.jsonl", tmp_path / "j.h5", progress=False)
    _equal(H5Dataset(tmp_path / "j.h5"), rows)
    (tmp_path / "a.csv").write_text("n,s\n" + "".join(f"{i},s{i}\n" for i in range(200)))
    convert(tmp_path / "a.csv", tmp_path / "c.h5", progress=False)
    _equal(H5Dataset(tmp_path / "c.h5"), [{"n": i, "s": f"s{i}"} for i in range(200)])


def test_null_after_the_first_block_names_the_row_and_leaves_no_file(tmp_path):
    lines = [json.dumps({"n": i}) for i in range(2000)] + ['{"n": null}']
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "n.h5"
    with pytest.raises(RowError, match=r"field 'n', row 2000: .*nullable"):
        from_jsonl(tmp_path / "a.jsonl", out, block_bytes=4096, progress=False)
    assert not list(tmp_path.glob("n.h5*"))
    convert(tmp_path / "a.jsonl", out, nullable=["n"], progress=False)
    _equal(H5Dataset(out), [{"n": i} for i in range(2000)] + [{"n": None}])


def _with_nulls(n: int):
    """_table's columns with nulls in every column at different rows."""
    table = _table(n, seed=3)
    columns = {}
    for k, name in enumerate(table.column_names):
        col = table.column(name).combine_chunks()
        mask = pa.array([(i + k) % 7 == 0 for i in range(n)])
        columns[name] = pa.compute.if_else(mask, pa.scalar(None, col.type), col)
    return pa.table(columns)


def test_nulls_round_trip_through_every_arrow_source(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    table = _with_nulls(500)
    rows = table.to_pylist()
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=128)
    with pa.OSFile(str(tmp_path / "a.arrow"), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=100)
    text_rows = [{k: r[k] for k in ("text", "tokens", "label")} for r in rows[:50]]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in text_rows))
    for src, expect in (("a.parquet", rows), ("a.arrow", rows), ("a.jsonl", text_rows)):
        out = tmp_path / (src + ".h5")
        convert(tmp_path / src, out, progress=False)
        ds = H5Dataset(out)
        assert all(f.nullable for f in ds.schema), src
        _equal(ds, expect)
    # Parquet statistics find nulls past the first row group
    late = pa.table({"n": pa.array([1] * 300 + [None], pa.int64())})
    pq.write_table(late, tmp_path / "late.parquet", row_group_size=100)
    convert(tmp_path / "late.parquet", tmp_path / "late.h5", batch_rows=50, progress=False)
    assert H5Dataset(tmp_path / "late.h5")[300]["n"] is None
    (tmp_path / "c.csv").write_text("n,s\n1,a\n,b\n3,\n")
    convert(tmp_path / "c.csv", tmp_path / "c.h5", progress=False)
    _equal(
        H5Dataset(tmp_path / "c.h5"), [{"n": 1, "s": "a"}, {"n": None, "s": "b"}, {"n": 3, "s": ""}]
    )


def test_dataframe_nulls_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {"n": pd.array([1, None, 3], dtype="Int64"), "t": ["a", None, "c"], "f": [0.5, 1.5, None]}
    )
    convert(frame, tmp_path / "f.h5", progress=False)
    ds = H5Dataset(tmp_path / "f.h5")
    assert [ds[i]["n"] for i in range(3)] == [1, None, 3]
    assert [ds[i]["t"] for i in range(3)] == ["a", None, "c"]
    assert np.isnan(ds[2]["f"]) and not ds.schema["f"].nullable  # NaN is a float value


def test_tables_frames_and_overrides(tmp_path):
    table = _table(250, seed=2)
    out = tmp_path / "t.h5"
    convert(table, out, batch_rows=64, overrides={"emb": None}, progress=False)
    want = [{k: v for k, v in r.items() if k != "emb"} for r in table.to_pylist()]
    _equal(H5Dataset(out), want)
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": np.arange(10), "s": [f"s{i}" for i in range(10)]})
    convert(df, tmp_path / "d.h5", schema=[Integer("a", "int16"), String("s")], progress=False)
    _equal(H5Dataset(tmp_path / "d.h5"), df.to_dict("records"))


def _tar(path, samples):
    with tarfile.open(path, "w") as tar:
        for key, parts in samples:
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards(tmp_path):
    rng = np.random.default_rng(3)
    samples = [
        (
            f"shard/{i:05d}",
            {"jpg": rng.bytes(30), "txt": f"a caption {i}".encode(), "cls": b"%d" % (i % 7)},
        )
        for i in range(40)
    ]
    _tar(tmp_path / "s-000.tar", samples[:25])
    _tar(tmp_path / "s-001.tar", samples[25:])
    out = tmp_path / "w.h5"
    assert detect_format([str(tmp_path)]) == "webdataset"
    assert convert(tmp_path, out, batch_rows=8, progress=False) == 40
    ds = H5Dataset(out)
    assert ds.schema.fields == [String("__key__"), Bytes("jpg"), String("txt"), Integer("cls")]
    _equal(
        ds,
        [
            {"__key__": k, "jpg": p["jpg"], "txt": p["txt"].decode(), "cls": int(p["cls"])}
            for k, p in samples
        ],
    )
    _tar(tmp_path / "bad.tar", [("a", {"jpg": b"1", "cls": b"1"}), ("b", {"jpg": b"2"})])
    with pytest.raises(RowError, match=r"bad.tar: sample 'b' lacks member\(s\) \['cls'\]"):
        convert(tmp_path / "bad.tar", tmp_path / "bad.h5", progress=False)


def _legacy(path, n):
    """A file laid out as h5record 1.0.4 wrote it: one root dataset per field."""
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "sentence",
            data=np.array([[f"sentence {i} é".encode()] for i in range(n)], dtype=object),
            dtype=h5py.string_dtype(),
        )
        seq = f.create_dataset("tokens", (n, 1), dtype=h5py.vlen_dtype(np.int32))
        for i in range(n):
            seq[i, 0] = np.arange(i % 4, dtype=np.int32)
        f.create_dataset("label", data=np.arange(n, dtype=np.int64))
        f.create_dataset("score", data=np.linspace(0, 1, n).astype(np.float16))
        f.create_dataset("image", data=np.full((n, 3, 2, 2), 7, np.uint8))


def test_h5record_1_0_4_files(tmp_path):
    src, out = tmp_path / "old.h5", tmp_path / "new.h5"
    _legacy(src, 50)
    with h5py.File(src, "r") as f:
        assert looks_like_1_0_4(f)
    with pytest.raises(FormatError, match=r"1\.0\.4 file.*h5record convert"):
        H5Dataset(src)
    assert convert(src, out, batch_rows=16, progress=False) == 50
    with h5py.File(out, "r") as f:
        assert not looks_like_1_0_4(f)
    ds = H5Dataset(out)
    assert ds[3]["sentence"] == "sentence 3 é" and ds[3]["label"] == 3
    np.testing.assert_array_equal(ds[3]["tokens"], [0, 1, 2])
    assert ds[3]["image"].shape == (3, 2, 2) and ds[49]["score"] == 1.0


def test_hugging_face_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    table = _table(120, seed=4)
    ds = datasets.Dataset(table)
    rows = table.to_pylist()
    convert(ds.to_iterable_dataset(), tmp_path / "i.h5", batch_rows=50, progress=False)
    _equal(H5Dataset(tmp_path / "i.h5"), rows)
    datasets.DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(
        str(tmp_path / "saved")
    )
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\]"):
        convert(tmp_path / "saved", tmp_path / "x.h5", progress=False)
    convert(tmp_path / "saved", tmp_path / "t.h5", split="test", progress=False)
    _equal(H5Dataset(tmp_path / "t.h5"), rows[:5])


def test_interrupted_conversion_resumes(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    table = _table(400, seed=5)
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=100)
    from h5record.convert import arrow

    batches = arrow.parquet_batches([str(tmp_path / "a.parquet")], 100)

    def stop_after_two():
        for k, batch in enumerate(batches):
            if k == 2:
                raise KeyboardInterrupt
            yield batch

    from h5record.convert import write_tables

    out = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        write_tables(stop_after_two(), out, like=table.schema, progress=False)
    assert (tmp_path / "r.h5.partial").exists()
    convert(tmp_path / "a.parquet", out, resume=True, progress=False)
    _equal(H5Dataset(out), table.to_pylist())


def test_missing_extra_is_named(monkeypatch):
    import sys

    from h5record.convert import need

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pip install 'h5record\[arrow\]'"):
        need("pyarrow.parquet", "arrow")


def test_convert_nullable_false_keeps_fields_not_nullable(tmp_path):
    table = pa.table({"n": pa.array([1, 2], pa.int64())})
    convert(table, tmp_path / "f.h5", nullable=False, progress=False)
    assert not H5Dataset(tmp_path / "f.h5").schema["n"].nullable
    with pytest.raises(RowError, match=r"field 'n', row 1: .*nullable"):
        convert(pa.table({"n": [1, None]}), tmp_path / "g.h5", nullable=False, progress=False)
