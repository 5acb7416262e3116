"""The model card (`README.md`) written next to a trained model or adapter: Hub metadata (base model,
library, tags) in the YAML header, then the data, the method, the hyperparameters and the final
metrics, so the directory explains itself when pushed to the Hub or handed to someone.
"""

from __future__ import annotations

from pathlib import Path


def _data_lines(cfg) -> list[str]:
    lines = []
    for src in cfg.data.sources:
        origin = src.path or f"hub:{src.hub}" + (f"/{src.data_dir}" if src.data_dir else "")
        langs = ", ".join(src.languages) if src.languages else "all known languages"
        lines.append(f"- `{origin}` ({langs})")
    if not lines:
        lines.append("- a dataset prepared outside this config")
    lines.append(
        f"- packed to {cfg.data.seq_len} tokens, FIM rate {cfg.data.fim_rate}, "
        f"{cfg.data.valid_fraction:.0%} of files held out for validation"
    )
    return lines


def _method_line(cfg) -> str:
    m = cfg.method
    if m.kind == "full":
        return "full fine-tuning (every weight)"
    targets = m.target_modules if isinstance(m.target_modules, str) else ", ".join(m.target_modules)
    name = "DoRA" if m.use_dora else "LoRA"
    text = f"{name} r={m.r}, alpha={m.alpha}, dropout={m.dropout}, targets: {targets}"
    if m.kind == "qlora":
        text = f"QLoRA: 4-bit {m.quant_type.upper()} base (double quant: {m.double_quant}), " + text
    return text


def final_metrics(rows: list[dict]) -> dict[str, float]:
    """Last training loss, last eval loss/perplexity, best eval loss and tokens seen from metrics rows."""
    out: dict[str, float] = {}
    losses = [r for r in rows if r.get("loss") is not None]
    evals = [r for r in rows if r.get("eval_loss") is not None]
    if losses:
        out["train_loss"] = losses[-1]["loss"]
    if evals:
        out["eval_loss"] = evals[-1]["eval_loss"]
        out["eval_perplexity"] = evals[-1].get("perplexity")
        out["best_eval_loss"] = min(r["eval_loss"] for r in evals)
    if rows:
        out["steps"] = rows[-1]["step"]
        out["tokens_seen"] = rows[-1].get("tokens_seen")
    return {k: v for k, v in out.items() if v is not None}


def render(cfg, rows: list[dict], method: str, steps: int, merged: bool = False) -> str:
    from huggingface_hub import ModelCardData

    adapter = method in ("lora", "qlora") and not merged
    data = ModelCardData(
        base_model=cfg.model.name_or_path,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=["codetune", "code", method] + (["merged"] if merged else []),
        model_name=cfg.name,
    )
    t = cfg.train
    hyper = {
        "learning rate": t.learning_rate,
        "scheduler": t.scheduler,
        "warmup": t.warmup_steps or f"{t.warmup_ratio:.0%}",
        "optimizer": t.optimizer,
        "micro-batch": t.micro_batch,
        "gradient accumulation": t.grad_accum,
        "steps": steps,
        "weight decay": t.weight_decay,
        "max grad norm": t.max_grad_norm,
        "sequence length": cfg.data.seq_len,
        "seed": t.seed,
    }
    metrics = final_metrics(rows)
    body = [
        f"# {cfg.name}",
        "",
        f"Fine-tuned from `{cfg.model.name_or_path}` with codetune"
        + (" (LoRA merged into the base weights)." if merged else "."),
        "",
        "## Data",
        *_data_lines(cfg),
        "",
        "## Method",
        _method_line(cfg),
        "",
        "## Hyperparameters",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in hyper.items()],
        "",
        "## Final metrics",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()],
        "",
        "## Use",
        "```python",
        *(
            [
                "from peft import AutoPeftModelForCausalLM",
                "model = AutoPeftModelForCausalLM.from_pretrained(PATH)",
            ]
            if adapter
            else [
                "from transformers import AutoModelForCausalLM",
                "model = AutoModelForCausalLM.from_pretrained(PATH)",
            ]
        ),
        "```",
        "",
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)


def write_model_card(
    model_dir: Path, cfg, rows: list[dict], method: str, steps: int, merged: bool = False
) -> Path:
    path = Path(model_dir) / "README.md"
    path.write_text(render(cfg, rows, method, steps, merged), encoding="utf-8")
    return path
