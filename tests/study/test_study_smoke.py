"""Every recipe runs end to end in smoke mode (tiny model of the same architecture, locally-made data)
through every stage, produces what a user looks at, and a second run resumes instead of redoing work."""

import json

import pytest

from codetune.study.recipes import list_recipes, load_recipe
from codetune.study.run import run


@pytest.fixture(autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_smoke_end_to_end(name, tmp_path):
    recipe = load_recipe(name)
    result = run(name, smoke=True, output_dir=tmp_path)
    for run_name in recipe.ordered_runs():
        run_dir = tmp_path / run_name
        for artifact in ("config.yaml", "data/prepare_report.json", "plan.json", "metrics.jsonl",
                         "report/report.html", "report/train_loss.png", "eval/base/results.json"):
            assert (run_dir / artifact).exists(), f"{run_name}: {artifact} missing"
        final = run_dir / "final"
        assert (final / "config.json").is_file() or (final / "adapter_config.json").is_file()
        evaluated = {p.parent.name for p in (run_dir / "eval").glob("*/results.json")}
        assert len(evaluated) >= 2  # the base model and at least one fine-tuned checkpoint
        results = json.loads(sorted((run_dir / "eval").glob("*/results.json"))[-1].read_text())
        assert set(results["tasks"]) == set(recipe.config["eval"]["tasks"])
        if "accuracy" in results["tasks"]:  # the GPT-2 system's held-out test reports its pass mark
            metrics = results["tasks"]["accuracy"]["metrics"]
            assert metrics["pass_mark"] == 0.8 and isinstance(metrics["pass_mark_met"], bool)
    assert result.report.name == "study.html" and result.report.is_file()
    summary = json.loads((tmp_path / "report" / "study.json").read_text())
    assert all(r["trainable parameters"] and r["steps"] for r in summary["runs"])
    if len(recipe.runs) > 1:
        compare = (tmp_path / "report" / "compare.html").read_text()
        chained = [n for n, spec in recipe.runs.items() if spec.init_from]
        if chained:  # a later stage is compared with the model it started from, not the first run's base
            assert f"{recipe.runs[chained[-1]].init_from} (start)" in compare

    stages_before = json.loads((tmp_path / "study.json").read_text())["stage_seconds"]
    run(name, smoke=True, output_dir=tmp_path)  # resumes: nothing is trained or prepared again
    stages_after = json.loads((tmp_path / "study.json").read_text())["stage_seconds"]
    for run_name in recipe.ordered_runs():
        for stage in ("prepare", "train"):
            assert stages_after[run_name][stage] == stages_before[run_name][stage]

