"""`<study>/report/study.html`: the runs of a study side by side — method, trainable parameters, peak
memory, training wall time, final eval loss, and each task's headline metric for the base model and the
final model — above the comparison charts (`compare_*.png`, from `codetune.report.compare`).
"""

from __future__ import annotations

import json
from pathlib import Path

from codetune.report.html import Section, paragraph, render_page, table


def trainable_parameters(final_dir: Path) -> int | None:
    """Parameters in the saved weights: the adapter's for LoRA/QLoRA, the whole model's for full fine-tuning."""
    from safetensors import safe_open

    for name in ("adapter_model.safetensors", "model.safetensors"):
        path = final_dir / name
        if path.is_file():
            total = 0
            with safe_open(str(path), framework="np") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                    count = 1
                    for dim in fh.get_slice(key).get_shape():
                        count *= dim
                    total += count
            return total
    return None


def run_row(run_dir: Path, stage_seconds: dict) -> dict:
    import yaml

    rows = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    peaks = [r["peak_memory_mb"] for r in rows if r.get("peak_memory_mb") is not None]
    evals = [r["eval_loss"] for r in rows if r.get("eval_loss") is not None]
    return {
        "run": run_dir.name,
        "model": cfg.get("model", {}).get("name_or_path"),
        "method": cfg.get("method", {}).get("kind"),
        "trainable parameters": trainable_parameters(run_dir / "final"),
        "peak memory MB": max(peaks) if peaks else None,
        "train wall s": stage_seconds.get("train"),
        "steps": rows[-1]["step"] if rows else None,
        "final eval loss": evals[-1] if evals else None,
    }


def write_study_report(study_dir: Path, runs: list[str], stage_seconds: dict, headlines: dict[str, dict],
                       compare_html: Path | None) -> Path:
    out = study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_row(study_dir / name, stage_seconds.get(name, {})) for name in runs if (study_dir / name).is_dir()]
    sections = []
    if rows:
        header = tuple(rows[0])
        note = paragraph("Peak memory is CUDA's peak allocation on a GPU; on a CPU it is the process's peak "
                         "resident memory, which includes earlier runs of the same study process.", muted=True)
        sections.append(Section("Runs", table([tuple("" if v is None else v for v in r.values()) for r in rows],
                                              header) + note, order=10))
    metric_rows = [(name, key, value) for name, head in headlines.items() for key, value in head.items()]
    if metric_rows:
        sections.append(Section("Base model -> final model", table(metric_rows, ("run", "metric", "value")),
                                order=20))
    if compare_html is not None:
        images = sorted(p.name for p in out.glob("compare_*.png"))
        sections.append(Section("Comparison", paragraph(f"Details: {compare_html.name}"), images=images, order=30))
    else:
        sections.append(Section("Comparison", paragraph("Fewer than two evaluated models: nothing to compare yet.",
                                                        muted=True), order=30))
    path = out / "study.html"
    path.write_text(render_page(f"Study {study_dir.name}", sections), encoding="utf-8")
    (out / "study.json").write_text(json.dumps({"runs": rows, "headlines": headlines}, indent=2), encoding="utf-8")
    return path
