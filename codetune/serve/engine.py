"""The transformers serving engine: one worker thread owns the model; concurrent requests are batched.

Requests go into a queue. The worker takes the oldest, waits up to `batch_wait_ms` for company, and runs
every waiting request that can share its sampling settings (greedy with greedy; sampled with the same
temperature, top_p and seed) in one `model.generate` call, up to `max_batch_size` sequences. Only that
thread touches the model, so concurrent requests never race on it.

A stopping criterion sees each new token of every row: it decodes the row, cuts it at a stop sequence,
streams the text that can no longer turn into a stop sequence to the request's asyncio queue, and ends a
row on EOS, its own max_tokens, a stop sequence, or a cancelled request (the client went away) — so a
disconnected client stops costing compute on the next step and its batch slot frees up.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from codetune.generation import SamplingParams, truncate_at_stop
from codetune.serve.fim import FimTokens, find_fim_tokens

log = logging.getLogger(__name__)


@dataclass
class Chunk:
    """New text for one completion (`index` among the request's n); a final chunk has a finish_reason."""

    index: int
    text: str
    finish_reason: str | None = None  # stop | length | cancelled | error
    completion_tokens: int = 0
    error: str | None = None


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is the start of a stop sequence: it must not be streamed
    yet, since the next token may complete the stop sequence and the stop is never part of the answer."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


def streamable(text: str, stops: Sequence[str], final: bool) -> tuple[str, str | None]:
    """(the part of the decoded completion that may be shown now, the stop sequence found or None)."""
    cut, found = truncate_at_stop(text, stops)
    if found is not None or final:
        return cut, found
    end = len(cut) - held_back(cut, stops)
    # A character split across tokens decodes as U+FFFD until its last byte arrives.
    while end > 0 and cut[end - 1] == "\ufffd":
        end -= 1
    return cut[:end], None


class Submission:
    """One prompt's request (n rows) as the engine sees it; `chunks()` is consumed on the event loop."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, seed: int | None,
                 loop: asyncio.AbstractEventLoop):
        self.prompt_ids, self.params, self.seed, self.loop = prompt_ids, params, seed, loop
        self._events: asyncio.Queue[Chunk] = asyncio.Queue()
        self.cancelled = threading.Event()

    def batch_key(self) -> tuple:
        p = self.params
        return ("greedy",) if p.temperature == 0 else ("sample", p.temperature, p.top_p, self.seed)

    def cancel(self) -> None:
        self.cancelled.set()

    def emit(self, chunk: Chunk) -> None:
        """Called from the worker thread."""
        try:
            self.loop.call_soon_threadsafe(self._events.put_nowait, chunk)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()

    async def chunks(self) -> AsyncIterator[Chunk]:
        open_rows = self.params.n
        while open_rows:
            chunk = await self._events.get()
            if chunk.finish_reason is not None:
                open_rows -= 1
            yield chunk


class _Row:
    def __init__(self, sub: Submission, index: int, tokenizer, eos_ids: set[int]):
        self.sub, self.index, self.tokenizer, self.eos_ids = sub, index, tokenizer, eos_ids
        self.ids: list[int] = []
        self.count = 0
        self.sent = 0
        self.done = False
        self.reason: str | None = None

    def finish(self, text: str, reason: str, error: str | None = None) -> None:
        self.done, self.reason = True, reason
        self.sub.emit(Chunk(self.index, text[self.sent:], reason, self.count, error))

    def step(self, token: int) -> None:
        if self.sub.cancelled.is_set():
            return self.finish("", "cancelled")
        self.count += 1
        stops = self.sub.params.stop
        if token in self.eos_ids:
            return self.finish(streamable(self._decode(), stops, final=True)[0], "stop")
        self.ids.append(token)
        text = self._decode()
        at_limit = self.count >= self.sub.params.max_new_tokens
        shown, found = streamable(text, stops, final=at_limit)
        if found is not None:
            return self.finish(shown, "stop")
        if at_limit:
            return self.finish(shown, "length")
        if len(shown) > self.sent:
            self.sub.emit(Chunk(self.index, shown[self.sent:]))
            self.sent = len(shown)

    def _decode(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)


def _stopping_criterion(rows: list[_Row]):
    """A transformers StoppingCriteria that drives every row one token at a time (see module docstring)."""
    import torch
    from transformers import StoppingCriteria

    class DriveRows(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            for row, token in zip(rows, input_ids[:, -1].tolist(), strict=True):
                if not row.done:
                    row.step(token)
            return torch.tensor([row.done for row in rows], dtype=torch.bool, device=input_ids.device)

    return DriveRows()


def context_length(model, tokenizer) -> int:
    """Positions the model can attend over (prompt + completion)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and limit < 10**8 else 2048


@dataclass
class EngineStats:
    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    batches: int = 0
    running: int = 0  # sequences in the batch being generated
    largest_batch: int = 0
    generated_tokens: int = 0
    started_at: float = field(default_factory=time.time)


class TransformersEngine:
    """Serves a loaded transformers model (or PEFT model) and its tokenizer; see the module docstring."""

    name = "transformers"

    def __init__(self, model, tokenizer, model_id: str, max_batch_size: int = 8, batch_wait_ms: float = 10.0):
        self.model, self.tokenizer, self.model_id = model, tokenizer, model_id
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_ms / 1000
        self.context_length = context_length(model, tokenizer)
        self.fim: FimTokens | None = find_fim_tokens(tokenizer.get_vocab())
        self.chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.stats = EngineStats()
        self._queue: queue.Queue[Submission | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, tokenizer.eos_token_id] if i is not None}

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="codetune-serve-engine", daemon=True)
                self._thread.start()

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=30)

    def submit(self, prompt_ids: list[int], params: SamplingParams, seed: int | None = None) -> Submission:
        """Queue one prompt; must be called on the event loop that will consume `chunks()`."""
        self.start()
        sub = Submission(list(prompt_ids), params, seed, asyncio.get_running_loop())
        self.stats.submitted += 1
        self._queue.put(sub)
        return sub

    def snapshot(self) -> dict:
        s = self.stats
        return {"engine": self.name, "queued": self._queue.qsize(), "running": s.running,
                "submitted": s.submitted, "completed": s.completed, "cancelled": s.cancelled, "failed": s.failed,
                "batches": s.batches, "largest_batch": s.largest_batch, "generated_tokens": s.generated_tokens,
                "max_batch_size": self.max_batch_size, "uptime_s": round(time.time() - s.started_at, 1)}

    # -- worker thread -------------------------------------------------------------------------------

    def _work(self) -> None:
        pending: list[Submission] = []
        while True:
            closing = self._gather(pending)
            pending = [sub for sub in pending if not self._drop_if_cancelled(sub)]
            if pending:
                batch, pending = take_batch(pending, self.max_batch_size)
                self._run(batch)
            if closing:
                for sub in pending:
                    for j in range(sub.params.n):
                        sub.emit(Chunk(j, "", "error", 0, "the server is shutting down"))
                return

    def _gather(self, pending: list[Submission]) -> bool:
        """Add queued submissions to `pending`, waiting for a batch to fill only when nothing was waiting.
        Returns True when the engine is closing."""
        wait = not pending
        deadline = None
        while sum(sub.params.n for sub in pending) < self.max_batch_size or not pending:
            try:
                if not pending:
                    item = self._queue.get()
                    deadline = time.monotonic() + self.batch_wait_s
                elif wait:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return True
            pending.append(item)
        return False

    def _drop_if_cancelled(self, sub: Submission) -> bool:
        if sub.cancelled.is_set():
            self.stats.cancelled += 1
            for j in range(sub.params.n):
                sub.emit(Chunk(j, "", "cancelled"))
            return True
        return False

    def _run(self, batch: list[Submission]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        rows = [_Row(sub, j, self.tokenizer, self.eos_ids) for sub in batch for j in range(sub.params.n)]
        self.stats.batches += 1
        self.stats.running = len(rows)
        self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
        params, seed = batch[0].params, batch[0].seed
        sample = params.temperature > 0
        try:
            enc = self.tokenizer.pad({"input_ids": [row.sub.prompt_ids for row in rows]}, padding=True,
                                     padding_side="left", return_tensors="pt")
            enc = enc.to(next(self.model.parameters()).device)
            if sample and seed is not None:
                torch.manual_seed(seed)
            with torch.inference_mode():
                self.model.generate(
                    **enc,
                    max_new_tokens=max(sub.params.max_new_tokens for sub in batch),
                    do_sample=sample,
                    temperature=params.temperature if sample else None,
                    top_p=params.top_p if sample else None,
                    top_k=None,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=sorted(self.eos_ids) or None,
                    stopping_criteria=StoppingCriteriaList([_stopping_criterion(rows)]),
                )
        except Exception as exc:  # a failed batch must not take the worker (and every later request) down
            log.exception("generation failed")
            self.stats.failed += len(batch)
            for row in rows:
                if not row.done:
                    row.finish("", "error", f"generation failed: {exc.__class__.__name__}: {exc}")
        for row in rows:  # generate() may end (max length) before a row's own criterion fired
            if not row.done:
                row.finish(streamable(row._decode(), row.sub.params.stop, final=True)[0], "length")
        for sub in batch:
            reasons = {row.reason for row in rows if row.sub is sub}
            if "cancelled" in reasons:
                self.stats.cancelled += 1
            elif "error" not in reasons:
                self.stats.completed += 1
        self.stats.generated_tokens += sum(row.count for row in rows)
        self.stats.running = 0


def take_batch(pending: list[Submission], max_batch_size: int) -> tuple[list[Submission], list[Submission]]:
    """The oldest submission plus later ones with the same batch key, up to `max_batch_size` rows (a single
    submission with n above the cap still runs whole); returns (batch, the rest in arrival order)."""
    key = pending[0].batch_key()
    batch, rest, rows = [], [], 0
    for sub in pending:
        if sub.batch_key() == key and (not batch or rows + sub.params.n <= max_batch_size):
            batch.append(sub)
            rows += sub.params.n
        else:
            rest.append(sub)
    return batch, rest
