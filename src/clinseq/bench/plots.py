"""PNG figures of the suites, drawn with matplotlib when it is installed (``pip install clinseq[plot]``).

Every function returns the path it wrote, or None when matplotlib is missing (the suites then say so once
and go on: the JSON and the tables are the results, the figures a view of them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Bars", "Panel", "Series", "available", "color", "save_bars", "save_panels"]


def color(i: int) -> str:
    """The i-th colour of matplotlib's default cycle (one colour per model across panels)."""
    return f"C{i % 10}"


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Series:
    """One line: ``label``, x and y values (None where not measured), matplotlib line style."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    style: str = "-o"
    color: str | None = None


@dataclass
class Panel:
    """One axes: title, axis labels, lines, log scales, and optional reference slopes (e.g. 1 for
    "linear") drawn through the first point of the first series as dotted grey lines."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    logx: bool = True
    logy: bool = True
    reference_slopes: Sequence[float] = ()


def save_panels(path: str | Path, panels: Sequence[Panel], suptitle: str | None = None) -> Path | None:
    """Panels side by side in one PNG (150 dpi)."""
    if not available() or not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for s in panel.series:
            points = [(x, y) for x, y in zip(s.x, s.y, strict=True) if y is not None and y > 0]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, s.style, label=s.label, markersize=4, color=s.color)
        anchor = next(
            ((x, y) for s in panel.series for x, y in zip(s.x, s.y, strict=True) if y is not None and y > 0),
            None,
        )
        if anchor is not None and panel.series:
            xs = [x for s in panel.series for x in s.x]
            x0, y0 = anchor
            for slope in panel.reference_slopes:
                x1 = max(xs)
                ax.plot([x0, x1], [y0, y0 * (x1 / x0) ** slope], ":", color="grey", linewidth=1)
                ax.annotate(f"∝ n^{slope:g}", (x1, y0 * (x1 / x0) ** slope), fontsize=7, color="grey")
        if panel.logx:
            ax.set_xscale("log")
        if panel.logy:
            ax.set_yscale("log")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, which="both", alpha=0.3)
    labels = [[s.label for s in panel.series] for panel in panels]
    shared = all(ls == labels[0] for ls in labels) and any(labels[0])
    if shared:  # one legend below the panels rather than one over the data of each
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=7, frameon=False)
    else:
        for ax, panel in zip(axes[0], panels, strict=True):
            if any(s.label for s in panel.series):
                ax.legend(fontsize=7, loc="best", framealpha=0.6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    rows = -(-len(labels[0]) // 4) if shared else 0
    fig.tight_layout(rect=(0, min(0.04 * rows + 0.02, 0.4) if shared else 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


@dataclass
class Bars:
    """Horizontal bars: one per label, stacked segments (``segments[name][i]`` for label i)."""

    title: str
    xlabel: str
    labels: list[str]
    segments: dict[str, list[float | None]]
    logx: bool = False


def save_bars(path: str | Path, bars: Bars) -> Path | None:
    """One PNG of horizontal (stacked) bars."""
    if not available() or not bars.labels:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(bars.labels)))
    left = [0.0] * len(bars.labels)
    for name, values in bars.segments.items():
        widths = [0.0 if v is None or not math.isfinite(v) else v for v in values]
        ax.barh(bars.labels, widths, left=left, label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    if bars.logx:
        ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_title(bars.title, fontsize=10)
    ax.set_xlabel(bars.xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    if len(bars.segments) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
