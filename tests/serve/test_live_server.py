"""The real server over a loopback socket: the official `openai` client, and a client that hangs up
mid-stream."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.serve.conftest import API_KEY


@pytest.fixture
def client(live_server):
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_openai_client_completion(client):
    [model] = client.models.list().data
    assert model.id == "tiny"
    r = client.completions.create(model="tiny", prompt="def add(a, b):\n", max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.choices[0].text
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 0


def test_openai_client_streamed_completion_equals_plain(client):
    plain = client.completions.create(model="tiny", prompt="import os\n", max_tokens=10, temperature=0)
    stream = client.completions.create(model="tiny", prompt="import os\n", max_tokens=10, temperature=0,
                                       stream=True)
    chunks = list(stream)
    assert len(chunks) > 1
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_openai_client_fim_and_wrong_key(client, live_server):
    infill = client.completions.create(model="tiny", prompt="def f(x):\n    ", suffix="\n    return y\n",
                                       max_tokens=4, temperature=0)
    assert infill.choices[0].finish_reason in ("stop", "length")
    bad = openai.OpenAI(base_url=f"{live_server}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.completions.create(model="tiny", prompt="x", max_tokens=2)
    assert caught.value.status_code == 401 and "API key" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4o", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="tiny", prompt="x " * 1500, max_tokens=2)


def _health(live_server) -> dict:
    return httpx.get(f"{live_server}/health", timeout=10).json()


def test_client_hanging_up_mid_stream_frees_its_slot(live_server):
    before = _health(live_server)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    # Greedy decoding of the random tiny model never emits EOS, so only the hang-up can end this early.
    body = {"model": "tiny", "prompt": "def add(a, b):\n", "max_tokens": 500, "temperature": 0, "stream": True}
    with httpx.Client(timeout=30) as http, http.stream("POST", f"{live_server}/v1/completions", json=body,
                                                       headers=headers) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # one token arrived; hang up
    deadline = time.monotonic() + 30
    while True:
        now = _health(live_server)
        if now["cancelled"] > before["cancelled"] and now["running"] == 0:
            break
        assert time.monotonic() < deadline, f"the hung-up request kept running: {now}"
        time.sleep(0.1)
    assert now["generated_tokens"] - before["generated_tokens"] < 500
    # the worker is free for the next client
    r = httpx.post(f"{live_server}/v1/completions", headers=headers, timeout=30,
                   json={"model": "tiny", "prompt": "x", "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
