"""h5record.dask on a real LocalCluster: one shard per partition, equal to one-process writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from h5record import H5Dataset, H5Writer, Integer, Sequence, String
from h5record.dask import write_bag, write_dataframe
from h5record.shards import MANIFEST_NAME

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("dask.distributed")
db = pytest.importorskip("dask.bag")

SCHEMA = [Integer("id"), String("text"), Sequence("tok", dtype="int32")]


def make_row(i: int) -> dict:
    return {"id": i, "text": f"t{i}" * (i % 3), "tok": np.arange(i % 4, dtype=np.int32)}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_bag_on_a_local_cluster(client, tmp_path):
    bag = db.from_sequence(range(250), npartitions=4).map(make_row)
    out = tmp_path / "ds"
    assert write_bag(bag, out, SCHEMA) == str(out / MANIFEST_NAME)
    with H5Writer(tmp_path / "one.h5", SCHEMA, progress=False) as w:
        for i in range(250):
            w.write(make_row(i))
    ds = H5Dataset(str(out))
    assert len(ds.shards) == bag.npartitions > 1
    assert ds[0:250] == H5Dataset(str(tmp_path / "one.h5"))[0:250]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_bag(bag, out, SCHEMA)
    mtime = os.stat(out / "part-00001.h5").st_mtime_ns
    os.unlink(out / MANIFEST_NAME)  # as if the client died before writing it
    os.unlink(out / "part-00002.h5")
    write_bag(bag, out, SCHEMA)
    assert os.stat(out / "part-00001.h5").st_mtime_ns == mtime
    assert [r["id"] for r in H5Dataset(str(out))] == list(range(250))


def test_dataframe_on_a_local_cluster(client, tmp_path):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    frame = pd.DataFrame({"id": np.arange(100), "text": [f"r{i}" for i in range(100)]})
    df = dd.from_pandas(frame, npartitions=3)
    out = tmp_path / "df"
    write_dataframe(df, out, [Integer("id"), String("text")], compression="zstd")
    ds = H5Dataset(str(out))
    assert len(ds.shards) == df.npartitions > 1
    assert [r["id"] for r in ds] == list(range(100)) and ds[42]["text"] == "r42"
