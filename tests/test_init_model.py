import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from codetune.init_model import ARCHS, SPECIAL_TOKENS


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_models_reload_with_plain_transformers(tiny_model_factory, arch):
    path = tiny_model_factory(arch)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == arch
    for token in SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(token) != tok.unk_token_id or token == tok.unk_token
    batch = tok(["def add(a, b):\n    return a + b\n", "class A:\n    pass\n"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert out.logits.shape[-1] == len(tok)
    assert torch.isfinite(out.loss)


def test_tokenizer_round_trips_code_and_keeps_fim_tokens_whole(tiny_tokenizer):
    code = "def f(x):\n\treturn {'é': x}  # ünïcode ✓\n"
    ids = tiny_tokenizer(code)["input_ids"]
    assert tiny_tokenizer.decode(ids) == code
    fim = "<fim_prefix>a<fim_suffix>b<fim_middle>"
    pieces = tiny_tokenizer.convert_ids_to_tokens(tiny_tokenizer(fim)["input_ids"])
    assert pieces[0] == "<fim_prefix>" and "<fim_suffix>" in pieces and pieces[-1] == "<fim_middle>"


def test_init_model_cli_builds_from_a_zip(tmp_path, stdlib_dir):
    import zipfile

    from typer.testing import CliRunner

    from codetune.cli import app

    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((stdlib_dir / "json").glob("*.py")):
            zf.write(path, f"json/{path.name}")
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["init-model", "--arch", "gpt2", "--corpus", str(archive),
                                      "--out", str(out), "--vocab-size", "600"])
    assert result.exit_code == 0, result.output
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|endoftext|>"
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "gpt2"


def test_unknown_arch_is_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from codetune.cli import app

    result = CliRunner().invoke(app, ["init-model", "--arch", "bert", "--corpus", str(tmp_path), "--out",
                                      str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "unknown architecture 'bert'" in result.output
