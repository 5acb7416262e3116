"""`--engine vllm` end to end; runs only where the vllm package and a CUDA GPU are present."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]


def test_vllm_engine_serves_completions_and_streams(tiny_model_dir):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from fastapi.testclient import TestClient

    from codetune.config import ServeConfig
    from codetune.serve.app import create_app
    from codetune.serve.run import build_engine

    engine = build_engine(str(tiny_model_dir), cfg=ServeConfig(engine="vllm", model_name="tiny"))
    with TestClient(create_app(engine, max_tokens_cap=64)) as client:
        plain = client.post("/v1/completions", json={"prompt": "def f(x):", "max_tokens": 8, "temperature": 0})
        assert plain.status_code == 200 and plain.json()["usage"]["completion_tokens"] <= 8
        with client.stream("POST", "/v1/completions", json={"prompt": "def f(x):", "max_tokens": 8,
                                                            "temperature": 0, "stream": True}) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and len(lines) > 2
