"""FSDP2 on CPU for test_distributed.py: accelerate's FSDP plugin (and so the Trainer's FSDP path) refuses a
CPU-only machine, but torch's own `fully_shard` runs under torchrun with gloo. This trains the tiny model with
its decoder blocks and root sharded over the ranks, saves a sharded checkpoint in accelerate's layout
(`pytorch_model_fsdp_0/` + `optimizer_0/`, torch.distributed.checkpoint), and can resume from one.

    torchrun --nproc_per_node 2 tests/train/fsdp_worker.py MODEL DATA OUT --steps 6 --save-at 3 [--resume CKPT]
    python tests/train/fsdp_worker.py MODEL DATA OUT --steps 6 --save-at 3     # one process, no FSDP

Global batch k is rows 4k..4k+3 of the prepared train split in order; rank r takes 2 of them. The loss is the
token sum over the global batch divided by its token count, the same number a single process computes.
Rank 0 writes OUT/losses.json ({step: loss}); the single process saves plain HF weights at --save-at.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

GLOBAL_BATCH = 4


def main() -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    import torch.nn.functional as F
    from datasets import load_from_disk
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from transformers import AutoModelForCausalLM

    parser = argparse.ArgumentParser()
    for name in ("model", "data", "out"):
        parser.add_argument(name)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--save-at", type=int, default=0)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.config.use_cache = False
    if distributed:
        from torch.distributed.fsdp import fully_shard

        for block in model.model.layers:
            fully_shard(block)
        fully_shard(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    start = 0
    if args.resume:
        ckpt = Path(args.resume)
        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=str(ckpt / "pytorch_model_fsdp_0"))
        set_model_state_dict(model, state["model"])
        opt_state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
        dcp.load(opt_state, checkpoint_id=str(ckpt / "optimizer_0"))
        set_optimizer_state_dict(model, optimizer, opt_state["optimizer"])
        start = json.loads((ckpt / "step.json").read_text())["step"]

    rows = load_from_disk(str(Path(args.data) / "train"))
    per_rank = GLOBAL_BATCH // world
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    losses = {}
    for step in range(start, args.steps):
        lo = step * GLOBAL_BATCH + rank * per_rank
        batch = rows[lo:lo + per_rank]
        ids, labels, pos = (torch.tensor(batch[k], dtype=torch.long) for k in ("input_ids", "labels", "position_ids"))
        logits = model(input_ids=ids, position_ids=pos).logits[:, :-1]
        target = labels[:, 1:]
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                                   reduction="sum")
        totals = torch.stack([loss_sum.detach(), (target != -100).sum().float()])
        if distributed:
            dist.all_reduce(totals)
        # FSDP averages gradients over ranks: scale by world so the result is d(global token mean).
        (loss_sum * world / totals[1]).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses[step + 1] = (totals[0] / totals[1]).item()
        if step + 1 == args.save_at:
            ckpt = out / f"step-{step + 1}"
            if not distributed:  # the reference: plain HF weights
                model.save_pretrained(str(ckpt))
                continue
            dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=str(ckpt / "pytorch_model_fsdp_0"))
            dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)},
                     checkpoint_id=str(ckpt / "optimizer_0"))
            if rank == 0:
                model.config.save_pretrained(str(ckpt))
                (ckpt / "step.json").write_text(json.dumps({"step": step + 1}))
    if rank == 0:
        (out / "losses.json").write_text(json.dumps(losses))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
