"""Every refusal happens before any work: one line, the right error class, and nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from codetune.errors import ConfigError, RefusedError


def _untouched(cfg):
    assert not (cfg.run_dir / "config.yaml").exists()
    assert not (cfg.run_dir / "checkpoints").exists()


def test_seq_len_beyond_model_positions(make_cfg):
    from codetune.train.run import run

    cfg = make_cfg("data.seq_len=4096")
    with pytest.raises(RefusedError, match=r"data.seq_len=4096 is beyond the 1024 positions"):
        run(cfg)
    _untouched(cfg)


@pytest.mark.parametrize(
    "override,what",
    [
        ("method.kind=qlora", "method.kind=qlora"),
        ("train.optimizer=adamw_8bit", "train.optimizer=adamw_8bit"),
    ],
)
def test_bitsandbytes_features_without_bitsandbytes(make_cfg, monkeypatch, override, what):
    import importlib.util

    from codetune.train.run import run

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    cfg = make_cfg(override)
    with pytest.raises(RefusedError, match=f"{what} needs bitsandbytes"):
        run(cfg)
    _untouched(cfg)


def test_missing_tracker_package(make_cfg, monkeypatch):
    import importlib.util

    from codetune.train.run import run

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    cfg = make_cfg("train.report_to=[wandb]")
    with pytest.raises(RefusedError, match="report_to: wandb is not installed"):
        run(cfg)
    _untouched(cfg)


def test_fp16_without_gpu(make_cfg):
    import torch

    from codetune.train.run import run

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    cfg = make_cfg("model.dtype=float16")
    with pytest.raises(ConfigError, match="float16 training needs a GPU"):
        run(cfg)


def test_dataset_prepared_with_another_tokenizer(make_cfg):
    from codetune.train.run import run

    cfg = make_cfg()
    report_path = cfg.run_dir / "data" / "prepare_report.json"
    report = json.loads(report_path.read_text())
    report["tokenizer"]["fingerprint"] = "0123456789abcdef"
    report_path.write_text(json.dumps(report))
    with pytest.raises(RefusedError, match="prepared with another tokenizer"):
        run(cfg)
    _untouched(cfg)


def test_dataset_packed_at_another_seq_len(make_cfg):
    from codetune.train.run import run

    cfg = make_cfg()
    report_path = cfg.run_dir / "data" / "prepare_report.json"
    report = json.loads(report_path.read_text())
    report["seq_len"] = 128
    report_path.write_text(json.dumps(report))
    with pytest.raises(RefusedError, match="packed at seq_len 128 but data.seq_len is 64"):
        run(cfg)


def test_output_dir_of_another_run_then_force(make_cfg):
    from codetune.config import to_yaml
    from codetune.train.run import run

    other = make_cfg("train.max_steps=2", "name=someone-elses-run")
    (other.run_dir / "config.yaml").write_text(to_yaml(other))
    cfg = make_cfg("train.max_steps=2")
    with pytest.raises(
        RefusedError, match=r"holds a different run's config.yaml \(first difference: `name`\)"
    ):
        run(cfg)
    assert yaml.safe_load((cfg.run_dir / "config.yaml").read_text())["name"] == "someone-elses-run"
    run(cfg, force=True)
    assert yaml.safe_load((cfg.run_dir / "config.yaml").read_text())["name"] == "run"


def test_same_run_with_checkpoints_needs_resume_or_force(make_cfg):
    from codetune.train.run import run

    cfg = make_cfg("train.max_steps=3", "train.eval_steps=100")
    run(cfg)
    with pytest.raises(RefusedError, match="already holds a finished run"):
        run(cfg)
    shutil.rmtree(cfg.run_dir / "final")
    with pytest.raises(RefusedError, match="pass --resume auto to continue it or --force"):
        run(cfg)
    # other hyperparameters on a run that has trained are another run
    with pytest.raises(RefusedError, match="first difference: `train.learning_rate`"):
        run(make_cfg("train.max_steps=3", "train.eval_steps=100", "train.learning_rate=1e-4"), resume="auto")
    assert run(cfg, resume="auto").steps == 3  # same config: resume is fine


def test_resume_from_an_incomplete_checkpoint_path(make_cfg):
    from codetune.train.run import run

    cfg = make_cfg()
    bogus = cfg.run_dir / "checkpoints" / "step-3"
    bogus.mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        run(cfg, resume=str(bogus))


def test_cli_prints_one_line_and_exit_code(make_cfg, tmp_path):
    from typer.testing import CliRunner

    from codetune.cli import app

    cfg = make_cfg("data.seq_len=4096")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == RefusedError.exit_code
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "beyond the 1024 positions" in lines[0]
