"""The HTTP API in-process (FastAPI TestClient): every endpoint, streaming, FIM, chat, and every error in
OpenAI's shape."""

from __future__ import annotations

import json

import pytest

from codetune.generation import SamplingParams, generate

PROMPT = "def add(a, b):\n"


def _sse(response) -> list:
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def _error(response, status: int, code: str | None = None, param: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error["message"]


def test_completion_matches_batched_generation_and_counts_usage(make_client, engine):
    client = make_client()
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": PROMPT, "max_tokens": 10, "temperature": 0})
    assert r.status_code == 200
    body = r.json()
    expected = generate(engine.model, engine.tokenizer, [PROMPT], SamplingParams(max_new_tokens=10))[0][0]
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["choices"] == [{"index": 0, "text": expected.text, "logprobs": None, "finish_reason": "length"}]
    prompt_tokens = len(engine.tokenizer(PROMPT)["input_ids"])
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 10,
                             "total_tokens": prompt_tokens + 10}


def test_prompt_lists_token_ids_and_n(make_client, engine):
    client = make_client()
    ids = engine.tokenizer(PROMPT)["input_ids"]
    by_text = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 6, "temperature": 0}).json()
    by_ids = client.post("/v1/completions", json={"prompt": ids, "max_tokens": 6, "temperature": 0}).json()
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    r = client.post("/v1/completions", json={"prompt": [PROMPT, "x = 1"], "max_tokens": 5, "n": 2,
                                             "temperature": 0.9, "seed": 3}).json()
    assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3]
    assert r["usage"]["completion_tokens"] == 20
    again = client.post("/v1/completions", json={"prompt": [PROMPT, "x = 1"], "max_tokens": 5, "n": 2,
                                                 "temperature": 0.9, "seed": 3}).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in r["choices"]]


def test_stop_sequence_ends_the_completion(make_client):
    client = make_client()
    free = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 16, "temperature": 0}).json()
    text = free["choices"][0]["text"]
    stop = text[4:6]
    cut = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 16, "temperature": 0,
                                               "stop": [stop, "never-there"]}).json()
    assert cut["choices"][0] == {"index": 0, "text": text[: text.find(stop)], "logprobs": None,
                                 "finish_reason": "stop"}


def test_streamed_completion_adds_up_to_the_plain_one(make_client):
    client = make_client()
    request = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    plain = client.post("/v1/completions", json=request).json()
    with client.stream("POST", "/v1/completions",
                       json={**request, "stream": True, "stream_options": {"include_usage": True}}) as r:
        events = _sse(r)
    text_events = [e for e in events if e["choices"]]
    assert len(text_events) > 1  # it streamed, not one lump
    assert "".join(e["choices"][0]["text"] for e in text_events) == plain["choices"][0]["text"]
    assert text_events[-1]["choices"][0]["finish_reason"] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in text_events[:-1])
    assert events[-1]["choices"] == [] and events[-1]["usage"] == plain["usage"]


def test_fim_suffix_builds_the_psm_prompt(make_client, engine):
    client = make_client()
    prefix, suffix = "def add(a, b):\n    ", "\n    return c\n"
    fim = client.post("/v1/completions", json={"prompt": prefix, "suffix": suffix, "max_tokens": 8,
                                               "temperature": 0}).json()
    psm = f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"
    same = client.post("/v1/completions", json={"prompt": psm, "max_tokens": 8, "temperature": 0}).json()
    assert fim["choices"] == same["choices"]
    assert fim["usage"]["prompt_tokens"] == len(engine.tokenizer(psm)["input_ids"])
    # the sentinels are single special tokens, not spelled out in pieces
    assert fim["usage"]["prompt_tokens"] < len(engine.tokenizer(prefix + suffix + "fim_prefix")["input_ids"]) + 3


def test_fim_without_fim_tokens_is_a_400(make_client, no_fim_engine):
    client = make_client(engine=no_fim_engine)
    assert client.get("/v1/models").json()["data"][0]["fim"] is False
    r = client.post("/v1/completions", json={"prompt": "def f(", "suffix": "\n", "max_tokens": 4})
    assert "fill-in-the-middle" in _error(r, 400, "fim_unsupported", "suffix")
    assert client.post("/v1/completions", json={"prompt": "def f(", "max_tokens": 4}).status_code == 200


def test_chat_completion_with_a_template(make_client, chat_engine):
    client = make_client(engine=chat_engine)
    messages = [{"role": "system", "content": "You write SQL."}, {"role": "user", "content": "count singers"}]
    r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    prompt = chat_engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|assistant|>\n")
    plain = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 6, "temperature": 0}).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": plain["choices"][0]["text"]}
    assert body["usage"] == plain["usage"]
    with client.stream("POST", "/v1/chat/completions",
                       json={"messages": messages, "max_tokens": 6, "temperature": 0, "stream": True}) as s:
        events = _sse(s)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert streamed == plain["choices"][0]["text"]
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_chat_without_a_template_is_a_400(make_client):
    r = make_client().post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert "chat template" in _error(r, 400, "chat_template_missing")


def test_models_and_health(make_client, engine):
    client = make_client(max_tokens_cap=100)
    card = client.get("/v1/models").json()["data"][0]
    assert card["id"] == "tiny" and card["object"] == "model"
    assert card["context_length"] == engine.model.config.max_position_embeddings
    assert card["max_tokens_cap"] == 100 and card["fim"] is True and card["chat"] is False
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["engine"] == "transformers"
    page = client.get("/")
    assert page.status_code == 200 and "codetune playground" in page.text


def test_limits_are_openai_shaped_4xx(make_client, engine):
    client = make_client(max_tokens_cap=64)
    ctx = engine.context_length
    long_prompt = list(range(10, 10 + ctx - 3))
    msg = _error(client.post("/v1/completions", json={"prompt": long_prompt, "max_tokens": 8}), 400,
                 "context_length_exceeded", "prompt")
    assert str(ctx) in msg
    too_long = list(range(10, 10 + ctx + 5))
    _error(client.post("/v1/completions", json={"prompt": too_long, "max_tokens": 1}), 400, "context_length_exceeded")
    assert "cap of 64" in _error(client.post("/v1/completions", json={"prompt": "x", "max_tokens": 65}), 400,
                                 param="max_tokens")
    r = client.post("/v1/completions", content=b'{"prompt": "x", ', headers={"content-type": "application/json"})
    assert "malformed JSON" in _error(r, 400, "json_invalid")
    _error(client.post("/v1/completions", json={"prompt": "x", "model": "gpt-4"}), 404, "model_not_found", "model")
    _error(client.post("/v1/completions", json={"prompt": "x", "temperature": 3}), 400, param="temperature")
    _error(client.post("/v1/completions", json={"max_tokens": 3}), 400, param="prompt")
    _error(client.post("/v1/completions", json={"prompt": [10**9]}), 400, param="prompt")
    assert "logprobs" in _error(client.post("/v1/completions", json={"prompt": "x", "logprobs": 5}), 400)
    _error(client.get("/v1/nothing"), 404)


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic sk-right", "Bearer sk-right-but-longer"])
def test_wrong_or_missing_api_key_is_401(make_client, header):
    client = make_client(api_key="sk-right")
    headers = {"Authorization": header} if header else {}
    for method, path in [("post", "/v1/completions"), ("get", "/v1/models"), ("post", "/v1/chat/completions")]:
        r = getattr(client, method)(path, headers=headers, **({"json": {"prompt": "x"}} if method == "post" else {}))
        _error(r, 401, "invalid_api_key")
        assert r.headers["www-authenticate"] == "Bearer"
    ok = client.post("/v1/completions", headers={"Authorization": "Bearer sk-right"},
                     json={"prompt": "x", "max_tokens": 2})
    assert ok.status_code == 200
    assert client.get("/health").status_code == 200  # health and the page stay open for probes and browsers
