"""codetune: fine-tune, evaluate, plan and serve code language models."""

__version__ = "0.1.0"
