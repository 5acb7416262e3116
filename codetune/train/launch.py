"""Run `codetune train` or `codetune eval` as N synchronized processes, on one machine or several, through
`accelerate launch` and a shipped engine config (`codetune/train/engines/*.yaml`, each one documented):

    codetune train run.yaml --num-processes 4                          # DDP on 4 GPUs
    codetune train run.yaml --num-processes 8 --engine fsdp            # FSDP2: weights, grads, optimizer sharded
    codetune train run.yaml --num-processes 6 --engine deepspeed --zero 3
    codetune eval --model runs/x/final --tasks humaneval --num-processes 4   # generation sharded over 4 GPUs

Several machines (here 2 x 8 GPUs): run the same command on every machine, changing only --machine-rank.
The run directory must be on a filesystem all machines see (every rank writes its part of a checkpoint):

    codetune train run.yaml --num-processes 16 --num-machines 2 --machine-rank 0 \\
        --main-address 10.0.0.1 --main-port 29500        # on 10.0.0.1
    codetune train run.yaml --num-processes 16 --num-machines 2 --machine-rank 1 \\
        --main-address 10.0.0.1 --main-port 29500        # on the other machine

`--num-processes` counts the processes of all machines together (accelerate's meaning), one per GPU. Every
process runs the same `codetune` command without the launch options, plus `plan.num_gpus=N` and
`plan.engine=E` so that the planner's out-of-memory refusal judges memory per GPU under that engine; the
Trainer sees the launcher's environment (WORLD_SIZE, RANK, ...) and trains data-parallel. Rank 0 alone writes
metrics.jsonl, config.yaml, the report, final/ and checkpoint markers; every rank writes its part of a
checkpoint (its RNG state, its FSDP shard) and reads it back on resume.

The traps this steers around (measured, see ../shared/FINDINGS.md): `accelerate launch --cpu` starts ONE
process, so it is never passed; on a CPU-only machine the DDP config launches N processes that train on gloo
(TrainingArguments' `use_cpu` gives the Trainer's Accelerator `cpu=True`; a plain `Accelerator()` there
would train N unsynchronised models). accelerate's FSDP plugin and DeepSpeed need CUDA: refused on a CPU-only
machine with one line. A Ctrl-C reaches only this process, which forwards it once to the launcher, which
forwards it once to every rank; the ranks agree on the step to stop at, checkpoint and exit (torch elastic
gives them 30 s before SIGKILL; `--resume auto` continues from the newest complete checkpoint either way).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import CodetuneError, ConfigError, RefusedError

ENGINES = ("ddp", "fsdp", "deepspeed")
ENGINE_DIR = Path(__file__).parent / "engines"
ENGINE_FILES = {"ddp": "ddp.yaml", "fsdp": "fsdp.yaml", "zero2": "deepspeed_zero2.yaml",
                "zero3": "deepspeed_zero3.yaml"}
CUDA_ONLY = {"fsdp": "accelerate's FSDP plugin refuses a CPU-only machine", "zero2": "DeepSpeed needs CUDA",
             "zero3": "DeepSpeed needs CUDA"}


@dataclass(frozen=True)
class LaunchSpec:
    num_processes: int
    engine: str = "ddp"
    zero: int | None = None
    num_machines: int = 1
    machine_rank: int = 0
    main_address: str | None = None
    main_port: int | None = None

    @property
    def plan_engine(self) -> str:
        """The planner's name for the engine: ddp | fsdp | zero2 | zero3."""
        return f"zero{self.zero or 2}" if self.engine == "deepspeed" else self.engine

    @property
    def per_machine(self) -> int:
        return self.num_processes // self.num_machines

    @property
    def distributed(self) -> bool:
        """Whether this needs a launcher (an engine other than DDP needs one even for a single process)."""
        return self.num_processes > 1 or self.num_machines > 1 or self.engine != "ddp"


def validate(spec: LaunchSpec) -> LaunchSpec:
    """ConfigError (one line) for launch options that contradict each other."""
    if spec.num_processes < 1 or spec.num_machines < 1:
        raise ConfigError("--num-processes and --num-machines must be >= 1")
    if spec.engine not in ENGINES:
        raise ConfigError(f"--engine {spec.engine}: use one of {', '.join(ENGINES)}")
    if spec.zero is not None and (spec.engine != "deepspeed" or spec.zero not in (2, 3)):
        raise ConfigError("--zero 2|3 goes with --engine deepspeed")
    if spec.num_processes % spec.num_machines:
        raise ConfigError(f"--num-processes {spec.num_processes} (all machines together) does not divide evenly "
                          f"over --num-machines {spec.num_machines}")
    if not 0 <= spec.machine_rank < spec.num_machines:
        raise ConfigError(f"--machine-rank {spec.machine_rank} must be in 0..{spec.num_machines - 1}")
    if spec.num_machines > 1 and (not spec.main_address or spec.main_port is None):
        raise ConfigError("several machines need --main-address (the rank-0 machine) and --main-port")
    return spec


def check_machine(spec: LaunchSpec, cuda_devices: int, has_deepspeed: bool) -> None:
    """RefusedError when this machine cannot run the launch: a CUDA-only engine without CUDA, DeepSpeed
    not installed, more processes per machine than GPUs."""
    engine = spec.plan_engine
    if cuda_devices == 0 and engine in CUDA_ONLY:
        raise RefusedError(f"--engine {spec.engine} needs CUDA GPUs ({CUDA_ONLY[engine]}) and this machine has "
                           "none; use --engine ddp, which runs on CPU processes with gloo")
    if spec.engine == "deepspeed" and not has_deepspeed:
        raise RefusedError("--engine deepspeed needs DeepSpeed, which is not installed: pip install deepspeed")
    if cuda_devices and spec.per_machine > cuda_devices:
        raise RefusedError(f"--num-processes {spec.num_processes} puts {spec.per_machine} processes on this machine "
                           f"but it has {cuda_devices} GPU(s); one process per GPU")


def check_method(spec: LaunchSpec, method_kind: str) -> None:
    """QLoRA's 4-bit base is placed whole on each rank's GPU: it trains data-parallel (DDP) only."""
    if method_kind == "qlora" and spec.engine != "ddp":
        raise RefusedError(f"method.kind=qlora trains with --engine ddp (one 4-bit copy per GPU), not {spec.engine}")


def machine_check(spec: LaunchSpec) -> LaunchSpec:
    import torch

    check_machine(spec, torch.cuda.device_count() if torch.cuda.is_available() else 0,
                  importlib.util.find_spec("deepspeed") is not None)
    return spec


def engine_config(plan_engine: str) -> Path:
    """The shipped accelerate config for an engine (package data)."""
    return ENGINE_DIR / ENGINE_FILES[plan_engine]


def plan_overrides(spec: LaunchSpec) -> list[str]:
    """Config overrides every rank gets, so the plan judges memory per GPU under the engine in use."""
    return [f"plan.num_gpus={spec.num_processes}", f"plan.engine={spec.plan_engine}"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(spec: LaunchSpec, codetune_args: list[str], python: str = sys.executable) -> list[str]:
    """`accelerate launch` with the engine's config, re-running `python -m codetune <codetune_args>` per rank."""
    cmd = [python, "-m", "accelerate.commands.launch", "--config_file", str(engine_config(spec.plan_engine)),
           "--num_processes", str(spec.num_processes), "--num_machines", str(spec.num_machines),
           "--machine_rank", str(spec.machine_rank),
           "--main_process_port", str(spec.main_port if spec.main_port is not None else free_port())]
    if spec.main_address:
        cmd += ["--main_process_ip", spec.main_address]
    return [*cmd, "-m", "codetune", *codetune_args]


def world_size() -> int:
    """Processes in the launched job (1 outside a launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def launched_env() -> dict[str, str]:
    env = dict(os.environ)
    # Tokenizer threads in N processes on a shared machine oversubscribe it; accelerate sets OMP_NUM_THREADS.
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_launched(cmd: list[str], what: str) -> None:
    """Run the launcher in its own session (so a Ctrl-C reaches it once, through us), forward SIGINT/SIGTERM
    once, and turn a failure into one line (each rank has printed its own reason above)."""
    proc = subprocess.Popen(cmd, env=launched_env(), start_new_session=True)
    forwarded: list[int] = []

    def forward(signum, frame):
        if not forwarded:
            forwarded.append(signum)
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code != 0:
        stopped = f" after {signal.Signals(forwarded[0]).name}" if forwarded else ""
        raise CodetuneError(f"{what} stopped{stopped} with exit code {code}; each rank's reason is printed above")
