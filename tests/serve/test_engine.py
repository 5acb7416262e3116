"""The batching engine: requests arriving together share one generate() call and get the same answers as
alone; a cancelled request stops generating and frees the worker."""

from __future__ import annotations

import asyncio

from codetune.generation import SamplingParams, generate
from codetune.serve.engine import TransformersEngine

PROMPTS = ["def add(a, b):\n", "import os\n\nclass Thing:\n    def __init__(self", "x = 1"]


async def _collect(sub) -> dict[int, tuple[str, str, int]]:
    texts: dict[int, str] = {}
    done: dict[int, tuple[str, str, int]] = {}
    async for chunk in sub.chunks():
        texts[chunk.index] = texts.get(chunk.index, "") + chunk.text
        if chunk.finish_reason:
            done[chunk.index] = (texts[chunk.index], chunk.finish_reason, chunk.completion_tokens)
    return done


def _ids(engine, text):
    return engine.tokenizer(text)["input_ids"]


def test_concurrent_requests_are_batched_and_match_generation_alone(engine):
    params = SamplingParams(max_new_tokens=12)

    async def main():
        subs = [engine.submit(_ids(engine, p), params) for p in PROMPTS]
        return await asyncio.gather(*(_collect(s) for s in subs))

    batches_before, largest_before = engine.stats.batches, engine.stats.largest_batch
    engine.stats.largest_batch = 0
    results = asyncio.run(main())
    assert engine.stats.batches - batches_before < len(PROMPTS)  # at least two shared a generate() call
    assert engine.stats.largest_batch >= 2
    engine.stats.largest_batch = max(largest_before, engine.stats.largest_batch)
    alone = [generate(engine.model, engine.tokenizer, [p], params)[0][0] for p in PROMPTS]
    assert [r[0][0] for r in results] == [g.text for g in alone]
    assert [r[0][2] for r in results] == [g.num_tokens for g in alone]


def test_rows_in_one_batch_keep_their_own_max_tokens_and_stops(engine):
    free = generate(engine.model, engine.tokenizer, [PROMPTS[0]], SamplingParams(max_new_tokens=16))[0][0].text
    stop = free[3:5]  # a stop sequence the greedy continuation is known to contain

    async def main():
        a = engine.submit(_ids(engine, PROMPTS[0]), SamplingParams(max_new_tokens=4))
        b = engine.submit(_ids(engine, PROMPTS[0]), SamplingParams(max_new_tokens=16, stop=(stop,)))
        c = engine.submit(_ids(engine, PROMPTS[0]), SamplingParams(max_new_tokens=16))
        return await asyncio.gather(_collect(a), _collect(b), _collect(c))

    a, b, c = asyncio.run(main())
    assert a[0][1:] == ("length", 4)
    assert b[0][0] == free[: free.find(stop)] and b[0][1] == "stop"
    assert c[0] == (free, "length", 16)


def test_batch_size_one_never_batches(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    eng = TransformersEngine(model, AutoTokenizer.from_pretrained(tiny_model_dir), "tiny", max_batch_size=1,
                             batch_wait_ms=50)
    try:
        async def main():
            subs = [eng.submit(_ids(eng, p), SamplingParams(max_new_tokens=3)) for p in PROMPTS]
            return await asyncio.gather(*(_collect(s) for s in subs))

        asyncio.run(main())
    finally:
        eng.close()  # joins the worker, so its counters are final
    assert eng.stats.batches == len(PROMPTS) and eng.stats.largest_batch == 1
    assert eng.stats.completed == len(PROMPTS)


def test_cancelled_request_stops_generating_and_frees_the_worker(engine):
    async def main():
        long = engine.submit(_ids(engine, PROMPTS[0]), SamplingParams(max_new_tokens=1000))
        chunks = long.chunks()
        first = await chunks.__anext__()
        long.cancel()
        rest = [c async for c in chunks]
        after = await _collect(engine.submit(_ids(engine, "x = 1"), SamplingParams(max_new_tokens=3)))
        return first, rest, after

    cancelled_before = engine.stats.cancelled
    first, rest, after = asyncio.run(main())
    engine.close()  # joins the worker, so its counters are final
    assert first.finish_reason is None and first.text
    assert rest[-1].finish_reason == "cancelled" and rest[-1].completion_tokens < 1000
    assert engine.stats.cancelled == cancelled_before + 1
    assert after[0][1] == "length"


def test_sampling_with_a_seed_is_reproducible_and_n_rows_differ(engine):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, n=3)

    async def main():
        return await _collect(engine.submit(_ids(engine, "def f(x):"), params, seed=7))

    first, again = asyncio.run(main()), asyncio.run(main())
    assert first == again
    assert len({first[i][0] for i in range(3)}) > 1
