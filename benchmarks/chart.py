"""A PNG chart of the benchmark's core table, and the JSON it is drawn from.

:mod:`benchmarks.run` saves the core table's figures as JSON beside the
chart, so that the chart can be drawn again without running the benchmark::

    python -m benchmarks.chart results.json out.png

One panel per measure (random ``ds[i]``, random batches of 256, DataLoader
with 0 and 2 workers, write), one group of bars per workload, one bar per
system, rows/s on a log axis. matplotlib is optional (the ``charts`` extra)
and imported only here; without it the chart is skipped with a one-line
message and the benchmark's tables are unaffected.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FORMAT = "h5record-benchmark-core/1"

# (panel title, metrics drawn in it); a second metric is a variant of the
# same system (h5record's write_batch beside its row-by-row write).
PANELS: list[tuple[str, tuple[str, ...]]] = [
    ("random ds[i]", ("row_rows_s",)),
    ("random batch of 256", ("batch_rows_s",)),
    ("DataLoader, 0 workers", ("dl_nw0",)),
    ("DataLoader, 2 workers (fork)", ("dl_nw2_fork",)),
    ("write", ("write_rows_s", "write_batch_rows_s")),
]
VARIANT_LABELS = {"write_batch_rows_s": "write_batch"}
OURS = ["#1f5fa8", "#6fa8dc", "#0b3d6e", "#9fc5e8"]
THEIRS = ["#e69138", "#999999", "#6aa84f", "#a64d79"]
MISSING = "chart not drawn: matplotlib is not installed (pip install -e '.[charts]')"


def results_path(png: str | Path) -> Path:
    """The JSON file saved beside the chart ``png``."""
    return Path(png).with_suffix(".json")


def save_results(data: dict[str, Any], path: str | Path) -> None:
    """Write the core table's figures (see :func:`core_results`) as JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def load_results(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not benchmark results of format {FORMAT!r}")
    return data


def core_results(
    rows: list[dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
    *,
    mode: str,
    cores: int | None,
    version: str,
) -> dict[str, Any]:
    """The JSON document of one run's core table.

    ``rows`` holds one dict per (workload, system) with its metrics;
    ``workloads`` maps a workload's name to its ``rows``, ``raw_MB`` and
    ``source`` (where its data came from).
    """
    return {
        "format": FORMAT,
        "mode": mode,
        "cores": cores,
        "h5record": version,
        "workloads": workloads,
        "rows": rows,
    }


def _series(data: dict[str, Any]) -> list[str]:
    """Bar labels in order of appearance, each system followed by its variants."""
    out: list[str] = []
    for row in data["rows"]:
        for _, metrics in PANELS:
            for metric in metrics:
                label = _label(row["system"], metric)
                if row.get(metric) and label not in out:
                    out.append(label)
    return out


def _colors(series: list[str]) -> dict[str, str]:
    """Blues for h5record and its variants, other colours for the baselines."""
    ours = iter(OURS)
    theirs = iter(THEIRS)
    return {s: next(ours if s.startswith("h5record") else theirs, "#444444") for s in series}


def _label(system: str, metric: str) -> str:
    variant = VARIANT_LABELS.get(metric)
    return f"{system}, {variant}" if variant else system


def _short(value: float) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _title(data: dict[str, Any]) -> str:
    cores = data.get("cores") or "?"
    head = (
        f"h5record benchmark ({data['mode']} run, python -m benchmarks.run"
        f"{' --quick' if data['mode'] == 'quick' else ''}): rows/s, log scale; "
        f"one run on a {cores}-core machine, medians of repeats, warm page cache"
    )
    lines = [head]
    for name, info in data["workloads"].items():
        lines.append(f"{name}: {info['rows']:,} rows, {info['raw_MB']:,.0f} MB, {info['source']}")
    return "\n".join(lines)


def draw(data: dict[str, Any], png: str | Path, dpi: int = 100) -> Path:
    """Draw the core table of ``data`` to ``png``.

    Raises
    ------
    ImportError
        matplotlib is not installed.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    workloads = list(data["workloads"])
    series = _series(data)
    colors = _colors(series)

    fig = Figure(figsize=(13, 8.2))
    # Fixed margins: a constrained layout doubles the drawing time.
    fig.subplots_adjust(left=0.05, right=0.99, top=0.87, bottom=0.04, hspace=0.22, wspace=0.18)
    axes = fig.subplots(2, 3).ravel()
    for ax, (title, metrics) in zip(axes, PANELS, strict=False):
        ax.set_title(title, fontsize=11)
        # (series, workload) -> rows/s, for the bars of this panel only
        values = {
            (_label(row["system"], metric), row["workload"]): float(row[metric])
            for row in data["rows"]
            for metric in metrics
            if row.get(metric)
        }
        if not values:
            ax.axis("off")
            continue
        shown = [s for s in series if any(key[0] == s for key in values)]
        width = 0.8 / max(1, len(shown))
        for k, label in enumerate(shown):
            bars = [
                (g - 0.4 + width * (k + 0.5), values[label, workload])
                for g, workload in enumerate(workloads)
                if (label, workload) in values
            ]
            xs, ys = [x for x, _ in bars], [y for _, y in bars]
            ax.bar(xs, ys, width * 0.92, color=colors[label])
            for x, y in bars:
                ax.text(x, y * 1.08, _short(y), ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_yscale("log")
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_xlim(-0.5, len(workloads) - 0.5)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 4)  # room for the value labels above the bars
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.set_axisbelow(True)
    legend = axes[len(PANELS)] if len(PANELS) < len(axes) else None
    if legend is not None:
        legend.axis("off")
        handles = [Patch(color=colors[s]) for s in series]
        legend.legend(handles, series, loc="center", fontsize=10, title="system")
    fig.suptitle(_title(data), fontsize=9, ha="left", va="top", x=0.01, y=0.995)
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=dpi, metadata={"Software": None}, pil_kwargs={"optimize": True})
    return Path(png)


def try_draw(data: dict[str, Any], png: str | Path) -> Path | None:
    """:func:`draw`, or ``None`` with a one-line message when matplotlib is missing."""
    try:
        return draw(data, png)
    except ImportError:
        print(MISSING, file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print("usage: python -m benchmarks.chart RESULTS.json OUT.png", file=sys.stderr)
        return 2
    png = try_draw(load_results(args[0]), args[1])
    if png is None:
        return 1
    print(f"chart: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
