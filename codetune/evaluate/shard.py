"""Data-parallel evaluation: `codetune eval ... --num-processes N` runs N processes (see
`codetune.train.launch`), each with its own copy of the model (on its own GPU when there are GPUs).

Generation is split by batch: `codetune.generation.generate` cuts its prompts into the same batches a single
process would (same padding, same per-batch sampling seed), and process r generates batches r, r+N, r+2N, ...;
the generations are then gathered so that every process holds all of them, in order. A sharded run therefore
writes the results.json a single process writes (bitwise, on the same hardware), only faster. Programs are
executed once, by rank 0 over all its cores (the sandbox already fans out), and the executions are broadcast
so every rank computes the same metrics; rank 0 alone writes files. Perplexity and the in-process scored
tasks (sql, sparql) are not split: each rank computes them, and they are cheap next to generation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessShard:
    """This process's place in the launched group, and the collectives evaluation needs."""

    rank: int
    world_size: int
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        import torch.distributed as dist

        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (the others pass None)."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def shard_from_env() -> ProcessShard | None:
    """Join the launched process group (nccl on GPUs, gloo on CPU); None when not launched as several."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return ProcessShard(dist.get_rank(), dist.get_world_size(), local_rank)


def close(shard: ProcessShard | None) -> None:
    if shard is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class MainRankSandbox:
    """The sandbox as `score` sees it: rank 0 executes (its pool already uses every core), the others receive
    rank 0's executions, so no program runs twice. A failure on rank 0 is raised on every rank."""

    def __init__(self, sandbox, shard: ProcessShard):
        self.sandbox, self.shard = sandbox, shard

    def run(self, programs, progress=None):
        if self.shard.is_main:
            try:
                executions = self.sandbox.run(programs, progress=progress)
            except Exception as exc:
                self.shard.broadcast(exc)
                raise
            self.shard.broadcast(executions)
            return executions
        received = self.shard.broadcast(None)
        if isinstance(received, Exception):
            raise received
        return received

    def describe(self) -> dict:
        return self.sandbox.describe()
