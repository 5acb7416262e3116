"""Report sections for a training run: the three charts fine-tuners publish (train loss, eval loss,
learning rate) plus throughput, the final metrics and the resolved config. Reads only `metrics.jsonl`
and `config.yaml`, so it works on a finished run, a running one, or someone else's."""

from __future__ import annotations

import json
import math
from pathlib import Path

from codetune.report.html import Section, paragraph, pre, table
from codetune.report.plots import line_plot

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (the process was killed mid-write) is skipped."""
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def column(rows: list[dict], key: str) -> tuple[list, list]:
    picked = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in picked], [p[1] for p in picked]


def summary_rows(rows: list[dict]) -> list[tuple[str, object]]:
    """(name, value) pairs for the final-metrics table."""
    out: list[tuple[str, object]] = []
    if not rows:
        return out
    out.append(("steps", rows[-1]["step"]))
    if rows[-1].get("epoch") is not None:
        out.append(("epochs", round(rows[-1]["epoch"], 3)))
    _, losses = column(rows, "loss")
    if losses:
        out.append(("last train loss", losses[-1]))
    _, evals = column(rows, "eval_loss")
    if evals:
        out.append(("last eval loss", evals[-1]))
        out.append(("last eval perplexity", math.exp(min(evals[-1], 700))))
        out.append(("best eval loss", min(evals)))
    if rows[-1].get("tokens_seen") is not None:
        out.append(("tokens seen", rows[-1]["tokens_seen"]))
    _, speeds = column(rows, "tokens_per_s")
    if speeds:
        out.append(("median tokens/s", sorted(speeds)[len(speeds) // 2]))
    _, useful = column(rows, "useful_tokens_per_s")
    if useful:  # labelled tokens only (padding excluded); MFU against the device's measured matmul peak
        out.append(("median useful tokens/s", sorted(useful)[len(useful) // 2]))
    _, mfus = column(rows, "mfu")
    if mfus:
        out.append(("median MFU (%)", round(100 * sorted(mfus)[len(mfus) // 2], 2)))
    _, mem = column(rows, "peak_memory_mb")
    if mem:
        out.append(("peak memory (MB)", max(mem)))
    return out


def sections(run_dir: Path, out_dir: Path) -> list[Section]:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    rows = read_metrics(run_dir / METRICS_FILE)
    found: list[Section] = []
    config = run_dir / "config.yaml"
    if not rows and not config.is_file():
        return found
    if rows:
        charts = [
            ("train_loss.png", {"train loss": column(rows, "loss")}, "Training loss", "loss", True),
            ("eval_loss.png", {"eval loss": column(rows, "eval_loss")}, "Validation loss", "loss", True),
            ("learning_rate.png", {"learning rate": column(rows, "lr")}, "Learning rate", "lr", False),
            ("tokens_per_s.png", {"tokens/s": column(rows, "tokens_per_s"),
                                  "useful tokens/s": column(rows, "useful_tokens_per_s")},
             "Throughput", "tokens/s", False),
        ]
        images = [
            name
            for name, series, title, ylabel, logy in charts
            if line_plot(series, title, "step", ylabel, out_dir / name, logy=logy) is not None
        ]
        found.append(Section("Final metrics", table(summary_rows(rows), ("metric", "value")), order=10))
        found.append(Section("Training curves", "", images=images, order=20))
    else:
        found.append(Section("Training", paragraph("no metrics logged yet", muted=True), order=10))
    if config.is_file():
        found.append(Section("Config", pre(config.read_text(encoding="utf-8")), order=90))
    return found
