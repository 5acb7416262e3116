# Two commands do everything on a fresh machine:
#   make study   set up, then run the offline study (tiny StarCoder2 -> Python pretrain -> Java LoRA -> report)
#   make test    set up, then run the whole test suite
.PHONY: setup study test lint

setup:
	@bash scripts/setup.sh

study: setup
	.venv/bin/codetune study offline-study --output-dir runs/offline-study

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .
