"""The benchmark's chart: drawn from saved results, and skipped cleanly without matplotlib."""

from __future__ import annotations

import builtins
import json
import struct

import pytest

from benchmarks import chart

SYSTEMS = {"h5record": 1.0, "(b) numpy memmap": 0.2, "(a) 1.0.4 layout": 0.01}
WORKLOADS = {"text": 1e6, "images": 3e5}


def fake_results() -> dict:
    rows = []
    for w, base in WORKLOADS.items():
        for system, share in SYSTEMS.items():
            row = {"workload": w, "system": system}
            for k, metric in enumerate(("row_rows_s", "batch_rows_s", "dl_nw0", "write_rows_s")):
                row[metric] = base * share * (1 + k / 4)
            if system == "h5record":
                row["write_batch_rows_s"] = 3 * base
            rows.append(row)
    sources = {w: {"rows": 1000, "raw_MB": 1.5, "source": f"made-up {w}"} for w in WORKLOADS}
    return chart.core_results(rows, sources, mode="quick", cores=2, version="0.0")


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", head[16:24])


def test_chart_from_saved_results(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    data = fake_results()
    saved = chart.results_path(tmp_path / "out" / "bench.png")
    assert saved.name == "bench.json"
    chart.save_results(data, saved)
    assert chart.load_results(saved) == json.loads(json.dumps(data))
    png = tmp_path / "redrawn.png"
    assert chart.main([str(saved), str(png)]) == 0
    assert f"chart: {png}" in capsys.readouterr().out
    width, height = png_size(png)
    assert (width, height) == (1300, 820)  # 13 x 8.2 inches at 100 dpi
    assert 20_000 < png.stat().st_size < 150_000  # bars, labels and text, yet small
    # Every system's bars are drawn, in its own colour: h5record's two writes too.
    series = chart._series(data)
    assert series == ["h5record", "h5record, write_batch", "(b) numpy memmap", "(a) 1.0.4 layout"]
    image = pytest.importorskip("PIL.Image").open(png).convert("RGB")
    counts = {rgb: n for n, rgb in image.getcolors(1 << 20)}
    for label, colour in chart._colors(series).items():
        rgb = tuple(int(colour[k : k + 2], 16) for k in (1, 3, 5))
        assert counts.get(rgb, 0) > 500, f"no bars of {label}"


def test_no_matplotlib_gives_one_line_and_no_chart(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    png = tmp_path / "c.png"
    assert chart.try_draw(fake_results(), png) is None
    assert not png.exists()
    assert capsys.readouterr().err == chart.MISSING + "\n"


def test_results_of_another_kind_are_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match=r"r\.json: not benchmark results"):
        chart.load_results(path)
