"""The command line's schema, head, bench and convert commands."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from h5record import Bytes, Float, H5Dataset, H5Writer, Integer, Sequence, String
from h5record.cli import main


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "s.h5"
    schema = [
        String("text"),
        Bytes("jpeg"),
        Sequence("tokens", dtype="int32"),
        Integer("label", "int16"),
        Float("score", "float32"),
    ]
    with H5Writer(path, schema, progress=False) as w:
        for i in range(300):
            w.write(
                {
                    "text": f"row {i} é",
                    "jpeg": bytes(i % 7),
                    "tokens": np.arange(i % 20, dtype=np.int32),
                    "label": i,
                    "score": 0.1,
                }
            )
    return path


def test_schema(small, capsys):
    assert main(["schema", str(small)]) == 0
    out = capsys.readouterr().out
    assert "300 rows" in out and "tokens  Sequence(dtype=int32)" in out
    assert main(["schema", str(small), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fields"][0]["name"] == "text"


def test_head(small, capsys):
    assert main(["head", str(small), "-n", "2", "--start", "19", "--items", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {
        "text": "row 19 é",
        "jpeg": "<5 bytes>",
        "tokens": [0, 1, 2, "...(16 more)"],
        "label": 19,
        "score": 0.1,
    }
    assert len(lines) == 2 and lines[1]["tokens"] == []
    assert main(["head", str(small), "--fields", "label,nope"]) == 1
    assert "no field(s) ['nope']" in capsys.readouterr().err


def test_bench_quick(small, capsys):
    assert main(["bench", str(small)]) == 0
    out = capsys.readouterr().out
    for words in ("random ds[i]", "random batch of 256", "DataLoader, 2 workers", "recommendation"):
        assert words in out
    assert "num_workers=" in out and "in_memory" in out


def test_convert(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    for k in range(2):
        table = pa.table({"t": [f"{k}-{i}" for i in range(50)], "drop": list(range(50))})
        pq.write_table(table, tmp_path / f"part-{k}.parquet")
    out = tmp_path / "o.h5"
    assert main(["convert", str(tmp_path / "part-*.parquet"), str(out), "--drop", "drop"]) == 0
    assert "100 rows written" in capsys.readouterr().out
    ds = H5Dataset(out)
    assert ds.names == ["t"] and ds[99]["t"] == "1-49"
    assert main(["convert", str(tmp_path / "part-0.parquet"), str(out)]) == 1
    assert "exists; pass overwrite=True" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "x.unknown"), str(out)]) == 1


@pytest.mark.parametrize(
    "command", ["info", "verify", "merge", "schema", "head", "bench", "convert"]
)
def test_every_command_explains_itself_in_plain_text(command):
    out = subprocess.run(
        [sys.executable, "-m", "h5record.cli", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # A description with examples of the command itself, not only its usage line.
    assert "examples:" in out and f"\n  h5record {command} " in out
    assert "``" not in out
