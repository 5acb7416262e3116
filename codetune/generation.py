"""Batched sampling with stop sequences, shared by evaluation and serving.

Prompts are generated together with a KV cache (left padding); each sequence stops on its own when it
emits a stop sequence or EOS while the rest of the batch goes on. Every result records why it ended
(`stop` or `length`), which the failure breakdown and the API's `finish_reason` both need.

Inside `sharded(shard)` (data-parallel evaluation, see codetune/evaluate/shard.py) each process generates
only its share of the batches, and the batches are the ones a single process would make: the gathered result
is the single-process result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

# Set only by `sharded`: an object with `rank`, `world_size` and `gather(obj) -> [obj of each rank]`.
_SHARD: ContextVar = ContextVar("codetune_generation_shard", default=None)


@contextmanager
def sharded(shard) -> Iterator[None]:
    """Within: `generate` runs batch b only on rank b % world_size, and gathers every rank's generations."""
    token = _SHARD.set(shard)
    try:
        yield
    finally:
        _SHARD.reset(token)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class Generation:
    text: str  # completion only, truncated before the first stop sequence
    finish_reason: str  # "stop" (stop sequence or EOS) or "length"
    num_tokens: int  # completion tokens generated (including those past a stop sequence in the same step)
    prompt_tokens: int = 0
    stop_sequence: str | None = field(default=None)


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """Cut `text` before the earliest occurrence of any stop sequence; return (text, stop found or None)."""
    best, found = len(text), None
    for stop in stops:
        if not stop:
            continue
        at = text.find(stop)
        if at != -1 and at < best:
            best, found = at, stop
    return text[:best], found


class _StopOnSequences:
    """Per-sequence stopping criterion: a row is done once its decoded completion holds a stop sequence."""

    def __init__(self, tokenizer, prompt_len: int, stops: Sequence[str]):
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, [s for s in stops if s]
        self.window = max((len(s) for s in self.stops), default=0) + 16

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if not self.stops:
            return done
        # Decoding only the tail keeps this O(batch) per step instead of O(batch * length).
        tail_tokens = max(8, self.window)
        for row in range(input_ids.shape[0]):
            tail = self.tokenizer.decode(input_ids[row, max(self.prompt_len, input_ids.shape[1] - tail_tokens):],
                                         skip_special_tokens=False)
            done[row] = any(s in tail for s in self.stops)
        return done


def generate(model, tokenizer, prompts: Sequence[str], params: SamplingParams, batch_size: int = 8,
             progress=None) -> list[list[Generation]]:
    """`params.n` generations for each prompt, in prompt order."""
    import torch
    from transformers import StoppingCriteriaList

    device = next(model.parameters()).device
    shard = _SHARD.get()
    expanded = [(i, p) for i, p in enumerate(prompts) for _ in range(params.n)]
    done: dict[int, Generation] = {}  # position in `expanded` -> its generation
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(expanded), batch_size):
            chunk = expanded[start:start + batch_size]
            if shard is not None and (start // batch_size) % shard.world_size != shard.rank:
                continue
            enc = tokenizer([p for _, p in chunk], return_tensors="pt", padding=True).to(device)
            prompt_len = enc["input_ids"].shape[1]
            torch.manual_seed(params.seed + start)
            sample = params.temperature > 0
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=params.max_new_tokens,
                    do_sample=sample,
                    temperature=params.temperature if sample else None,
                    top_p=params.top_p if sample else None,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    stopping_criteria=StoppingCriteriaList([_StopOnSequences(tokenizer, prompt_len, params.stop)]),
                )
            for row in range(len(chunk)):
                done[start + row] = _to_generation(tokenizer, out[row, prompt_len:], params,
                                                   int(enc["attention_mask"][row].sum()))
            if progress is not None:
                progress(len(chunk))
    finally:
        tokenizer.padding_side = padding_side
    if shard is not None:
        mine = len(done)
        for part in shard.gather(done):
            done.update(part)
        if progress is not None:
            progress(len(done) - mine)
    results: list[list[Generation]] = [[] for _ in prompts]
    for position, (index, _) in enumerate(expanded):
        results[index].append(done[position])
    return results


def _to_generation(tokenizer, new_tokens, params: SamplingParams, prompt_tokens: int) -> Generation:
    ids = new_tokens.tolist()
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    hit_eos = eos in ids
    if hit_eos:
        ids = ids[: ids.index(eos)]
    while ids and ids[-1] == pad and pad != eos:
        ids.pop()
    text, stop = truncate_at_stop(tokenizer.decode(ids, skip_special_tokens=True), params.stop)
    finished = stop is not None or hit_eos
    return Generation(text=text, finish_reason="stop" if finished else "length", num_tokens=len(ids) + hit_eos,
                      prompt_tokens=prompt_tokens, stop_sequence=stop)
