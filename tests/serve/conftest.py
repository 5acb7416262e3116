"""Serving fixtures: engines over the tiny StarCoder2 model (one with a chat template, one without FIM
tokens), in-process apps, and one real uvicorn server on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

API_KEY = "sk-codetune-test"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="session")
def engine(tiny_model_dir):
    from codetune.config import ServeConfig
    from codetune.serve.run import build_engine

    eng = build_engine(str(tiny_model_dir), cfg=ServeConfig(model_name="tiny", max_batch_size=8, batch_wait_ms=20))
    yield eng
    eng.close()


def _model_copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and not item.name.startswith("tokenizer"):
            (dst / item.name).symlink_to(item)
    return dst


@pytest.fixture(scope="session")
def chat_engine(tiny_model_dir, tmp_path_factory):
    """The tiny model with a chat template added to its tokenizer."""
    from transformers import AutoTokenizer

    from codetune.serve.run import build_engine

    out = _model_copy(tiny_model_dir, tmp_path_factory.mktemp("tiny-chat"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    eng = build_engine(str(out))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def no_fim_engine(tiny_model_dir, tmp_path_factory):
    """The tiny model behind a small BPE tokenizer that has no FIM tokens (ids stay inside the model's vocab)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from codetune.serve.run import build_engine

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["def f(x):\n    return x + 1\n", "import os\nprint(os.getcwd())\n"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    out = _model_copy(tiny_model_dir, tmp_path_factory.mktemp("tiny-nofim"))
    tokenizer.save_pretrained(out)
    eng = build_engine(str(out))
    yield eng
    eng.close()


@pytest.fixture
def make_client(engine):
    """`make_client(api_key=None, max_tokens_cap=256, engine=engine)` -> a started TestClient."""
    from fastapi.testclient import TestClient

    from codetune.serve.app import create_app

    clients = []

    def make(api_key: str | None = None, max_tokens_cap: int = 256, engine=engine):
        client = TestClient(create_app(engine, api_key=api_key, max_tokens_cap=max_tokens_cap))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def live_server(engine):
    """A real uvicorn server (thread) on a free loopback port with API key API_KEY; yields its base URL."""
    import uvicorn

    from codetune.serve.app import create_app

    app = create_app(engine, api_key=API_KEY, max_tokens_cap=512)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    return found
