"""`codetune report RUN_DIR`: charts and report.html from a run's artifacts alone (no model, no torch),
for a finished run, a run still in progress, and nothing at all."""

from __future__ import annotations

import json
import math

import pytest
import yaml

PNG = b"\x89PNG\r\n\x1a\n"


def _write_run(run_dir, steps=12, eval_every=4, name="demo"):
    run_dir.mkdir(parents=True)
    rows = []
    for step in range(1, steps + 1):
        row = {
            "step": step,
            "epoch": step / 10,
            "loss": 5.0 / step,
            "lr": 1e-3 * (1 - step / steps),
            "grad_norm": 1.0,
            "tokens_seen": 128 * step,
            "tokens_per_s": 1000.0 + step,
            "peak_memory_mb": 500.0 + step,
        }
        if eval_every and step % eval_every == 0:
            row.update(eval_loss=6.0 / step, perplexity=math.exp(6.0 / step))
        rows.append(row)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"name": name, "train": {"learning_rate": 1e-3}}))
    return rows


def test_finished_run_gets_four_charts_and_html(tmp_path):
    from codetune.report.run import run

    _write_run(tmp_path / "run", name="<script>alert(1)</script>")
    result = run(tmp_path / "run")
    names = sorted(p.name for p in result.images)
    assert names == ["eval_loss.png", "learning_rate.png", "tokens_per_s.png", "train_loss.png"]
    for path in result.images:
        assert path.read_bytes()[:8] == PNG
    html = result.html.read_text()
    for name in names:
        assert f"src='{name}'" in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "best eval loss" in html and "0.5" in html  # 6 / 12
    assert "tokens seen" in html and "1536" in html
    assert "wrote" in result.summary() and "4 chart" in result.summary()


def test_run_in_progress_without_eval_and_with_a_torn_line(tmp_path):
    from codetune.report.run import run

    _write_run(tmp_path / "run", steps=3, eval_every=0)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "lo')  # killed mid-write
    result = run(tmp_path / "run")
    assert sorted(p.name for p in result.images) == [
        "learning_rate.png",
        "tokens_per_s.png",
        "train_loss.png",
    ]
    assert "last eval loss" not in result.html.read_text()


def test_config_only_and_empty_dirs(tmp_path):
    from codetune.errors import CodetuneError
    from codetune.report.run import run

    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "config.yaml").write_text("name: fresh\n")
    assert "no metrics logged yet" in run(tmp_path / "fresh").html.read_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CodetuneError, match="nothing to report"):
        run(tmp_path / "empty")
    with pytest.raises(CodetuneError, match="no run directory"):
        run(tmp_path / "missing")


def test_sections_from_another_builder_are_included(tmp_path, monkeypatch):
    """The evaluation flow adds its own section by listing a builder; order decides placement."""
    import sys
    import types

    from codetune.report.html import Section, table
    from codetune.report.run import BUILDERS, run

    module = types.ModuleType("fake_eval_report")
    module.sections = lambda run_dir, out: [
        Section("pass@k", table([("humaneval", 0.25)], ("task", "pass@1")), order=15)
    ]
    monkeypatch.setitem(sys.modules, "fake_eval_report", module)
    _write_run(tmp_path / "run", steps=2, eval_every=0)
    html = run(tmp_path / "run", builders=[*BUILDERS, "fake_eval_report:sections"]).html.read_text()
    assert html.index("Final metrics") < html.index("pass@k") < html.index("Training curves")


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from codetune.cli import app

    _write_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "report" / "report.html").is_file()


def test_line_plot_skips_non_finite_points_and_empty_series(tmp_path):
    from codetune.report.plots import finite_points, line_plot, wide_positive_range

    assert wide_positive_range([10.0, 1.0]) and not wide_positive_range([7.3, 6.8])
    assert not wide_positive_range([10.0, 0.0]) and not wide_positive_range([])

    assert finite_points([1, 2, 3, 4], [1.0, None, math.nan, 2.0]) == ([1, 4], [1.0, 2.0])
    assert line_plot({"x": ([1], [math.inf])}, "t", "x", "y", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
