"""`codetune export`: merging a LoRA adapter gives a plain transformers model with the same outputs;
copying works for full models; pushing to the Hub offline fails with one clear line."""

from __future__ import annotations

import pytest

from tests.train.conftest import build_cfg


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir, prepared_data):
    from codetune.train.run import run

    cfg = build_cfg(
        tmp_path_factory.mktemp("export") / "lora",
        tiny_model_dir,
        prepared_data,
        "method.kind=lora",
        "method.r=4",
        "train.max_steps=2",
        "train.learning_rate=1e-2",
        "train.eval_steps=100",
    )
    run(cfg)
    return cfg.run_dir


def test_merge_gives_plain_model_with_adapter_outputs(lora_run, tmp_path):
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from codetune.train.export import export

    result = export(lora_run, out=tmp_path / "merged", merge=True)
    assert result.merged and "merged" in result.summary()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    adapter = AutoPeftModelForCausalLM.from_pretrained(str(lora_run / "final")).eval()
    ids = torch.arange(2, 34).reshape(1, 32)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapter(ids).logits, atol=1e-4, rtol=1e-4)
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "library_name: transformers" in card and "merged into the base weights" in card
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_export_refusals_and_copy(lora_run, tmp_path, make_cfg):
    from codetune.errors import CodetuneError, ConfigError
    from codetune.train.export import export

    with pytest.raises(ConfigError, match="nothing to do"):
        export(lora_run)
    with pytest.raises(CodetuneError, match="no model or adapter under"):
        export(tmp_path, out=tmp_path / "x")
    copied = export(lora_run, out=tmp_path / "copy")
    assert (copied.out / "adapter_config.json").is_file() and not copied.merged
    full = tmp_path / "full"
    (full / "final").mkdir(parents=True)
    (full / "final" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds a full model, not a LoRA adapter"):
        export(full, merge=True)


def test_push_to_hub_offline_is_one_clear_line(lora_run, monkeypatch):
    from typer.testing import CliRunner

    from codetune.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    result = CliRunner().invoke(app, ["export", str(lora_run), "--push-to-hub", "someone/tiny-lora"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: cannot push to someone/tiny-lora: HF_HUB_OFFLINE is set; "
        "unset it on a machine with network access"
    ]


def test_train_push_to_hub_failure_comes_after_the_final_model(make_cfg, monkeypatch):
    from codetune.errors import CodetuneError
    from codetune.train.run import run

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    cfg = make_cfg("train.max_steps=1", "train.eval_steps=100", "train.push_to_hub=someone/tiny")
    with pytest.raises(CodetuneError, match="cannot push to someone/tiny: HF_HUB_OFFLINE is set"):
        run(cfg)
    assert (cfg.run_dir / "final" / "README.md").is_file()
    assert (cfg.run_dir / "report" / "report.html").is_file()
