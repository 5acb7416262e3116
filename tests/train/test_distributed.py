"""Multi-process training (codetune/train/launch.py and the rank-aware run/trainer/callbacks).

On CPU, through the real CLI and `accelerate launch`: a 2-process DDP run (gloo) logs the loss curve of a
single process with the same global batch; a 2-process run SIGKILLed mid-step resumes to that same curve; a
SIGTERM stops both ranks after the same step with a checkpoint. FSDP2 runs on CPU with torch's `fully_shard`
under torchrun (accelerate's FSDP plugin refuses a CPU-only machine): its loss curve, a sharded checkpoint's
resume and the gathered export are checked. The Trainer's FSDP and DeepSpeed paths need CUDA: `gpu`-marked,
skipped here.

Why the curves can be equal: one process with micro_batch 4 and two with micro_batch 2 see the same global
batches. The Trainer's sampler draws one permutation of the train rows from `data_seed` whatever the number
of processes; accelerate cuts it into per-process batches of 2 and deals batch i to rank i % 2, so global
step k covers rows 4k..4k+3 of the permutation in both runs, and the loss (a token-weighted mean over the
global batch, tokens counted across ranks) and the averaged gradients are the same numbers up to float
summation order. Only at an epoch's ragged end do the runs differ (accelerate pads the last per-rank batch
with rows from the start, `even_batches`), so the compared steps stay inside the first epoch (75 rows).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from codetune.errors import ConfigError, RefusedError
from codetune.train import launch
from codetune.train.launch import LaunchSpec
from tests.train.conftest import build_cfg

STEPS = 12  # 48 of the 75 train rows: inside the first epoch
COMPARED = ("step", "loss", "grad_norm", "lr", "tokens_seen")
WORKER = Path(__file__).with_name("fsdp_worker.py")


# ---- launch options, engine configs, refusals (no processes started) ---------------------------------


def test_engine_configs_load_as_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}
    for engine, kind in expected.items():
        path = launch.engine_config(engine)
        assert path.read_text().startswith("#"), f"{path.name} explains itself"
        cfg = load_config_from_file(str(path))
        assert cfg.distributed_type.value == kind and cfg.use_cpu is False
    fsdp = load_config_from_file(str(launch.engine_config("fsdp"))).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    for stage in (2, 3):
        ds = load_config_from_file(str(launch.engine_config(f"zero{stage}"))).deepspeed_config
        assert ds["zero_stage"] == stage and ds["deepspeed_multinode_launcher"] == "standard"
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"train/engines/*.yaml"' in pyproject  # shipped as package data


@pytest.mark.parametrize("spec, words", [
    (LaunchSpec(2, "ddp", zero=3), "--zero"),
    (LaunchSpec(2, "deepspeed", zero=1), "--zero"),
    (LaunchSpec(2, "horovod"), "--engine"),
    (LaunchSpec(3, num_machines=2, main_address="h", main_port=1), "divide"),
    (LaunchSpec(4, num_machines=2, machine_rank=2, main_address="h", main_port=1), "--machine-rank"),
    (LaunchSpec(4, num_machines=2, machine_rank=1), "--main-address"),
    (LaunchSpec(0), ">= 1"),
])
def test_contradictory_launch_options_are_config_errors(spec, words):
    with pytest.raises(ConfigError, match=words):
        launch.validate(spec)


def test_machine_refusals():
    with pytest.raises(RefusedError, match="needs CUDA GPUs .*FSDP plugin refuses a CPU-only machine"):
        launch.check_machine(LaunchSpec(2, "fsdp"), cuda_devices=0, has_deepspeed=True)
    with pytest.raises(RefusedError, match="DeepSpeed needs CUDA"):
        launch.check_machine(LaunchSpec(2, "deepspeed", zero=3), cuda_devices=0, has_deepspeed=True)
    with pytest.raises(RefusedError, match="pip install deepspeed"):
        launch.check_machine(LaunchSpec(2, "deepspeed"), cuda_devices=8, has_deepspeed=False)
    with pytest.raises(RefusedError, match="puts 8 processes on this machine but it has 4 GPU"):
        launch.check_machine(LaunchSpec(16, num_machines=2, main_address="h", main_port=1), 4, True)
    with pytest.raises(RefusedError, match="qlora trains with --engine ddp"):
        launch.check_method(LaunchSpec(2, "fsdp"), "qlora")
    launch.check_method(LaunchSpec(2), "qlora")
    launch.check_machine(LaunchSpec(2), cuda_devices=0, has_deepspeed=False)  # DDP on CPU processes
    launch.check_machine(LaunchSpec(16, "fsdp", num_machines=2, main_address="h", main_port=1), 8, False)


def test_launch_command():
    spec = LaunchSpec(16, "deepspeed", 3, num_machines=2, machine_rank=1, main_address="10.0.0.1", main_port=29500)
    cmd = launch.launch_command(spec, ["train", "run.yaml", "--resume", "auto"], python="py")
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"]
    opts = dict(zip(cmd[3:-6:2], cmd[4:-6:2], strict=True))
    assert opts == {"--config_file": str(launch.engine_config("zero3")), "--num_processes": "16",
                    "--num_machines": "2", "--machine_rank": "1", "--main_process_port": "29500",
                    "--main_process_ip": "10.0.0.1"}
    assert cmd[-6:] == ["-m", "codetune", "train", "run.yaml", "--resume", "auto"]
    local = launch.launch_command(LaunchSpec(2), ["eval"])
    assert "--main_process_ip" not in local and int(local[local.index("--main_process_port") + 1]) > 0
    assert launch.plan_overrides(spec) == ["plan.num_gpus=16", "plan.engine=zero3"]
    assert LaunchSpec(1, "fsdp").distributed and not LaunchSpec(1).distributed


def test_the_plan_judges_memory_per_gpu_under_the_launched_engine(tmp_path):
    """`--num-processes 8 --engine deepspeed --zero 3` reaches the planner's OOM refusal as plan.num_gpus and
    plan.engine: full fine-tuning of StarCoder2-7B does not fit one H100, it fits 8 under ZeRO-3."""
    from codetune.config import load_config
    from codetune.plan.gpus import GPUS
    from codetune.train.run import resolve_memory_plan

    base = {"name": "x", "output_dir": str(tmp_path), "model": {"name_or_path": "bigcode/starcoder2-7b"},
            "data": {"seq_len": 1024}, "train": {"micro_batch": 1, "gradient_checkpointing": True}}
    with pytest.raises(RefusedError, match="out-of-memory on NVIDIA H100"):
        resolve_memory_plan(load_config(None, [], base=base), GPUS["h100"], force=False)
    spec = LaunchSpec(8, "deepspeed", 3)
    cfg = load_config(None, launch.plan_overrides(spec), base=base)
    assert resolve_memory_plan(cfg, GPUS["h100"], force=False) == (1, True)


def test_cli_refuses_in_one_line_before_launching(make_cfg, tmp_path):
    from codetune.cli import app

    path = _write(make_cfg(), tmp_path / "run.yaml")
    runner = CliRunner()
    refused = runner.invoke(app, ["train", str(path), "--num-processes", "2", "--engine", "fsdp"])
    assert refused.exit_code == 3 and "needs CUDA GPUs" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    bad = runner.invoke(app, ["train", str(path), "--num-processes", "2", "--zero", "3"])
    assert bad.exit_code == 2 and "--zero 2|3 goes with --engine deepspeed" in bad.output
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing was written


# ---- real processes: DDP on CPU ------------------------------------------------------------------------


def _write(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    return path


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _codetune(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "codetune", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _rows(run_dir: Path) -> list[dict]:
    from codetune.report.training import read_metrics

    return [{k: r.get(k) for k in COMPARED} for r in read_metrics(run_dir / "metrics.jsonl")]


def assert_same_curve(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, STEPS + 1))
    for g, w in zip(got, want, strict=True):
        assert g["tokens_seen"] == w["tokens_seen"] and g["lr"] == pytest.approx(w["lr"], rel=1e-12)
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-5), g["step"]
        assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=1e-4), g["step"]


def assert_close_weights(a_dir: Path, b_dir: Path) -> None:
    from safetensors.torch import load_file

    a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def _ddp_cfg(tmp_path, tiny_model_dir, prepared_data, name):
    return build_cfg(tmp_path / name, tiny_model_dir, prepared_data, f"train.max_steps={STEPS}",
                     "train.micro_batch=2", "train.save_steps=3", "train.eval_steps=6")


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, tiny_model_dir, prepared_data):
    """The reference: one process, micro_batch 4 (the global batch of 2 processes x 2), in-process."""
    from codetune.train.run import run

    cfg = build_cfg(tmp_path_factory.mktemp("single") / "run", tiny_model_dir, prepared_data,
                    f"train.max_steps={STEPS}", "train.micro_batch=4", "train.save_steps=3", "train.eval_steps=6")
    run(cfg)
    return cfg.run_dir


def test_two_process_ddp_matches_single_process(single_process_run, tmp_path, tiny_model_dir, prepared_data):
    cfg = _ddp_cfg(tmp_path, tiny_model_dir, prepared_data, "ddp")
    proc = _codetune("train", str(_write(cfg, tmp_path / "ddp.yaml")), "--num-processes", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert out.count("trained to step 12") == 1  # rank 0 alone reports
    assert_same_curve(_rows(cfg.run_dir), _rows(single_process_run))
    assert_close_weights(cfg.run_dir / "final", single_process_run / "final")
    saved = yaml.safe_load((cfg.run_dir / "config.yaml").read_text())["plan"]
    assert saved["num_gpus"] == 2 and saved["engine"] == "ddp"
    ckpt = cfg.run_dir / "checkpoints" / f"step-{STEPS}"
    assert {p.name for p in ckpt.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    marker = json.loads((ckpt / "checkpoint.json").read_text())
    assert marker["world_size"] == 2 and len(marker["tr_loss_by_rank"]) == 2
    assert (cfg.run_dir / "report" / "report.html").is_file()


def _wait_for(predicate, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, f"run ended early: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _checkpoint_steps(run_dir: Path) -> set[int]:
    return {int(p.parent.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*/checkpoint.json")}


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the CLI, the launcher and every rank at once (a lost machine, an OOM-killed job)."""
    import psutil

    parent = psutil.Process(proc.pid)
    victims = [parent, *parent.children(recursive=True)]
    for p in victims:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)


def test_killed_two_process_run_resumes_to_the_same_curve(single_process_run, tmp_path, tiny_model_dir,
                                                          prepared_data):
    cfg = _ddp_cfg(tmp_path, tiny_model_dir, prepared_data, "victim")
    path = _write(cfg, tmp_path / "victim.yaml")
    victim = _codetune("train", str(path), "--num-processes", "2")
    # Killed mid-step after its second checkpoint: rotation, metrics truncation and per-rank RNG all matter.
    _wait_for(lambda: 6 in _checkpoint_steps(cfg.run_dir) and len(_rows(cfg.run_dir)) > 7, victim)
    _kill_tree(victim)
    assert not (cfg.run_dir / "final").exists() and len(_rows(cfg.run_dir)) < STEPS
    resumed = _codetune("train", str(path), "--num-processes", "2", "--resume", "auto")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "resumed from step-" in out
    assert_same_curve(_rows(cfg.run_dir), _rows(single_process_run))
    assert_close_weights(cfg.run_dir / "final", single_process_run / "final")


def test_sigterm_stops_every_rank_after_the_same_step_with_a_checkpoint(tmp_path, tiny_model_dir, prepared_data):
    """SIGTERM to the CLI is forwarded once to the launcher and on to each rank; the ranks agree (all-reduce)
    on the step to stop after, save it together and exit; a rank stopping alone would hang the other."""
    cfg = _ddp_cfg(tmp_path, tiny_model_dir, prepared_data, "stopped")
    proc = _codetune("train", str(_write(cfg, tmp_path / "stopped.yaml")), "--num-processes", "2")
    _wait_for(lambda: 3 in _checkpoint_steps(cfg.run_dir), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "stopped by SIGTERM after step" in err
    stopped_at = max(_checkpoint_steps(cfg.run_dir))
    assert 3 <= stopped_at < STEPS and f"checkpoints/step-{stopped_at}; continue with --resume auto" in err
    ckpt = cfg.run_dir / "checkpoints" / f"step-{stopped_at}"
    assert {p.name for p in ckpt.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert [r["step"] for r in _rows(cfg.run_dir)] == list(range(1, stopped_at + 1))


# ---- FSDP2 on CPU (torch fully_shard under torchrun, gloo) -----------------------------------------------


def _worker(nproc: int, *args: str) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_port", str(launch.free_port())] if nproc > 1 else [sys.executable]
    done = subprocess.run([*launcher, str(WORKER), *args], capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_fsdp2_on_cpu_matches_single_process_resumes_and_exports_one_model(tmp_path, tiny_model_dir,
                                                                          prepared_data):
    from transformers import AutoModelForCausalLM

    from codetune.train.export import export

    model, data = str(tiny_model_dir), str(prepared_data)
    _worker(1, model, data, str(tmp_path / "single"), "--steps", "6", "--save-at", "3")
    _worker(2, model, data, str(tmp_path / "fsdp"), "--steps", "6", "--save-at", "3")
    _worker(2, model, data, str(tmp_path / "resumed"), "--steps", "6", "--resume", str(tmp_path / "fsdp" / "step-3"))

    def losses(name):
        return json.loads((tmp_path / name / "losses.json").read_text())

    single, fsdp, resumed = losses("single"), losses("fsdp"), losses("resumed")
    assert list(fsdp) == [str(s) for s in range(1, 7)]
    assert fsdp == pytest.approx(single, rel=1e-5)
    assert resumed == {k: fsdp[k] for k in ("4", "5", "6")}  # sharded save + load: exact

    sharded = tmp_path / "fsdp" / "step-3"
    assert len(list((sharded / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2  # one shard per rank
    with pytest.raises(ConfigError, match="--out DIR"):
        export(sharded, push_to_hub="me/x")
    result = export(sharded, out=tmp_path / "gathered")
    gathered = AutoModelForCausalLM.from_pretrained(str(result.out)).state_dict()
    reference = AutoModelForCausalLM.from_pretrained(str(tmp_path / "single" / "step-3")).state_dict()
    assert gathered.keys() == reference.keys()
    assert max((gathered[k] - reference[k]).abs().max().item() for k in gathered) < 1e-4
    assert not (result.out / "optimizer_0").exists()


# ---- on a GPU machine: the Trainer's FSDP and DeepSpeed paths --------------------------------------------


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.parametrize("engine", [["--engine", "fsdp"], ["--engine", "deepspeed", "--zero", "2"],
                                    ["--engine", "deepspeed", "--zero", "3"]], ids=["fsdp", "zero2", "zero3"])
def test_cuda_engines_train_checkpoint_and_resume(engine, tmp_path, tiny_model_dir, prepared_data):
    import importlib.util

    devices = _cuda_devices()
    if devices == 0:
        pytest.skip("needs a CUDA device")
    if "deepspeed" in engine and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    from transformers import AutoModelForCausalLM

    cfg = build_cfg(tmp_path / "run", tiny_model_dir, prepared_data, "train.max_steps=6", "train.save_steps=3",
                    "model.dtype=bfloat16")
    path = _write(cfg, tmp_path / "run.yaml")
    n = str(min(devices, 2))
    first = subprocess.run([sys.executable, "-m", "codetune", "train", str(path), "--num-processes", n, *engine],
                           capture_output=True, text=True, env=_env(), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [r["step"] for r in _rows(cfg.run_dir)] == list(range(1, 7))
    AutoModelForCausalLM.from_pretrained(str(cfg.run_dir / "final"))  # one HF model, gathered
    ckpt = cfg.run_dir / "checkpoints" / "step-3"
    if (ckpt / "pytorch_model_fsdp_0").is_dir():
        from codetune.train.export import export

        AutoModelForCausalLM.from_pretrained(str(export(ckpt, out=tmp_path / "gathered").out))
    # Resume from step 3 into a copy of the run: the last three rows come back.
    (cfg.run_dir / "checkpoints" / "step-6").rename(cfg.run_dir / "checkpoints" / ".partial-old")
    again = subprocess.run([sys.executable, "-m", "codetune", "train", str(path), "--num-processes", n, *engine,
                            "--resume", str(ckpt)], capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["step"] for r in _rows(cfg.run_dir)] == list(range(1, 7))
