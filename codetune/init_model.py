"""`codetune init-model`: a model of a real architecture (StarCoder2, GPTBigCode, CodeGen, GPT-2, Llama)
at a small named size, with a byte-level BPE tokenizer trained on local code and StarCoder's special
tokens. The saved directory loads with plain `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained`.

It serves the tests (no weights can be downloaded here), the offline default study, and users who want
a from-scratch baseline.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import CodetuneError, DataError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD = "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"
FILE_SEP = "<file_sep>"
SPECIAL_TOKENS = [EOS_TOKEN, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, FILE_SEP, PAD_TOKEN]

# (hidden, layers, heads, kv_heads, intermediate, context). kv_heads only matters where the
# architecture has grouped/multi-query attention; GPTBigCode is multi-query like StarCoder-1B.
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny": (64, 2, 4, 2, 256, 1024),
    "small": (256, 4, 8, 2, 1024, 2048),
    "base": (512, 6, 8, 2, 2048, 2048),
}
ARCHS = ("starcoder2", "gpt_bigcode", "codegen", "gpt2", "llama")


@dataclass
class InitResult:
    arch: str
    size: str
    out: Path
    num_parameters: int
    vocab_size: int


def default_corpus() -> Path:
    """The Python standard library: real code present on every machine."""
    return Path(sysconfig.get_paths()["stdlib"])


def check_arch_size(arch: str, size: str) -> None:
    if arch not in ARCHS:
        raise CodetuneError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise CodetuneError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")


def build_config(arch: str, size: str, vocab_size: int, eos_id: int, pad_id: int):
    """A transformers config of `arch` at `size`; only shapes change, everything else is the family's own."""
    import transformers as tf

    check_arch_size(arch, size)
    hidden, layers, heads, kv_heads, inter, ctx = SIZES[size]
    ids = {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    if arch == "starcoder2":
        return tf.Starcoder2Config(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=ctx,
            sliding_window=None, use_bias=True, tie_word_embeddings=True, **ids,
        )
    if arch == "llama":
        return tf.LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=ctx,
            tie_word_embeddings=True, **ids,
        )
    if arch == "gpt_bigcode":
        return tf.GPTBigCodeConfig(
            vocab_size=vocab_size, n_positions=ctx, n_embd=hidden, n_layer=layers, n_head=heads,
            n_inner=inter, multi_query=True, **ids,
        )
    if arch == "codegen":
        return tf.CodeGenConfig(
            vocab_size=vocab_size, n_positions=ctx, n_ctx=ctx, n_embd=hidden, n_layer=layers, n_head=heads,
            n_inner=inter, rotary_dim=hidden // heads // 2, tie_word_embeddings=False, **ids,
        )
    return tf.GPT2Config(vocab_size=vocab_size, n_positions=ctx, n_embd=hidden, n_layer=layers, n_head=heads,
                         n_inner=inter, **ids)


def iter_corpus_texts(paths: Iterable[str | Path], max_bytes: int) -> Iterator[str]:
    """UTF-8 text from the given dirs/archives/files, up to `max_bytes`; undecodable files are skipped."""
    from codetune.data.files import iter_local

    total = 0
    for path in paths:
        for raw in iter_local(path, max_file_bytes=1_000_000):
            if b"\x00" in raw.data[:8192]:
                continue
            try:
                text = raw.data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            total += len(raw.data)
            yield text
            if total >= max_bytes:
                return


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE (as StarCoder's) with the StarCoder special tokens and a pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN, additional_special_tokens=[FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, FILE_SEP],
        model_max_length=SIZES["base"][5], clean_up_tokenization_spaces=False,
    )


def init_model(
    arch: str,
    size: str,
    corpus: Iterable[str | Path],
    out: str | Path,
    vocab_size: int = 8192,
    max_corpus_mb: float = 64.0,
    seed: int = 0,
    tokenizer=None,
) -> InitResult:
    """Train a tokenizer on `corpus` (unless one is given), build `arch` at `size` with seeded random
    weights, save both to `out`."""
    import torch
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from transformers import AutoModelForCausalLM

    check_arch_size(arch, size)
    out = Path(out)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
        if tokenizer is None:
            bar.add_task(f"training a {vocab_size}-token BPE tokenizer", total=None)
            texts = list(iter_corpus_texts(corpus, int(max_corpus_mb * 1e6)))
            if not texts:
                raise DataError(f"no UTF-8 text found in {', '.join(map(str, corpus))} to train a tokenizer")
            tokenizer = train_tokenizer(texts, vocab_size)
        bar.add_task(f"building {arch}/{size}", total=None)
        config = build_config(arch, size, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return InitResult(arch, size, out, sum(p.numel() for p in model.parameters()), len(tokenizer))
