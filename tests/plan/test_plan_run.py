"""`codetune plan` end to end: the users' two situations, tokens from a prepared report, auto micro-batch,
refusal text, GPU table, and the CLI writing plan.json."""

from __future__ import annotations

import json

import pytest

from codetune.config import load_config
from codetune.errors import ConfigError
from codetune.plan.gpus import GPUS, get_gpu
from codetune.plan.known_configs import KNOWN_CONFIGS
from codetune.plan.run import plan_for_config, run
from codetune.plan.shapes import shape_from_config
from codetune.plan.throughput import model_flops_per_token


def _cfg(tmp_path, **sections):
    base = {"name": "t", "output_dir": str(tmp_path / "run"), "model": {"name_or_path": "bigcode/starcoder2-3b"}}
    for key, value in sections.items():
        base[key] = value
    return load_config(None, base=base)


def test_starcoder2_3b_qlora_on_a_t4_at_512(tmp_path):
    cfg = _cfg(tmp_path, method={"kind": "qlora"}, data={"seq_len": 512},
               train={"micro_batch": 4, "grad_accum": 4}, plan={"gpu": "t4", "total_tokens": 10_000_000})
    plan = plan_for_config(cfg)
    assert plan.compute_dtype == "float16"  # the T4 has no bf16
    assert plan.fits and not plan.gradient_checkpointing  # fits as configured, no recomputation needed
    assert 0 < plan.margin_gb < 15
    assert 8 < plan.peak_gb < 15
    assert plan.recommended_micro_batch * plan.recommended_grad_accum == 16
    assert 1 < plan.time.hours < 20  # 10M tokens of 3B QLoRA at 65 TFLOPS x 0.4 x 0.7


def test_starcoder2_3b_qlora_on_a_t4_at_1024(tmp_path):
    cfg = _cfg(tmp_path, method={"kind": "qlora"}, data={"seq_len": 1024},
               train={"micro_batch": 4, "grad_accum": 4}, plan={"gpu": "t4", "total_tokens": 10_000_000})
    plan = plan_for_config(cfg)
    assert plan.fits and plan.gradient_checkpointing  # auto turns checkpointing on to fit
    without = plan_for_config(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"gradient_checkpointing": False})}))
    assert not without.fits and without.peak_gb > 15
    assert without.rec.max_micro_batch in (1, 2)
    assert "train.micro_batch=" in without.suggestions[0]
    assert without.refusal().startswith("plan predicts out of memory on NVIDIA T4")


def test_starcoderbase_1b_on_100k_sparql_pairs_on_an_a100(tmp_path):
    # 100K NL->SPARQL pairs x ~100 tokens, packed into 1024-token rows, 3 epochs, full fine-tuning
    cfg = _cfg(tmp_path, model={"name_or_path": "bigcode/starcoderbase-1b"}, data={"seq_len": 1024},
               train={"micro_batch": 8, "grad_accum": 4, "epochs": 3},
               plan={"gpu": "a100-80gb", "total_tokens": 100_000 * 100})
    plan = plan_for_config(cfg)
    assert plan.fits
    assert plan.time.tokens == 30_000_000
    # 6 x 1.12B matmul params + 12 x 24 x 2048 x 1024 attention = 7.32e9 FLOPs/token x 3e7 tokens
    #   = 2.2e17 / (312e12 x 0.4) = 1,760 s
    assert plan.time.hours == pytest.approx(0.49, abs=0.02)
    assert 0.2 < plan.time.hours < 2


def test_tokens_from_the_prepared_report(tmp_path):
    cfg = _cfg(tmp_path, data={"seq_len": 512}, train={"epochs": 2}, plan={"gpu": "h100"})
    report = cfg.run_dir / "data" / "prepare_report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"seq_len": 512, "sequences": {"train": 1000, "valid": 10},
                                  "tokens_total": {"train": 400_000}}))
    plan = plan_for_config(cfg)
    assert plan.time.tokens == 2 * 1000 * 512
    assert "prepare_report.json" in plan.tokens_source


def test_max_steps_sets_the_token_count(tmp_path):
    cfg = _cfg(tmp_path, data={"seq_len": 256}, train={"max_steps": 100, "micro_batch": 2, "grad_accum": 8},
               plan={"gpu": "a10g", "num_gpus": 2})
    assert plan_for_config(cfg).time.tokens == 100 * 2 * 8 * 256 * 2


def test_auto_micro_batch_and_switches_when_nothing_fits(tmp_path):
    auto = plan_for_config(_cfg(tmp_path, method={"kind": "lora"}, data={"seq_len": 1024},
                                train={"micro_batch": "auto"}, plan={"gpu": "a100-80gb", "total_tokens": 1}))
    assert auto.fits and auto.recommended_micro_batch >= 2
    assert auto.setup.micro_batch == auto.recommended_micro_batch
    big = plan_for_config(_cfg(tmp_path, model={"name_or_path": "bigcode/starcoder2-15b"}, data={"seq_len": 2048},
                               train={"gradient_checkpointing": False}, plan={"gpu": "t4", "total_tokens": 1}))
    assert not big.fits and big.rec.max_micro_batch == 0
    switches = [s["switch"] for s in big.rec.switches]
    assert switches[:3] == ["gradient checkpointing", "8-bit AdamW", "LoRA"]
    peaks = [s["predicted_gib"] for s in big.rec.switches]
    assert peaks == sorted(peaks, reverse=True)  # each switch lowers the peak
    assert big.rec.switches[-1]["fits"]  # QLoRA (or shorter sequences) gets 15B onto a T4


def test_gpu_table_and_errors():
    assert set(GPUS) >= {"t4", "l4", "a10g", "rtx3090", "rtx4090", "a100-40gb", "a100-80gb", "h100", "h200"}
    assert not get_gpu("t4").bf16 and get_gpu("A100").name == "a100-80gb"
    assert get_gpu(None, memory_gib=48, tflops=150).memory_gib == 48
    with pytest.raises(ConfigError, match="unknown GPU"):
        get_gpu("tpu-v5")
    with pytest.raises(ConfigError, match="needs both"):
        get_gpu(None, memory_gib=48)


def test_model_flops_per_token_lora_is_two_thirds_of_the_base():
    shape = shape_from_config(KNOWN_CONFIGS["gpt2"])
    full = model_flops_per_token(shape, 1024, "full")
    lora = model_flops_per_token(shape, 1024, "lora", lora_params=0)
    attention = 12 * 12 * 768 * 1024
    assert full - attention == pytest.approx(1.5 * (lora - attention))


def test_cli_prints_tables_and_writes_plan_json(tmp_path):
    from typer.testing import CliRunner

    from codetune.cli import app

    config = tmp_path / "c.yaml"
    config.write_text(f"name: t\noutput_dir: {tmp_path / 'run'}\nmodel: {{name_or_path: bigcode/starcoder2-3b}}\n"
                      "method: {kind: qlora}\ndata: {seq_len: 512}\nplan: {total_tokens: 1000000}\n")
    result = CliRunner().invoke(app, ["plan", str(config), "--gpu", "t4"])
    assert result.exit_code == 0, result.output
    assert "Peak memory per GPU" in result.output and "FITS" in result.output and "GPU-hours" in result.output
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert saved["gpu"]["name"] == "t4" and saved["fits"] is True
    assert saved["memory_gib"]["weights"] == pytest.approx(1.949, abs=1e-3)
    bad = CliRunner().invoke(app, ["plan", str(config), "--gpu", "tpu"])
    assert bad.exit_code == 2 and "unknown GPU" in bad.output


def test_run_writes_plan_json(tmp_path):
    cfg = _cfg(tmp_path, plan={"gpu": "h200", "total_tokens": 1000})
    result = run(cfg)
    assert json.loads((cfg.run_dir / "plan.json").read_text())["total_gib"] == pytest.approx(
        result.peak_gb, abs=1e-3)
