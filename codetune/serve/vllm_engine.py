"""The vLLM engine behind `--engine vllm`: same interface as `TransformersEngine`, scheduling left to vLLM
(continuous batching, paged KV cache). Only used when the `vllm` package and a CUDA GPU are present;
`check_vllm()` otherwise raises a one-line error. A LoRA adapter is served with vLLM's LoRA support.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from collections.abc import AsyncIterator

from codetune.errors import CodetuneError
from codetune.generation import SamplingParams
from codetune.serve.engine import Chunk, streamable
from codetune.serve.fim import find_fim_tokens


def check_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise CodetuneError("--engine vllm needs the vllm package (pip install vllm); "
                            "use --engine transformers (the default) otherwise")
    import torch

    if not torch.cuda.is_available():
        raise CodetuneError("--engine vllm needs a CUDA GPU and none is visible; use --engine transformers")


class _VllmSubmission:
    def __init__(self, engine, prompt_ids: list[int], params: SamplingParams, seed: int | None, lora):
        self.engine, self.prompt_ids, self.params, self.seed, self.lora = engine, prompt_ids, params, seed, lora
        self.request_id = uuid.uuid4().hex
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            asyncio.get_running_loop().create_task(self.engine.abort(self.request_id))

    async def chunks(self) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams as VllmParams

        p = self.params
        vparams = VllmParams(n=p.n, max_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p,
                             seed=self.seed, stop=list(p.stop) or None)
        sent = [0] * p.n
        finished = [False] * p.n
        async for out in self.engine.generate({"prompt_token_ids": self.prompt_ids}, vparams, self.request_id,
                                              lora_request=self.lora):
            for completion in out.outputs:
                i = completion.index
                if finished[i]:
                    continue
                done = completion.finish_reason is not None
                text = completion.text if done else streamable(completion.text, p.stop, final=False)[0]
                if done:
                    finished[i] = True
                    reason = "length" if completion.finish_reason == "length" else "stop"
                    yield Chunk(i, text[sent[i]:], reason, len(completion.token_ids))
                elif len(text) > sent[i]:
                    yield Chunk(i, text[sent[i]:])
                    sent[i] = len(text)


class VllmEngine:
    name = "vllm"

    def __init__(self, model: str, tokenizer, model_id: str, adapter: str | None = None,
                 revision: str | None = None, trust_remote_code: bool = False):
        check_vllm()
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        args = AsyncEngineArgs(model=model, revision=revision, trust_remote_code=trust_remote_code,
                               enable_lora=adapter is not None)
        self.engine = AsyncLLMEngine.from_engine_args(args)
        self.lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(adapter))
        self.tokenizer, self.model_id = tokenizer, model_id
        model_config = getattr(self.engine, "model_config", None)
        self.context_length = int(model_config.max_model_len) if model_config is not None \
            else int(getattr(tokenizer, "model_max_length", 2048))
        self.fim = find_fim_tokens(tokenizer.get_vocab())
        self.chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.max_batch_size = None
        self.started_at = time.time()
        self.submitted = 0

    def submit(self, prompt_ids: list[int], params: SamplingParams, seed: int | None = None) -> _VllmSubmission:
        self.submitted += 1
        return _VllmSubmission(self.engine, list(prompt_ids), params, seed, self.lora)

    def snapshot(self) -> dict:
        return {"engine": self.name, "submitted": self.submitted, "uptime_s": round(time.time() - self.started_at, 1)}

    def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()
