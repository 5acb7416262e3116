"""Fill-in-the-middle prompts for editor plugins: a completion with a `suffix` becomes an infill request.

Code models learn FIM with three sentinel tokens; the prompt is built in PSM order (prefix, suffix,
middle), the order StarCoder, SantaCoder and Qwen-Coder were trained on, and the model writes the middle.
Families spell the sentinels differently, so the first spelling whose three tokens are all in the
vocabulary wins. A tokenizer with none of them cannot infill: that is the caller's 400.
"""

from __future__ import annotations

from dataclasses import dataclass

# (prefix, suffix, middle), in the order tried.
KNOWN_FIM_TOKENS: tuple[tuple[str, str, str], ...] = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, StarCoder2
    ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),  # SantaCoder
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, CodeGemma
)


@dataclass(frozen=True)
class FimTokens:
    prefix: str
    suffix: str
    middle: str

    def psm(self, prefix: str, suffix: str) -> str:
        return f"{self.prefix}{prefix}{self.suffix}{suffix}{self.middle}"


def find_fim_tokens(vocab: dict[str, int] | set[str]) -> FimTokens | None:
    """The FIM sentinels this vocabulary has, or None when it has no complete set."""
    for triple in KNOWN_FIM_TOKENS:
        if all(token in vocab for token in triple):
            return FimTokens(*triple)
    return None


def build_fim_prompt(fim: FimTokens | None, prompt: str, suffix: str) -> str:
    """The PSM infill prompt; ValueError when the model has no FIM tokens."""
    if fim is None:
        raise ValueError("this model's tokenizer has no fill-in-the-middle tokens (<fim_prefix>, <fim_suffix>, "
                         "<fim_middle>), so `suffix` cannot be used")
    return fim.psm(prompt, suffix)
