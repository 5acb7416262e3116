"""Comparison report across models or checkpoints: `compare.html` plus PNGs, from eval results.json files.

What it shows, in order: a tasks x models table of headline metrics; the change of each model against the
base (the first model) per language, where a drop in pass@1 or a rise in bits per byte is forgetting;
failure modes (statuses of every executed sample) stacked per language; and held-out bits per byte against
pass@1 across checkpoints with Pearson's r, which says whether perplexity tracks functional correctness.

Used by `codetune eval RUN_DIR` (writes `RUN_DIR/eval/compare.html`); `write_comparison(results, out_dir)`
works on any list of (name, results.json) pairs. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STATUS_ORDER = ("passed", "failed", "runtime_error", "compile_error", "timeout", "memory_exceeded",
                "sandbox_violation", "harness_error")
STATUS_COLORS = ("#2e7d32", "#c62828", "#ef6c00", "#6a1b9a", "#1565c0", "#00838f", "#4e342e", "#757575")
# Perplexity takes language names from prepare's extension table, execution tasks from the language table.
LANGUAGE_ALIASES = {"javascript": "js", "c++": "cpp", "py": "python", "rs": "rust"}


def canonical_language(name: str) -> str:
    return LANGUAGE_ALIASES.get(name.lower(), name.lower())


def task_language(task: str, entry: dict) -> str:
    """The language a task measures: from its protocol, its `family:lang` name, or the task itself."""
    lang = entry.get("protocol", {}).get("language")
    if lang:
        return canonical_language(lang)
    task = task.partition("@t")[0]  # a temperature-sweep entry measures the same language
    if ":" in task:
        return canonical_language(task.split(":", 1)[1])
    return "python" if task == "humaneval" else task


def _pass1(metrics: dict) -> float | None:
    value = metrics.get("pass@1")
    return value.get("value") if isinstance(value, dict) else value


def headline(task: str, entry: dict) -> list[tuple[str, float | None]]:
    """(label, value) pairs that summarize one task's result for the table."""
    m = entry.get("metrics", {})
    if task == "perplexity":
        rows = [("perplexity bits/byte", m.get("bits_per_byte")), ("perplexity", m.get("perplexity"))]
        for lang, sub in sorted(m.get("by_language", {}).items()):
            rows.append((f"perplexity bits/byte [{canonical_language(lang)}]", sub.get("bits_per_byte")))
        return rows
    if task == "sql":
        return [("sql execution accuracy", m.get("execution_accuracy")), ("sql exact match", m.get("exact_match"))]
    if task == "sparql":
        return [("sparql answer F1", m.get("answer_f1")), ("sparql exact match", m.get("exact_match")),
                ("sparql BLEU", m.get("bleu"))]
    if task == "accuracy":
        return [("held-out accuracy", m.get("accuracy"))]
    rows = [(f"{task} pass@1", _pass1(m))]
    rows += [(f"{task} {k}", v.get("value")) for k, v in sorted(m.items())
             if k.startswith("pass@") and k != "pass@1" and isinstance(v, dict)]
    return rows


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than 3 points or no variance (a coefficient would mean nothing)."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    syy = sum((y - my) ** 2 for _, y in pairs)
    if sxx == 0 or syy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in pairs) / math.sqrt(sxx * syy)


@dataclass
class LanguageScores:
    """Per model and language: mean pass@1 over the language's execution tasks, and bits per byte."""

    pass1: dict[str, dict[str, float]]  # model -> language -> value
    bits_per_byte: dict[str, dict[str, float]]
    statuses: dict[str, dict[str, dict[str, int]]]  # model -> language -> status -> count


def language_scores(results: Sequence[tuple[str, dict]]) -> LanguageScores:
    pass1: dict[str, dict[str, float]] = {}
    bpb: dict[str, dict[str, float]] = {}
    statuses: dict[str, dict[str, dict[str, int]]] = {}
    for name, result in results:
        sums: dict[str, list[float]] = {}
        for task, entry in result.get("tasks", {}).items():
            m = entry.get("metrics", {})
            if task == "perplexity":
                for lang, sub in m.get("by_language", {}).items():
                    if sub.get("bits_per_byte") is not None:
                        bpb.setdefault(name, {})[canonical_language(lang)] = sub["bits_per_byte"]
                continue
            lang = task_language(task, entry)
            if task not in ("sql", "sparql") and _pass1(m) is not None:
                sums.setdefault(lang, []).append(_pass1(m))
            for status, count in (m.get("statuses") or entry.get("status_counts") or {}).items():
                bucket = statuses.setdefault(name, {}).setdefault(lang, {})
                bucket[status] = bucket.get(status, 0) + count
        pass1[name] = {lang: sum(v) / len(v) for lang, v in sums.items()}
    return LanguageScores(pass1, bpb, statuses)


def deltas_vs_base(scores: dict[str, dict[str, float]], base: str) -> dict[str, dict[str, float]]:
    """model -> language -> (value - base value), for languages the base has."""
    reference = scores.get(base, {})
    return {name: {lang: v - reference[lang] for lang, v in per_lang.items() if lang in reference}
            for name, per_lang in scores.items() if name != base}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _plot_deltas(scores: LanguageScores, names: list[str], path: Path) -> bool:
    import matplotlib.pyplot as plt

    d_pass = deltas_vs_base(scores.pass1, names[0])
    d_bpb = deltas_vs_base(scores.bits_per_byte, names[0])
    if not any(d_pass.values()) and not any(d_bpb.values()):
        return False
    panels = [(d, title) for d, title in ((d_pass, "Δ pass@1 vs base (higher is better)"),
                                          (d_bpb, "Δ bits/byte vs base (lower is better)")) if any(d.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (deltas, title) in zip(axes[0], panels, strict=True):
        langs = sorted({lang for per in deltas.values() for lang in per})
        models = [n for n in names[1:] if deltas.get(n)]
        width = 0.8 / max(len(models), 1)
        for i, model in enumerate(models):
            ax.bar([j + i * width for j in range(len(langs))], [deltas[model].get(lang, 0.0) for lang in langs],
                   width, label=model)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(langs))], langs)
        ax.set_title(title)
        if models:
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_failures(scores: LanguageScores, names: list[str], path: Path) -> bool:
    import matplotlib.pyplot as plt

    shown = [n for n in names if scores.statuses.get(n)]
    if not shown:
        return False
    if len(shown) > 6:  # keep the figure readable: the base and the latest checkpoints
        shown = [shown[0], *shown[-5:]]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown) + 1.5, 4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], shown, strict=True):
        per_lang = scores.statuses[name]
        langs = sorted(per_lang)
        bottoms = [0.0] * len(langs)
        for status, color in zip(STATUS_ORDER, STATUS_COLORS, strict=True):
            fractions = [per_lang[lang].get(status, 0) / max(sum(per_lang[lang].values()), 1) for lang in langs]
            ax.bar(langs, fractions, bottom=bottoms, color=color, label=status)
            bottoms = [b + f for b, f in zip(bottoms, fractions, strict=True)]
        ax.set_title(name, fontsize="medium")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("fraction of samples")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def perplexity_vs_pass(scores: LanguageScores, names: list[str]) -> dict[str, dict]:
    """language -> {"points": [(model, bits/byte, pass@1)], "r": Pearson r or None} where both exist."""
    out = {}
    langs = sorted({lang for per in scores.pass1.values() for lang in per})
    for lang in langs:
        points = [(n, scores.bits_per_byte.get(n, {}).get(lang), scores.pass1.get(n, {}).get(lang)) for n in names]
        points = [p for p in points if p[1] is not None and p[2] is not None]
        if points:
            out[lang] = {"points": points, "r": pearson([p[1] for p in points], [p[2] for p in points])}
    return out


def _plot_correlation(corr: dict[str, dict], path: Path) -> bool:
    import matplotlib.pyplot as plt

    if not corr:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for lang, data in corr.items():
        xs, ys = [p[1] for p in data["points"]], [p[2] for p in data["points"]]
        r = "n/a" if data["r"] is None else f"{data['r']:+.2f}"
        ax.plot(xs, ys, marker="o", label=f"{lang} (r = {r})")
        for name, x, y in data["points"]:
            ax.annotate(name, (x, y), fontsize="x-small", textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("held-out bits per byte")
    ax.set_ylabel("pass@1")
    ax.set_title("Perplexity vs pass@1 across checkpoints")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _delta_cell(value: float, higher_is_better: bool) -> str:
    good = value > 0 if higher_is_better else value < 0
    color = "#2e7d32" if good else ("#c62828" if value != 0 else "#333")
    return f'<span style="color:{color}">{value:+.3f}</span>'


def write_comparison(results: Sequence[tuple[str, dict]], out_dir: str | Path) -> Path:
    """Write compare.html and its PNGs under `out_dir`; the first model is the base of every delta."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [name for name, _ in results]
    labels: list[str] = []
    values: dict[tuple[str, str], float | None] = {}
    for name, result in results:
        for task, entry in result.get("tasks", {}).items():
            for label, value in headline(task, entry):
                if label not in labels:
                    labels.append(label)
                values[(label, name)] = value
    sections = ["<h2>Tasks × models</h2>",
                _table(["metric", *names], [[html.escape(lb), *(_fmt(values.get((lb, n))) for n in names)]
                                            for lb in labels])]
    scores = language_scores(results)
    delta_rows = []
    for kind, table, higher in (("pass@1", scores.pass1, True), ("bits/byte", scores.bits_per_byte, False)):
        for name, per_lang in deltas_vs_base(table, names[0]).items():
            for lang, delta in sorted(per_lang.items()):
                delta_rows.append([html.escape(name), html.escape(lang), kind, _delta_cell(delta, higher)])
    sections.append(f"<h2>Change vs {html.escape(names[0])} per language</h2>")
    sections.append(_table(["model", "language", "metric", "Δ"], delta_rows) if delta_rows
                    else "<p>No language is measured on both the base and another model.</p>")
    if _plot_deltas(scores, names, out_dir / "compare_deltas.png"):
        sections.append('<img src="compare_deltas.png" alt="change vs base per language">')
    sections.append("<h2>Failure modes per language</h2>")
    if _plot_failures(scores, names, out_dir / "compare_failures.png"):
        sections.append('<img src="compare_failures.png" alt="failure modes stacked per language">')
    else:
        sections.append("<p>No executed samples.</p>")
    corr = perplexity_vs_pass(scores, names)
    sections.append("<h2>Perplexity vs pass@1</h2>")
    if corr:
        rows = [[html.escape(lang), str(len(d["points"])), _fmt(d["r"], 2)] for lang, d in corr.items()]
        sections.append(_table(["language", "models", "Pearson r"], rows))
        if _plot_correlation(corr, out_dir / "compare_perplexity_vs_pass.png"):
            sections.append('<img src="compare_perplexity_vs_pass.png" alt="perplexity vs pass@1">')
    else:
        sections.append("<p>Needs perplexity and an execution task in the same language.</p>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,"
             "th:first-child{text-align:left}img{max-width:100%;margin:1em 0}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>codetune comparison</title>"
            f"<style>{style}</style></head><body><h1>Evaluation comparison</h1>"
            f"<p>{len(names)} models; deltas are against <b>{html.escape(names[0])}</b>.</p>"
            + "\n".join(sections) + "</body></html>")
    path = out_dir / "compare.html"
    path.write_text(page, encoding="utf-8")
    return path


def load_results(paths: Sequence[str | Path]) -> list[tuple[str, dict]]:
    """(name, results.json) for result files or the directories holding them, named by their directory."""
    import json

    out = []
    for raw in paths:
        path = Path(raw)
        file = path / "results.json" if path.is_dir() else path
        result = json.loads(file.read_text(encoding="utf-8"))
        if "tasks" not in result and "task" in result:  # one task scored from --samples
            result = {"tasks": {result["task"]: result}}
        out.append((file.parent.name, result))
    return out
