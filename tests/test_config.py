import pytest
import yaml
from typer.testing import CliRunner

from codetune.cli import app
from codetune.config import load_config, write_resolved
from codetune.errors import ConfigError

ISSUE_EXAMPLE = """
name: java-lora
output_dir: {out}
model:
  name_or_path: bigcode/starcoder2-3b
data:
  sources:
    - path: /usr/lib/jvm/temurin-25-jdk-amd64/lib/src.zip
      languages: [java]
  seq_len: 1024
  fim_rate: 0.5
  valid_fraction: 0.02
method:
  kind: lora
  r: 16
train:
  micro_batch: 4
  grad_accum: 8
  learning_rate: 2.0e-4
  max_steps: 1000
  save_steps: 100
  logging_steps: 10
  seed: 0
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(ISSUE_EXAMPLE.format(out=tmp_path / "runs" / "java-lora"))
    return path


def test_issue_example_loads_with_defaults_for_later_sections(config_file):
    cfg = load_config(config_file)
    assert cfg.method.kind == "lora" and cfg.method.r == 16
    assert cfg.train.learning_rate == 2e-4 and cfg.train.micro_batch == 4
    assert cfg.data.sources[0].languages == ["java"]
    assert cfg.eval.tasks == ["perplexity"] and cfg.serve.port == 8000 and cfg.plan.num_gpus == 1


def test_overrides_parse_yaml_values_and_create_sections(config_file):
    cfg = load_config(config_file, ["train.learning_rate=1e-4", "train.micro_batch=auto", "method.kind=qlora",
                                    "eval.tasks=[humaneval, multipl-e:java]", "plan.gpu=t4"])
    assert cfg.train.learning_rate == 1e-4
    assert cfg.train.micro_batch == "auto"
    assert cfg.method.kind == "qlora"
    assert cfg.eval.tasks == ["humaneval", "multipl-e:java"]
    assert cfg.plan.gpu == "t4"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.learnin_rate=1e-4"], "unknown key `train.learnin_rate`"),
        (["method.kind=prefix"], "`method.kind`"),
        (["data.seq_len=long"], "`data.seq_len`"),
        (["data.fim_rate=1.5"], "`data.fim_rate`"),
        (["data.sources[0]"], "not of the form"),
        (["bogus=1"], "unknown key `bogus`"),
        (["train=3"], "`train`"),
    ],
)
def test_bad_keys_and_values_name_the_key(config_file, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(config_file, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_source_needs_exactly_one_origin(tmp_path):
    raw = {"name": "x", "output_dir": str(tmp_path), "model": {"name_or_path": "m"},
           "data": {"sources": [{"languages": ["java"]}]}}
    with pytest.raises(ConfigError, match=r"data.sources\[0\]"):
        load_config(None, base=raw)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_resolved_config_round_trips(config_file):
    cfg = load_config(config_file, ["train.max_steps=5"])
    path = write_resolved(cfg)
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["train"]["max_steps"] == 5


def test_cli_reports_config_errors_in_one_line_with_exit_2(config_file):
    result = CliRunner().invoke(app, ["prepare", str(config_file), "train.learnin_rate=1"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: config error: unknown key `train.learnin_rate`"


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from codetune.cli import app\n"
            "for args in (['--help'], ['train', '--help'], ['prepare', '--help'], ['eval', '--help']):\n"
            "    r = CliRunner().invoke(app, args)\n"
            "    assert r.exit_code in (0, 2), r.output\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
