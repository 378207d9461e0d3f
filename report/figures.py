"""The report's plots, drawn with matplotlib and returned as SVG data URIs (the page needs no other file).

Histograms are drawn as one filled step outline each (``stairs``) rather than a rectangle per bin,
which keeps each SVG near 10 KB and quick to draw. Dates are left out of the SVG metadata and
element ids are salted with a fixed string, so the same data always gives the same bytes.
"""
from __future__ import annotations

import base64
import io
from typing import List, Optional, Sequence, Tuple

import numpy as np

from report.data import FunnelStep

STYLE = {
    "svg.fonttype": "none",  # text stays text: smaller files, the page's fonts
    "svg.hashsalt": "speechmill-report",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
KEPT = "#3b75af"
REJECTED = "#e0823d"
SIZE = (4.0, 2.5)


def _figure(size=SIZE, left=0.16):
    """A figure with fixed margins (a layout engine would double the drawing time)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=size)
    fig.subplots_adjust(left=left, right=0.97, bottom=0.19, top=0.9)
    return fig


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style():
    import matplotlib
    return matplotlib.rc_context(STYLE)


def histogram(series: Sequence[Tuple[str, np.ndarray, str]], title: str, xlabel: str, bins: int = 40,
              log_x: bool = False) -> Optional[str]:
    """Overlaid histograms of ``(label, values, colour)`` on common bins; None when no value is finite."""
    finite = [(label, v[np.isfinite(v)], colour) for label, v, colour in series]
    values = np.concatenate([v for _, v, _ in finite]) if finite else np.zeros(0)
    if log_x:
        values = values[values > 0]
    if not values.size:
        return None
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        lo, hi = (lo * 0.9, hi * 1.1) if log_x else (lo - 0.5, hi + 0.5)
    edges = np.geomspace(lo, hi, bins + 1) if log_x else np.linspace(lo, hi, bins + 1)
    with _style():
        fig = _figure()
        ax = fig.subplots()
        for label, v, colour in finite:
            if not v.size:
                continue
            counts, _ = np.histogram(v, bins=edges)
            ax.stairs(counts, edges, fill=True, alpha=0.55, color=colour, label=f"{label} ({v.size:,})")
        if log_x:
            ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("clips")
        ax.legend(frameon=False, loc="best")
        return _uri(fig)


def count_histogram(values: np.ndarray, title: str, xlabel: str, ylabel: str, bins: int = 40) -> Optional[str]:
    """A histogram of whole numbers: one bar per value when they are few, log-spaced bins otherwise."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    hi = int(v.max())
    log_x = hi > bins
    edges = np.unique(np.round(np.geomspace(1, hi + 1, bins + 1))) - 0.5 if log_x else np.arange(0.5, hi + 1.5)
    counts, _ = np.histogram(v, bins=edges)
    with _style():
        fig = _figure()
        ax = fig.subplots()
        ax.stairs(counts, edges, fill=True, alpha=0.8, color=KEPT)
        if log_x:
            ax.set_xscale("log")
        else:
            ax.set_xticks(range(1, hi + 1) if hi <= 12 else np.linspace(1, hi, 7).round().astype(int))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        return _uri(fig)


def funnel_chart(steps: List[FunnelStep]) -> Optional[str]:
    """Hours left after each step, top to bottom."""
    shown = [s for s in steps if s.hours is not None]
    if not shown:
        return None
    labels = [s.label for s in shown]
    values = [max(0.0, s.hours) for s in shown]
    with _style():
        fig = _figure((6.4, 0.3 * len(shown) + 0.9), left=0.3)
        ax = fig.subplots()
        y = np.arange(len(shown))
        colours = [KEPT if s.label in ("kept", "transcribed", "decoded") else "#8fb3d9" for s in shown]
        ax.barh(y, values, color=colours)
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlabel("hours")
        ax.set_title("hours left after each step")
        top = max(values) or 1.0
        for yi, v in zip(y, values):
            ax.text(v + top * 0.01, yi, f"{v:.3g} h", va="center", fontsize=7)
        ax.set_xlim(0, top * 1.15)
        return _uri(fig)
