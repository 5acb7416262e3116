"""The OpenAI-compatible HTTP API and the playground page, built around an already-made engine.

`create_app(engine, ...)` loads nothing itself, so tests build it in-process around a tiny model and
`run.py` builds it around the user's. Endpoints: POST /v1/completions (with `suffix` for fill-in-the-
middle), POST /v1/chat/completions (when the tokenizer has a chat template), GET /v1/models,
GET /health, GET / (playground). Every error uses OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`, so client libraries surface the message.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from codetune.generation import SamplingParams
from codetune.serve import schemas as s
from codetune.serve.engine import Chunk
from codetune.serve.fim import build_fim_prompt

PLAYGROUND = Path(__file__).parent / "playground" / "index.html"
DISCONNECT_POLL_S = 0.25


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def response(self) -> JSONResponse:
        body = s.ErrorResponse(error=s.ErrorBody(message=self.message, type=self.type, param=self.param,
                                                 code=self.code))
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body.model_dump(), status_code=self.status, headers=headers)


def _validation_error(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"malformed JSON in the request body: {first.get('ctx', {}).get('error', 'invalid')}",
                        code="json_invalid")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = loc[0] if loc else None
    where = ".".join(loc)
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    return ApiError(400, f"{where}: {message}" if where else message, param=param, code="invalid_value")


def create_app(engine, *, api_key: str | None = None, max_tokens_cap: int = 1024) -> FastAPI:
    """The FastAPI app serving `engine` (TransformersEngine or VllmEngine; the app never closes it itself
    except on lifespan shutdown)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(engine.close)

    app = FastAPI(title="codetune serve", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.engine = engine
    tokenizer = engine.tokenizer

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None,
                        type="invalid_request_error").response()

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            raise ApiError(401, "Incorrect API key provided: pass it as `Authorization: Bearer <key>`",
                           code="invalid_api_key")

    def check_model(name: str | None) -> None:
        if name is not None and name != engine.model_id:
            raise ApiError(404, f"The model `{name}` does not exist; this server serves `{engine.model_id}`",
                           param="model", code="model_not_found")

    def encode(prompt: str | list[int], add_special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, str):
            ids = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
        else:
            ids = list(prompt)
            if any(not 0 <= i < len(tokenizer) for i in ids):
                raise ApiError(400, f"prompt token ids must lie in [0, {len(tokenizer)})", param="prompt",
                               code="invalid_value")
        if not ids:
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            if start is None:
                raise ApiError(400, "the prompt is empty", param="prompt", code="invalid_value")
            ids = [start]
        return ids

    def sampling(body: s._Request, prompt_lens: list[int], requested: int | None, param: str) -> SamplingParams:
        longest = max(prompt_lens)
        if requested is not None and requested > max_tokens_cap:
            raise ApiError(400, f"max_tokens is {requested}, above this server's cap of {max_tokens_cap} "
                                "(codetune serve --max-tokens-cap)", param="max_tokens", code="invalid_value")
        max_tokens = requested if requested is not None else min(max_tokens_cap, engine.context_length - longest)
        if longest + max(max_tokens, 1) > engine.context_length:
            raise ApiError(400, f"This model's maximum context length is {engine.context_length} tokens; the "
                                f"request needs {longest + max_tokens} ({longest} in the prompt, {max_tokens} "
                                "for the completion). Shorten the prompt or lower max_tokens.",
                           param=param, code="context_length_exceeded")
        return SamplingParams(max_new_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                              n=body.n, stop=body.stop_list())

    # -- endpoints -----------------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.model_id, **engine.snapshot()}

    @app.get("/", include_in_schema=False)
    async def playground():
        return FileResponse(PLAYGROUND, media_type="text/html")

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models():
        card = s.ModelCard(id=engine.model_id, created=int(getattr(engine, "started_at", time.time())),
                           context_length=engine.context_length, max_tokens_cap=max_tokens_cap,
                           engine=engine.name, fim=engine.fim is not None, chat=engine.chat_template)
        return s.ModelList(data=[card]).model_dump()

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(body: s.CompletionRequest, request: Request):
        check_model(body.model)
        prompts = body.prompts()
        if body.suffix is not None:
            if any(not isinstance(p, str) for p in prompts):
                raise ApiError(400, "`suffix` needs text prompts, not token ids", param="suffix",
                               code="invalid_value")
            try:
                prompts = [build_fim_prompt(engine.fim, p, body.suffix) for p in prompts]
            except ValueError as exc:
                raise ApiError(400, str(exc), param="suffix", code="fim_unsupported") from None
        ids = [encode(p) for p in prompts]
        params = sampling(body, [len(i) for i in ids], body.max_tokens, "prompt")
        subs = [engine.submit(i, params, body.seed) for i in ids]
        rid, created, n = s.new_id("cmpl"), s.now(), body.n
        usage = _UsageCounter(ids)

        def choice_chunk(p: int, c: Chunk) -> dict:
            choice = s.CompletionChoice(index=p * n + c.index, text=c.text, finish_reason=_finish(c))
            return s.CompletionResponse(id=rid, created=created, model=engine.model_id, choices=[choice]).model_dump()

        if body.stream:
            return _sse(merged(subs, request), choice_chunk, usage, _include_usage(body),
                        lambda u: {"id": rid, "object": "text_completion", "created": created,
                                   "model": engine.model_id, "choices": [], "usage": u.model_dump()})
        texts, finish = await _collect(merged(subs, request), usage)
        choices = [s.CompletionChoice(index=k, text=texts[k], finish_reason=finish[k]) for k in sorted(texts)]
        return s.CompletionResponse(id=rid, created=created, model=engine.model_id, choices=choices,
                                    usage=usage.total()).model_dump()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(body: s.ChatCompletionRequest, request: Request):
        check_model(body.model)
        if not engine.chat_template:
            raise ApiError(400, f"`{engine.model_id}` has no chat template in its tokenizer, so it cannot chat; "
                                "use /v1/completions", param="messages", code="chat_template_missing")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # templates raise jinja errors, e.g. on roles they do not accept
            raise ApiError(400, f"the chat template rejected these messages: {exc}", param="messages",
                           code="invalid_value") from None
        ids = [encode(text, add_special_tokens=False)]
        params = sampling(body, [len(ids[0])], body.max_completion_tokens or body.max_tokens, "messages")
        subs = [engine.submit(ids[0], params, body.seed)]
        rid, created = s.new_id("chatcmpl"), s.now()
        usage = _UsageCounter(ids)
        started: set[int] = set()

        def chat_chunk(p: int, c: Chunk) -> list[dict]:
            out = []
            if c.index not in started:  # OpenAI opens each choice with the role
                started.add(c.index)
                out.append(s.ChatChunkChoice(index=c.index, delta=s.ChatDelta(role="assistant", content="")))
            if c.text:
                out.append(s.ChatChunkChoice(index=c.index, delta=s.ChatDelta(content=c.text)))
            if c.finish_reason is not None:
                out.append(s.ChatChunkChoice(index=c.index, delta=s.ChatDelta(), finish_reason=_finish(c)))
            return [s.ChatCompletionChunk(id=rid, created=created, model=engine.model_id, choices=[ch]).model_dump(
                exclude_none=True) for ch in out]

        if body.stream:
            return _sse(merged(subs, request), chat_chunk, usage, _include_usage(body),
                        lambda u: {"id": rid, "object": "chat.completion.chunk", "created": created,
                                   "model": engine.model_id, "choices": [], "usage": u.model_dump()})
        texts, finish = await _collect(merged(subs, request), usage)
        choices = [s.ChatChoice(index=k, message=s.ChatMessageOut(content=texts[k]), finish_reason=finish[k])
                   for k in sorted(texts)]
        return s.ChatCompletionResponse(id=rid, created=created, model=engine.model_id, choices=choices,
                                        usage=usage.total()).model_dump()

    return app


# -- streaming plumbing --------------------------------------------------------------------------------


async def merged(subs: list, request: Request) -> AsyncIterator[tuple[int, Chunk]]:
    """(prompt index, chunk) from every submission as they arrive. Leaving early for any reason (done,
    error, client gone, cancelled task) cancels every submission, which frees their engine slots."""
    q: asyncio.Queue = asyncio.Queue()

    async def pump(p: int, sub) -> None:
        try:
            async for chunk in sub.chunks():
                await q.put((p, chunk))
        finally:
            await q.put((p, None))

    tasks = [asyncio.create_task(pump(p, sub)) for p, sub in enumerate(subs)]
    try:
        remaining, checked = len(subs), time.monotonic()
        while remaining:
            try:
                p, chunk = await asyncio.wait_for(q.get(), timeout=DISCONNECT_POLL_S)
            except TimeoutError:
                p, chunk = -1, None
            if time.monotonic() - checked >= DISCONNECT_POLL_S or p < 0:
                checked = time.monotonic()
                if await request.is_disconnected():
                    return
            if p < 0:
                continue
            if chunk is None:
                remaining -= 1
                continue
            if chunk.finish_reason == "error":
                raise ApiError(500, chunk.error or "generation failed", type="server_error", code="engine_error")
            yield p, chunk
    finally:
        for sub in subs:
            sub.cancel()
        for task in tasks:
            task.cancel()


class _UsageCounter:
    def __init__(self, ids: list[list[int]]):
        self.prompt_tokens = sum(len(i) for i in ids)
        self.completion_tokens = 0

    def add(self, chunk: Chunk) -> None:
        self.completion_tokens += chunk.completion_tokens

    def total(self) -> s.Usage:
        return s.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                       total_tokens=self.prompt_tokens + self.completion_tokens)


def _finish(chunk: Chunk) -> str | None:
    return None if chunk.finish_reason is None else ("length" if chunk.finish_reason == "length" else "stop")


def _include_usage(body: s._Request) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


async def _collect(stream: AsyncIterator[tuple[int, Chunk]], usage: _UsageCounter):
    texts: dict[int, str] = {}
    finish: dict[int, str | None] = {}
    async for p, chunk in stream:
        key = (p, chunk.index)
        texts[key] = texts.get(key, "") + chunk.text
        if chunk.finish_reason is not None:
            finish[key] = _finish(chunk)
            usage.add(chunk)
    # flatten (prompt, row) to OpenAI's choice index: prompt-major
    order = sorted(texts)
    return {k: texts[key] for k, key in enumerate(order)}, {k: finish.get(key) for k, key in enumerate(order)}


def _sse(stream: AsyncIterator[tuple[int, Chunk]], render, usage: _UsageCounter, include_usage: bool,
         usage_chunk) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async for p, chunk in stream:
                if chunk.finish_reason is not None:
                    usage.add(chunk)
                rendered = render(p, chunk)
                for item in rendered if isinstance(rendered, list) else [rendered]:
                    yield f"data: {json.dumps(item)}\n\n"
            if include_usage:
                yield f"data: {json.dumps(usage_chunk(usage.total()))}\n\n"
            yield "data: [DONE]\n\n"
        except ApiError as exc:  # headers are already sent: report in-band, as OpenAI does
            yield f"data: {json.dumps(json.loads(exc.response().body))}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
