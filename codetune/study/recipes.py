"""Recipes: our users' systems as shipped YAML presets (`codetune/recipes/*.yaml`), with real model and
dataset names, one or more runs (variants such as full vs LoRA, or stages such as pretrain -> fine-tune),
and a smoke form that swaps in a tiny model of the same architecture and locally-made data.

A recipe resolves to one validated `Config` per run. Two placeholders keep recipes portable:
`init:<arch>:<size>` as a model name means "a model built by `codetune init-model`" (the offline study and
every smoke run), `${stdlib}` / `${jdk_src_zip}` in strings are the code corpora present on the machine,
and `${study}` is the study directory (one run can read another's held-out files).
"""

from __future__ import annotations

import glob
import sysconfig
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from codetune.config import Config, Section, apply_override, parse_config
from codetune.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
INIT_SCHEME = "init:"


class RunSpec(Section):
    overrides: list[str] = Field(default_factory=list, description="section.key=value applied to the base config")
    init_from: str | None = Field(None, description="Start from this other run's final model (a later stage)")
    smoke_arch: str | None = Field(None, description="Tiny architecture for this run in smoke mode")


class SmokeSpec(Section):
    arch: str = Field(description="Tiny architecture standing in for the real model")
    data: Literal["code", "sql-pairs", "sparql-pairs", "special-tokens", "sql-files"] = Field(
        description="Locally-made examples in the recipe data's format"
    )
    languages: list[str] = Field(default_factory=lambda: ["java"], description="Languages for `code` data")
    examples: int = Field(300, ge=10, description="How many examples to make")
    eval_data: Literal["sql-pairs", "sparql-pairs"] | None = Field(
        None, description="Extra locally-made evaluation set when the training data has none (text-to-SQL)"
    )
    overrides: list[str] = Field(default_factory=list, description="Overrides that make each run small")


class Recipe(Section):
    name: str
    description: str
    real_run: str = Field(description="How to run it for real on GPUs (shown in `codetune recipes`)")
    config: dict[str, Any] = Field(description="The base codetune config shared by every run")
    runs: dict[str, RunSpec] = Field(default_factory=lambda: {"main": RunSpec()})
    smoke: SmokeSpec

    @model_validator(mode="after")
    def _runs_chain(self) -> Recipe:
        for name, spec in self.runs.items():
            if spec.init_from is not None and spec.init_from not in self.runs:
                raise ValueError(f"run `{name}` starts from unknown run `{spec.init_from}`")
        return self

    def ordered_runs(self) -> list[str]:
        """Runs in an order where every `init_from` comes before the run that needs it."""
        done: list[str] = []
        while len(done) < len(self.runs):
            progressed = False
            for name, spec in self.runs.items():
                if name not in done and (spec.init_from is None or spec.init_from in done):
                    done.append(name)
                    progressed = True
            if not progressed:
                raise ConfigError(f"recipe {self.name}: runs form a cycle through init_from")
        return done


def corpus_placeholders() -> dict[str, str]:
    zips = sorted(p for p in glob.glob("/usr/lib/jvm/*/lib/src.zip") if Path(p).resolve().is_file())
    return {"${stdlib}": sysconfig.get_paths()["stdlib"], "${jdk_src_zip}": zips[-1] if zips else "no-jdk-src.zip"}


def _substitute(value: Any, table: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, repl in table.items():
            value = value.replace(key, repl)
        return value
    if isinstance(value, list):
        return [_substitute(v, table) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, table) for k, v in value.items()}
    return value


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"no recipe {name_or_path!r}; known recipes: {', '.join(list_recipes())}")
    try:
        return Recipe.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"recipe {path.name}: `{loc}`: {first['msg']}") from None


def is_recipe_file(path: Path) -> bool:
    if not path.is_file():
        return False
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return isinstance(raw, dict) and "runs" in raw and "config" in raw


def resolve_run(recipe: Recipe, run: str, output_dir: Path, smoke: bool = False) -> Config:
    """The validated Config of one run; `output_dir` is the study directory (each run gets a subfolder)."""
    spec = recipe.runs[run]
    table = {**corpus_placeholders(), "${study}": str(output_dir)}
    raw = _substitute(yaml.safe_load(yaml.safe_dump(recipe.config)), table)
    raw["name"] = f"{recipe.name}-{run}"
    raw["output_dir"] = str(output_dir / run)
    for override in spec.overrides + (recipe.smoke.overrides if smoke else []):
        apply_override(raw, _substitute(override, table))
    if smoke:
        arch = spec.smoke_arch or recipe.smoke.arch
        raw.setdefault("model", {})["name_or_path"] = f"{INIT_SCHEME}{arch}:tiny"
    return parse_config(raw)
