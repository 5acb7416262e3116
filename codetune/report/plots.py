"""Line charts as PNG with matplotlib's Agg backend (no display needed). Flows call `line_plot` with
their own series; the training charts are built in `training.py`, evaluation adds its own."""

from __future__ import annotations

import math
from pathlib import Path

Series = tuple[list[float], list[float]]


def finite_points(xs: list, ys: list) -> Series:
    """Drop points whose y is missing or not finite (a diverged step must not blank the chart)."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def wide_positive_range(values: list[float], ratio: float = 10.0) -> bool:
    """A log axis only helps when the values are positive and span at least `ratio` (a loss from 10 to 1);
    on a narrow range its ticks read 7x10^0."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= ratio


def line_plot(
    series: dict[str, Series], title: str, xlabel: str, ylabel: str, out: Path, logy: bool = False
) -> Path | None:
    """One chart with a line per series; None (and no file) when there is nothing to draw."""
    cleaned = {label: finite_points(*xy) for label, xy in series.items()}
    cleaned = {label: xy for label, xy in cleaned.items() if xy[0]}
    if not cleaned:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        for label, (xs, ys) in cleaned.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy and wide_positive_range([y for _, ys in cleaned.values() for y in ys]):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if len(cleaned) > 1:
            ax.legend()
        fig.tight_layout()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
