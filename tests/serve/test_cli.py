"""`codetune serve` on the command line: option errors are one line, and the real command serves."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from codetune.cli import app


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_engine_without_vllm_is_one_line_error(tiny_model_dir):
    result = CliRunner().invoke(app, ["serve", str(tiny_model_dir), "--engine", "vllm"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "needs the vllm package" in result.output


def test_bad_options_are_config_errors(tiny_model_dir):
    result = CliRunner().invoke(app, ["serve", str(tiny_model_dir), "--port", "70000"])
    assert result.exit_code == 2 and "serve.port" in result.output
    result = CliRunner().invoke(app, ["serve", str(tiny_model_dir), "--engine", "tgi"])
    assert result.exit_code == 2 and "serve.engine" in result.output


def test_missing_model_is_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and result.output.startswith("error: cannot load")


@pytest.mark.slow
def test_codetune_serve_command_serves(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CODETUNE_API_KEY": "sk-env"}
    proc = subprocess.Popen([sys.executable, "-m", "codetune", "serve", str(tiny_model_dir), "--port", str(port),
                             "--model-name", "tiny-cli", "--max-tokens-cap", "32"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "codetune serve did not come up"
            time.sleep(0.5)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", headers={"Authorization": "Bearer sk-env"},
                       json={"model": "tiny-cli", "prompt": "x = ", "max_tokens": 4}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", headers={"Authorization": "Bearer sk-env"},
                       json={"prompt": "x = ", "max_tokens": 33}, timeout=60)
        assert r.status_code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
