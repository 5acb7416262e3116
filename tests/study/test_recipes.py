from pathlib import Path

import pytest

from codetune.study.recipes import list_recipes, load_recipe, resolve_run

EXPECTED = {"starcoder-1b-sparql", "starcoder2-memtune", "gpt2-special-tokens", "starcoder2-3b-sql-qlora",
            "codegen-350m-java"}


def test_every_user_system_is_shipped():
    assert EXPECTED <= set(list_recipes())


@pytest.mark.parametrize("name", sorted(list_recipes()))
@pytest.mark.parametrize("smoke", [False, True])
def test_every_recipe_run_validates(name, smoke, tmp_path):
    recipe = load_recipe(name)
    for run in recipe.ordered_runs():
        cfg = resolve_run(recipe, run, tmp_path, smoke=smoke)
        assert cfg.output_dir == str(tmp_path / run)
        if smoke:
            assert cfg.model.name_or_path.startswith("init:")
            assert cfg.train.max_steps is not None and cfg.train.max_steps <= 40
        elif name in EXPECTED:  # the users' systems name real hub models
            assert "/" in cfg.model.name_or_path or cfg.model.name_or_path == "gpt2"
        elif recipe.runs[run].init_from is None:  # the offline study builds its own model
            assert cfg.model.name_or_path.startswith("init:")


def test_recipes_carry_the_users_real_settings(tmp_path):
    memtune = load_recipe("starcoder2-memtune")
    for run, gpus in (("3b", 2), ("7b", 4), ("15b", 6)):
        cfg = resolve_run(memtune, run, tmp_path)
        assert cfg.plan.num_gpus == gpus
        assert cfg.train.optimizer == "adafactor" and cfg.train.scheduler == "linear"
        assert cfg.train.learning_rate == 3e-5 and cfg.data.seq_len == 1024 and cfg.train.epochs == 3
        assert cfg.train.micro_batch * cfg.train.grad_accum * gpus == 24
    qlora = resolve_run(load_recipe("starcoder2-3b-sql-qlora"), "main", tmp_path)
    assert qlora.method.kind == "qlora" and qlora.data.sources[0].data_dir == "data/sql"
    assert (qlora.train.micro_batch, qlora.train.grad_accum, qlora.train.warmup_steps) == (1, 4, 100)
    gpt2 = resolve_run(load_recipe("gpt2-special-tokens"), "main", tmp_path)
    assert gpt2.model.special_tokens and gpt2.train.dataloader_workers == 16 and "wandb" in gpt2.train.report_to
    java = load_recipe("codegen-350m-java")
    assert {resolve_run(java, r, tmp_path).method.kind for r in java.runs} == {"full", "lora"}


def test_unknown_recipe_lists_the_known_ones():
    from codetune.errors import ConfigError

    with pytest.raises(ConfigError, match="known recipes: .*codegen-350m-java"):
        load_recipe("nope")


def test_placeholders_resolve_to_local_corpora(tmp_path):
    from codetune.study.recipes import corpus_placeholders

    table = corpus_placeholders()
    assert Path(table["${stdlib}"]).is_dir()
