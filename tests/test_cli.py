"""The command line."""

from __future__ import annotations

from h5record import H5Writer, String
from h5record.cli import main


def test_info_and_verify(tmp_path, capsys):
    path = tmp_path / "c.h5"
    with H5Writer(path, [String("t", compression="zstd")], progress=False) as w:
        for i in range(100):
            w.write({"t": f"row {i}"})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "100 rows" in out and "codec=zstd" in out
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "100 rows checked" in out and "no damage found" in out
    (tmp_path / "bad.h5").write_bytes(b"nope" * 100)
    assert main(["info", str(tmp_path / "bad.h5")]) == 1
    assert "not a readable HDF5 file" in capsys.readouterr().err


def test_info_reports_an_unfinished_write(tmp_path, capsys):
    path = tmp_path / "u.h5"
    w = H5Writer(path, [String("t")], progress=False)
    for i in range(30):
        w.write({"t": f"row {i}"})
    w.commit()
    w._release(remove=False)  # as a kill leaves it
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}.partial: unfinished write (30 committed rows" in out and "resume=True" in out
