"""Data-parallel evaluation (codetune/evaluate/shard.py, `generate` under `sharded`): a sharded run gives the
results of one process. In-process with simulated ranks for the batch split, then for real: `codetune eval
--num-processes 2` (accelerate launch, gloo) against one process on a task whose pass@k is neither 0 nor 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from codetune.evaluate.shard import MainRankSandbox, ProcessShard
from codetune.generation import SamplingParams, generate, sharded


class _Rank(ProcessShard):
    """One rank of a simulated group. `gather` records this rank's part and answers the other ranks' parts
    with `others` (what they would have sent); `broadcast` passes rank 0's object through `parts`."""

    def __init__(self, rank: int, world_size: int, parts: dict, others: dict | None = None):
        super().__init__(rank, world_size)
        object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "others", others or {})

    def gather(self, obj):
        self.parts[self.rank] = dict(obj)  # generate() goes on to fill its own dict
        rest = {k: v for k, v in self.others.items() if k not in obj}
        return [obj if r == self.rank else rest for r in range(self.world_size)]

    def broadcast(self, obj):
        if self.rank == 0:
            self.parts["broadcast"] = obj
        return self.parts["broadcast"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from codetune.config import ModelConfig
    from codetune.modeling import load_model, load_tokenizer

    cfg = ModelConfig(name_or_path=str(tiny_model_dir))
    return load_model(cfg), load_tokenizer(cfg)


def test_sharded_generation_equals_one_process(tiny):
    """3 samples of 5 prompts in batches of 2: batches straddle prompts, and sampling seeds follow batches."""
    model, tokenizer = tiny
    prompts = [f"def f{i}(x):\n    return" for i in range(5)]
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=3, seed=7)
    whole = generate(model, tokenizer, prompts, params, batch_size=2)
    flat = {pos: g for pos, g in enumerate(g for gens in whole for g in gens)}  # position in the n-expanded list
    for world in (2, 3):
        parts: dict = {}
        for rank in range(world):
            with sharded(_Rank(rank, world, parts, others=flat)):
                assert generate(model, tokenizer, prompts, params, batch_size=2) == whole
        # Each rank generated exactly its batches (b % world == rank), and generated them as one process did.
        for rank in range(world):
            owned = [pos for pos in range(15) if (pos // 2) % world == rank]
            assert sorted(parts[rank]) == owned
            assert all(parts[rank][pos] == flat[pos] for pos in owned)
    assert len({g.text for gens in whole for g in gens}) > 5  # sampled, not all alike


def test_programs_run_once_on_rank_zero():
    class Sandbox:
        calls = 0

        def run(self, programs, progress=None):
            Sandbox.calls += 1
            return [f"ran {p}" for p in programs]

        def describe(self):
            return {"isolation": "test"}

    parts: dict = {}
    assert MainRankSandbox(Sandbox(), _Rank(0, 2, parts)).run(["a", "b"]) == ["ran a", "ran b"]
    assert MainRankSandbox(Sandbox(), _Rank(1, 2, parts)).run(["a", "b"]) == ["ran a", "ran b"]
    assert Sandbox.calls == 1

    class Broken(Sandbox):
        def run(self, programs, progress=None):
            raise RuntimeError("no sandbox")

    with pytest.raises(RuntimeError, match="no sandbox"):
        MainRankSandbox(Broken(), _Rank(0, 2, parts)).run(["a"])
    with pytest.raises(RuntimeError, match="no sandbox"):  # the other ranks fail too instead of waiting
        MainRankSandbox(Broken(), _Rank(1, 2, parts)).run(["a"])


def _sandbox_or_skip():
    from codetune.errors import SandboxError
    from codetune.evaluate.sandbox import detect_isolation

    try:
        detect_isolation()
    except SandboxError as exc:
        pytest.skip(f"no sandbox here: {exc}")


def _without_timing(results: dict) -> dict:
    entry = results["tasks"]["humaneval"]
    return {k: v for k, v in entry["metrics"].items() if k != "timing"}


def test_two_process_eval_gives_the_results_of_one(tiny_model_dir, tmp_path):
    """The completion lands inside a string literal and the test checks its length is even: each sample
    passes or fails on its own text, so pass@k moves with any difference in what was generated."""
    _sandbox_or_skip()
    from codetune.cli import app

    rows = [{"task_id": f"parity/{i}", "prompt": f'def f{i}():\n    return """', "entry_point": f"f{i}",
             "test": '"""\n\n\ndef check(candidate):\n    assert len(candidate()) % 2 == 0\n'} for i in range(6)]
    dataset = tmp_path / "parity.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "--model", str(tiny_model_dir), "--tasks", "humaneval", "--dataset", str(dataset),
            "--n-samples", "3", "--temperature", "1.0", "--max-new-tokens", "12", "--batch-size", "2",
            "--k", "1", "--k", "3"]
    one = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    two = subprocess.run([sys.executable, "-m", "codetune", *args, "--output", str(tmp_path / "two"),
                          "--num-processes", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("results under") == 1  # rank 0 alone reports

    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert _without_timing(a) == _without_timing(b)
    assert 0 < a["tasks"]["humaneval"]["metrics"]["pass@1"]["value"] < 1
    assert a["tasks"]["humaneval"]["request"] == b["tasks"]["humaneval"]["request"]

    def samples(name):
        rows = [json.loads(line) for line in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
        return [(r["task_id"], r["sample_index"], r["completion"], r["status"]) for r in rows]

    assert samples("one") == samples("two") and len(samples("one")) == 18
