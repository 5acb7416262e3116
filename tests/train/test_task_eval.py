"""train.eval_tasks: task metrics land in metrics.jsonl at each evaluation without changing training."""

from codetune.report.training import read_metrics
from codetune.train.run import run


def test_eval_tasks_at_each_checkpoint_leave_training_unchanged(make_cfg):
    common = ("method.kind=lora", "method.dropout=0.3", "train.max_steps=4", "train.save_steps=2",
              "eval.max_new_tokens=8", "eval.temperature=0.8")
    plain = run(make_cfg(*common, run_name="plain"))
    with_tasks = run(make_cfg(*common, "train.eval_tasks=[humaneval]", "train.eval_limit=2", run_name="tasks"))

    rows = read_metrics(with_tasks.run_dir / "metrics.jsonl")
    evaluated = [r for r in rows if "eval/humaneval/pass@1" in r]
    assert [r["step"] for r in evaluated] == [2, 4]
    assert all(0.0 <= r["eval/humaneval/pass@1"] <= 1.0 for r in evaluated)
    assert (with_tasks.run_dir / "eval" / "during-training" / "step-2" / "samples.jsonl").is_file()

    # Sampling during evaluation must not consume the RNG stream LoRA dropout uses.
    baseline = read_metrics(plain.run_dir / "metrics.jsonl")
    assert [r["loss"] for r in rows] == [r["loss"] for r in baseline]
