"""Perplexity and bits per byte of a causal LM on held-out code, per language.

The sliding-window method of Hugging Face's "Perplexity of fixed-length models" guide: windows of at
most `max_length` tokens start every `stride` tokens; each window scores only the tokens no earlier
window scored, so every token is predicted from up to `max_length - stride` tokens of real context
instead of the little a non-overlapping split leaves it. `stride == max_length` is the non-overlapping
split (the first token of each chunk then has no context and is not scored; the counts say so).

Each document gets the tokenizer's BOS (or EOS, the file separator code models are trained with) in
front so that its first real token is predicted too; every text token is then scored once when
`stride < max_length`. Bits per byte (total bits / UTF-8 bytes of the text) compares models whose
tokenizers differ; it is only reported when every token was scored, since unscored tokens would make
it look better than it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from codetune.data.extensions import language_of
from codetune.errors import DataError


@dataclass(frozen=True)
class Window:
    """Input positions [begin, end) of one forward pass; it scores the tokens at [target_begin, end)."""

    begin: int
    end: int
    target_begin: int


def window_spans(num_tokens: int, max_length: int, stride: int) -> list[Window]:
    """The HF sliding windows over a sequence of `num_tokens`; position 0 is never a target (no context)."""
    if max_length < 2 or not 1 <= stride <= max_length:
        raise ValueError(f"need max_length >= 2 and 1 <= stride <= max_length (got {max_length}, {stride})")
    spans, prev_end = [], 0
    for begin in range(0, num_tokens, stride):
        end = min(begin + max_length, num_tokens)
        target_begin = max(prev_end, begin + 1)
        if target_begin < end:
            spans.append(Window(begin, end, target_begin))
        prev_end = end
        if end == num_tokens:
            break
    return spans


@dataclass
class NllTotals:
    """Sums for one language (or all): negative log-likelihood in nats and what it was counted over."""

    nll_nats: float = 0.0
    tokens: int = 0  # tokens scored
    tokens_unscored: int = 0  # text tokens no window could predict (stride == max_length, no BOS/EOS)
    bytes: int = 0  # UTF-8 bytes of the text
    files: int = 0

    def add(self, other: NllTotals) -> None:
        self.nll_nats += other.nll_nats
        self.tokens += other.tokens
        self.tokens_unscored += other.tokens_unscored
        self.bytes += other.bytes
        self.files += other.files


def summarize(totals: NllTotals) -> dict:
    """perplexity = exp(mean NLL per token); bits per token and per byte from the same sum."""
    bits = totals.nll_nats / math.log(2)
    scored = totals.tokens > 0
    return {
        "perplexity": math.exp(totals.nll_nats / totals.tokens) if scored else None,
        "bits_per_token": bits / totals.tokens if scored else None,
        "bits_per_byte": bits / totals.bytes if scored and totals.bytes and not totals.tokens_unscored else None,
        "nll_nats": totals.nll_nats,
        "tokens": totals.tokens,
        "tokens_unscored": totals.tokens_unscored,
        "bytes": totals.bytes,
        "files": totals.files,
    }


@dataclass(frozen=True)
class Document:
    path: str
    language: str
    text: str


def read_valid_files(path: Path) -> list[Document]:
    """The held-out files `prepare` writes: JSONL rows {path, language, text}."""
    from codetune.evaluate.tasks import iter_jsonl

    docs = []
    for line_no, row in iter_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError(f"{path}:{line_no}: not a {{path, language, text}} row")
        docs.append(Document(str(row.get("path", f"{path.name}:{line_no}")), str(row.get("language") or "unknown"),
                             row["text"]))
    return docs


def read_paths(paths: Iterable[str | Path]) -> list[Document]:
    """Files given directly (any extension), code files found under given directories (sorted), and the
    held-out split of another prepared run (`.../data/valid_files.jsonl`); the language comes from the same
    extension table `prepare` uses, so the names match the held-out split."""
    docs = []
    for raw in paths:
        root = Path(raw).expanduser()
        if root.name == "valid_files.jsonl" and root.is_file():
            docs += read_valid_files(root)  # another run's held-out split, e.g. the language before fine-tuning
            continue
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and language_of(str(p))
                           and not any(part.startswith(".") for part in p.relative_to(root).parts))
        else:
            raise DataError(f"perplexity path not found: {root}")
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # binary or non-UTF-8: not code we can score
            docs.append(Document(str(file), language_of(str(file)) or file.suffix.lstrip(".") or "unknown", text))
    return docs


def limit_per_language(docs: Sequence[Document], limit: int | None) -> list[Document]:
    if limit is None:
        return list(docs)
    seen: dict[str, int] = {}
    kept = []
    for doc in docs:
        if seen.get(doc.language, 0) < limit:
            seen[doc.language] = seen.get(doc.language, 0) + 1
            kept.append(doc)
    return kept


def model_context_length(model) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass
class PerplexityResult:
    by_language: dict[str, dict]
    overall: dict
    protocol: dict
    per_file: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"overall": self.overall, "by_language": self.by_language, "protocol": self.protocol}


def _encode(tokenizer, text: str) -> list[int]:
    # Whole files are longer than the model's context on purpose; the windows handle that.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.encode(text, add_special_tokens=False).ids
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _score_windows(model, items: list[tuple[int, list[int], int]], batch_size: int, progress=None) -> dict[int, float]:
    """Sum of target NLL per document for (doc, window input ids, number of trailing targets) items."""
    import torch

    device = next(model.parameters()).device
    sums: dict[int, float] = {}
    order = sorted(range(len(items)), key=lambda i: -len(items[i][1]))
    for start in range(0, len(order), batch_size):
        chunk = [items[i] for i in order[start:start + batch_size]]
        width = max(len(ids) for _, ids, _ in chunk)
        # Right padding keeps each row's positions 0..n-1, so no position ids need fixing.
        input_ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, (_, ids, _) in enumerate(chunk):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        for row, (doc, ids, n_targets) in enumerate(chunk):
            # logits at position j predict token j+1: the last n_targets tokens come from j = n-1-n_targets .. n-2
            n = len(ids)
            pred = logits[row, n - 1 - n_targets:n - 1].float()
            labels = torch.tensor(ids[n - n_targets:], device=pred.device)
            nll = torch.nn.functional.cross_entropy(pred, labels, reduction="sum").item()
            sums[doc] = sums.get(doc, 0.0) + nll
        if progress is not None:
            progress(len(chunk), len(items))
    return sums


def evaluate_perplexity(model, tokenizer, docs: Sequence[Document], max_length: int | None = None,
                        stride: int = 512, batch_size: int = 8, progress=None) -> PerplexityResult:
    """Sliding-window NLL of every document; totals per language and overall.

    `progress(advance, total)` is called with windows scored so far (for a progress bar).
    """
    context = model_context_length(model)
    max_length = min(max_length or context or 1024, context or max_length or 1024)
    if stride > max_length:  # e.g. the default 512 on a small-context model: keep windows overlapping
        stride = max(1, max_length // 2)
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    items: list[tuple[int, list[int], int]] = []
    token_counts, unscored = [], []
    for index, doc in enumerate(docs):
        ids = _encode(tokenizer, doc.text)
        seq = ([prefix_id] if prefix_id is not None else []) + ids
        spans = window_spans(len(seq), max_length, stride)
        scored = sum(w.end - w.target_begin for w in spans)
        token_counts.append(scored)
        unscored.append(len(ids) - scored)
        items += [(index, seq[w.begin:w.end], w.end - w.target_begin) for w in spans]
    if progress is not None:
        progress(0, len(items))
    sums = _score_windows(model, items, batch_size, progress) if items else {}
    by_language: dict[str, NllTotals] = {}
    overall = NllTotals()
    per_file = []
    for index, doc in enumerate(docs):
        totals = NllTotals(sums.get(index, 0.0), token_counts[index], unscored[index],
                           len(doc.text.encode("utf-8")), 1)
        by_language.setdefault(doc.language, NllTotals()).add(totals)
        overall.add(totals)
        per_file.append({"path": doc.path, "language": doc.language, **summarize(totals)})
    protocol = {"max_length": max_length, "stride": stride,
                "prefix_token": tokenizer.convert_ids_to_tokens(prefix_id) if prefix_id is not None else None,
                "files": len(docs)}
    return PerplexityResult({lang: summarize(t) for lang, t in sorted(by_language.items())}, summarize(overall),
                            protocol, per_file)
