"""The playground page in headless Chromium against the real server: model info, API key, a streamed code
completion equal to the API's own answer, the text-to-SQL mode's prompt, and a screenshot."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.serve.cdp import Chromium
from tests.serve.conftest import API_KEY


@pytest.fixture
def browser(chromium_binary, tmp_path):
    chrome = Chromium(chromium_binary, tmp_path / "profile")
    yield chrome
    chrome.close()


def _api(live_server, **body) -> dict:
    r = httpx.post(f"{live_server}/v1/completions", json={"model": "tiny", **body}, timeout=60,
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200, r.text
    return r.json()


def _run(browser) -> str:
    browser.evaluate("document.getElementById('generate').click()")
    state = browser.wait_for("['done', 'error'].includes(document.getElementById('status').dataset.state) && "
                             "document.getElementById('status').dataset.state")
    status = browser.evaluate("document.getElementById('status').textContent")
    assert state == "done", status
    return status


def test_playground_streams_a_completion_and_builds_the_sql_prompt(browser, live_server, tmp_path):
    from codetune.evaluate.tasks.sql import STOP_SEQUENCES, SqlExample, build_prompt

    browser.open(f"{live_server}/")
    # without the key the page says why it has no model info
    assert browser.wait_for("document.getElementById('model-info').dataset.loaded !== '0' && "
                            "document.getElementById('model-info').dataset.loaded") == "error"
    assert "API key" in browser.evaluate("document.getElementById('model-info').textContent")
    browser.evaluate(f"const k = document.getElementById('api-key'); k.value = {json.dumps(API_KEY)}; "
                     "k.dispatchEvent(new Event('change'))")
    browser.wait_for("document.getElementById('model-info').dataset.loaded === '1'")
    assert "tiny" in browser.evaluate("document.getElementById('model-info').textContent")

    prompt = "def fibonacci(n):\n    "
    browser.evaluate(f"document.getElementById('prompt').value = {json.dumps(prompt)}; "
                     "document.getElementById('max-tokens').value = '24'")
    status = _run(browser)
    shown = browser.evaluate("document.getElementById('completion').textContent")
    chunks = int(browser.evaluate("document.getElementById('status').dataset.chunks"))
    expected = _api(live_server, prompt=prompt, max_tokens=24, temperature=0,
                    stop=["\ndef ", "\nclass ", "\nif __name__", "\n#"])["choices"][0]
    assert shown == expected["text"] and shown
    assert chunks > 1 and f"finish_reason {expected['finish_reason']}" in status
    shot = browser.screenshot(tmp_path / "playground.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    browser.evaluate("document.getElementById('mode-sql').click()")
    schema = "CREATE TABLE singer (id INTEGER, name TEXT, country TEXT);"
    question = "How many singers are from France?"
    browser.evaluate(f"document.getElementById('schema').value = {json.dumps(schema)}; "
                     f"document.getElementById('question').value = {json.dumps(question)}")
    _run(browser)
    sent = browser.evaluate("document.getElementById('prompt-sent').textContent")
    example = SqlExample(task_id="t", question=question, gold="", context=schema)
    assert sent == build_prompt(example)  # the interface the text-to-SQL evaluation uses
    expected = _api(live_server, prompt=sent, max_tokens=24, temperature=0, stop=list(STOP_SEQUENCES))
    assert browser.evaluate("document.getElementById('completion').textContent") == expected["choices"][0]["text"]
    assert browser.evaluate("document.querySelector('#output .prompt').textContent") == "SELECT"
