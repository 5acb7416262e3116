"""The `codetune` command line. It parses arguments, calls one flow's `run`, and turns a CodetuneError
into one line on stderr and an exit code. Flows are imported inside each command so that
`codetune --help` never imports torch.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from codetune.errors import CodetuneError

app = typer.Typer(
    name="codetune",
    help="Fine-tune, evaluate, plan and serve code language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML)")]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Overrides such as data.seq_len=512 train.max_steps=50")
]


def one_line_errors(fn):
    """Report CodetuneError (and a missing optional dependency) as one line, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CodetuneError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def load(config: Path, overrides: list[str] | None):
    from codetune.config import load_config

    return load_config(config, overrides or [])


@app.command("init-model")
@one_line_errors
def init_model_cmd(
    arch: Annotated[str, typer.Option(help="starcoder2 | gpt_bigcode | codegen | gpt2 | llama")] = "starcoder2",
    size: Annotated[str, typer.Option(help="tiny | small | base")] = "tiny",
    corpus: Annotated[
        list[Path] | None, typer.Option(help="Directory, zip/tar or file to train the tokenizer on (repeatable)")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory")] = Path("models/tiny"),
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size")] = 8192,
    max_corpus_mb: Annotated[float, typer.Option(help="Read at most this much text for the tokenizer")] = 64.0,
    seed: Annotated[int, typer.Option(help="Weight init seed")] = 0,
):
    """Build a small model of a real architecture and a byte-level BPE tokenizer trained on local code."""
    from codetune.init_model import default_corpus, init_model

    paths = corpus or [default_corpus()]
    result = init_model(arch, size, paths, out, vocab_size=vocab_size, max_corpus_mb=max_corpus_mb, seed=seed)
    typer.echo(f"saved {result.arch}/{result.size} ({result.num_parameters / 1e6:.2f}M parameters, "
               f"vocab {result.vocab_size}) to {result.out}")


@app.command("prepare")
@one_line_errors
def prepare_cmd(config: ConfigArg, overrides: OverridesArg = None):
    """Turn the config's sources into a tokenized, packed train/validation set under <output_dir>/data."""
    cfg = load(config, overrides)
    from codetune.data.run import run

    result = run(cfg)
    typer.echo(result.summary())


@app.command("plan")
@one_line_errors
def plan_cmd(
    config: ConfigArg,
    overrides: OverridesArg = None,
    gpu: Annotated[str | None, typer.Option(help="GPU short name (t4, a100-80gb, h100, ...)")] = None,
    gpu_memory_gb: Annotated[float | None, typer.Option(help="Custom GPU memory in GB")] = None,
    gpu_tflops: Annotated[float | None, typer.Option(help="Custom GPU peak dense bf16/fp16 TFLOPS")] = None,
    num_gpus: Annotated[int | None, typer.Option(help="Number of GPUs")] = None,
):
    """Predict peak GPU memory and training time before loading any weights."""
    extra = [f"plan.{k}={v}" for k, v in
             {"gpu": gpu, "gpu_memory_gb": gpu_memory_gb, "gpu_tflops": gpu_tflops, "num_gpus": num_gpus}.items()
             if v is not None]
    cfg = load(config, (overrides or []) + extra)
    from codetune.plan.run import run

    result = run(cfg)
    typer.echo(result.summary())


@app.command("train")
@one_line_errors
def train_cmd(
    config: ConfigArg,
    overrides: OverridesArg = None,
    resume: Annotated[str | None, typer.Option(help="auto (newest complete checkpoint) or a checkpoint path")] = None,
    force: Annotated[
        bool, typer.Option(help="Start even if the plan predicts OOM or output_dir holds another run")
    ] = False,
):
    """Fine-tune (full, LoRA, QLoRA) with exact resume, checkpoints, metrics and plots."""
    cfg = load(config, overrides)
    from codetune.train.run import run

    result = run(cfg, resume=resume, force=force)
    typer.echo(result.summary())


@app.command("report")
@one_line_errors
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="Run directory")]):
    """Write plots and report.html for a run (finished or not) under RUN_DIR/report."""
    from codetune.report.run import run

    result = run(run_dir)
    typer.echo(result.summary())


@app.command("export")
@one_line_errors
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory or checkpoint directory")],
    out: Annotated[Path | None, typer.Option(help="Output directory")] = None,
    merge: Annotated[bool, typer.Option(help="Merge a LoRA adapter into the base weights")] = False,
    push_to_hub: Annotated[str | None, typer.Option(help="Hub repository to push to")] = None,
):
    """Export a run's final model (optionally merging LoRA) and/or push it to the Hub."""
    from codetune.train.export import export

    result = export(run_dir, out=out, merge=merge, push_to_hub=push_to_hub)
    typer.echo(result.summary())


def main() -> None:  # pragma: no cover - console entry for `python -m codetune`
    sys.exit(app())
