"""`codetune report RUN_DIR`: write `RUN_DIR/report/` (PNG charts + report.html) from the run's artifacts.

Sections come from builders listed in `BUILDERS` as "module:function"; each is called as
`function(run_dir, report_dir) -> list[Section]`, may write images into `report_dir`, and returns
nothing when its artifacts are absent. A flow adds its part of the report by adding its builder here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.report.html import Section, render_page

BUILDERS = [
    "codetune.report.training:sections",
]


@dataclass
class ReportResult:
    report_dir: Path
    html: Path
    images: list[Path]

    def summary(self) -> str:
        return f"wrote {self.html} with {len(self.images)} chart(s)"


def load_builder(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def run(run_dir: Path, builders: list[str] | None = None) -> ReportResult:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CodetuneError(f"no run directory at {run_dir}")
    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    for spec in builders or BUILDERS:
        sections.extend(load_builder(spec)(run_dir, out_dir))
    if not sections:
        raise CodetuneError(
            f"{run_dir} holds nothing to report on (no config.yaml, metrics.jsonl or results)"
        )
    html_path = out_dir / "report.html"
    html_path.write_text(render_page(f"codetune report: {run_dir.name}", sections), encoding="utf-8")
    images = [out_dir / name for s in sections for name in s.images]
    return ReportResult(report_dir=out_dir, html=html_path, images=images)
