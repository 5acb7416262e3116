"""Render a PlanResult as rich tables (to any text stream; the CLI prints the string)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.table import Table

from codetune.plan.memory import GIB
from codetune.plan.shapes import count_params

if TYPE_CHECKING:
    from codetune.plan.run import PlanResult


def _gib(x: float) -> str:
    return f"{x / GIB:,.2f}"


def render(plan: PlanResult, stream: TextIO, width: int = 100) -> None:
    console = Console(file=stream, width=width, force_terminal=False, color_system=None, highlight=False,
                      soft_wrap=True)
    s, est, shape, gpu = plan.setup, plan.rec.estimate, plan.shape, plan.gpu
    params = count_params(shape)
    console.print(f"[bold]Plan[/bold] {plan.model} ({params / 1e9:.2f}B params, {shape.model_type}, "
                  f"{shape.layers} layers, hidden {shape.hidden}, {shape.heads} heads / {shape.kv_heads} kv) "
                  f"on {s.num_gpus} x {gpu.label}")
    console.print(f"{s.method}, {plan.compute_dtype}, {s.optimizer}, seq {s.seq_len}, micro_batch {s.micro_batch}"
                  f" x grad_accum {s.grad_accum}, {s.attention} attention, gradient checkpointing "
                  f"{'on' if s.gradient_checkpointing else 'off'}" + (f", engine {s.engine}" if s.num_gpus > 1
                                                                       else ""))
    table = Table(title="Peak memory per GPU (GiB)", title_justify="left")
    table.add_column("item")
    table.add_column("GiB", justify="right")
    for name, value in est.items.items():
        if value:
            table.add_row(name, _gib(value))
    table.add_section()
    table.add_row("peak at start of backward", _gib(est.backward_peak))
    table.add_row("peak at optimizer step", _gib(est.step_peak))
    table.add_row("[bold]allocated peak[/bold] (torch max_memory_allocated)", _gib(est.peak_allocated))
    table.add_row("CUDA context + allocator slack", _gib(est.overhead))
    table.add_row("[bold]needed[/bold]", _gib(est.total))
    table.add_row(f"{gpu.label} memory", f"{gpu.memory_gib:,.2f}")
    console.print(table)
    verdict = "FITS" if plan.fits else "DOES NOT FIT"
    console.print(f"[bold]{verdict}[/bold]: margin {plan.margin_gb:+.2f} GiB. Largest micro-batch that fits: "
                  f"{plan.rec.max_micro_batch}; recommended micro_batch {plan.recommended_micro_batch} x "
                  f"grad_accum {plan.recommended_grad_accum}.")
    for line in plan.suggestions:
        console.print(f"  {line}")
    for line in plan.rec.notes + plan.warnings + est.notes + list(shape.notes):
        console.print(f"  note: {line}")
    t = plan.time
    timing = Table(title="Time", title_justify="left", show_header=False)
    timing.add_column("what")
    timing.add_column("value", justify="right")
    timing.add_row("training tokens", f"{t.tokens:,}")
    timing.add_row("  from", plan.tokens_source)
    timing.add_row("model FLOPs (6N + attention; LoRA 4N)", f"{t.model_flops:.3g}")
    timing.add_row("hardware FLOPs (+ recomputation)", f"{t.hardware_flops:.3g}")
    timing.add_row("achieved TFLOPS per GPU (peak x MFU)", f"{t.achieved_tflops_per_gpu:.1f}")
    timing.add_row("[bold]hours[/bold]", f"{t.hours:,.2f}")
    timing.add_row("GPU-hours", f"{t.gpu_hours:,.2f}")
    console.print(timing)
    sharding = Table(title="Needed GiB per GPU across GPUs", title_justify="left")
    sharding.add_column("engine")
    counts = sorted({n for per in plan.sharding.values() for n in per})
    for n in counts:
        sharding.add_column(f"{n} GPUs", justify="right")
    for engine, per in plan.sharding.items():
        sharding.add_row(engine, *(f"{per[n]:,.2f}" for n in counts))
    console.print(sharding)
