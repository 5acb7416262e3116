"""Natural language to SPARQL (as in NSpM): exact match, BLEU, and answer-set F1 on a local RDF graph.

Datasets: JSONL rows with a question (`question`/`nl`/`en`) and a gold query (`query`/`sparql`/`gold`), or
NSpM's parallel files (`<prefix>.en` + `<prefix>.sparql`, or a directory holding `data.en` + `data.sparql`),
whose encoded queries (`brack_open`, `var_x`, `dbr_X`, ...) are decoded back into SPARQL.

Exact match compares normalized token sequences: keywords upper-cased, prefixed names expanded to full
IRIs (the query's PREFIX lines plus the usual DBpedia prefixes), whitespace and an optional final ` .`
dropped; variable names are kept, so `?x` vs `?uri` is not an exact match (answer F1 forgives it).
BLEU is sacrebleu's corpus BLEU over those same tokens.

Answer-set F1 needs a graph (`--sparql-graph` file rdflib can parse). Each query runs in a forked child
killed at its time limit, with graph loading from FROM clauses turned off, SERVICE (remote endpoints)
refused, and sockets disabled in the child; rdflib's `query` cannot run updates. The parent's graph cannot
be modified by a query, since the child works on a copy-on-write copy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import DataError
from codetune.evaluate.tasks import first_field, iter_jsonl
from codetune.prompts import sparql_prompt

QUESTION_FIELDS = ("question", "nl", "en", "text")
GOLD_FIELDS = ("query", "sparql", "gold")
STOP_SEQUENCES = ("\n\n", "\n#", "```")
MAX_ANSWERS = 100_000
DEFAULT_PREFIXES = {
    "dbo": "http://dbpedia.org/ontology/", "dbp": "http://dbpedia.org/property/",
    "dbr": "http://dbpedia.org/resource/", "dbc": "http://dbpedia.org/resource/Category:",
    "dct": "http://purl.org/dc/terms/", "foaf": "http://xmlns.com/foaf/0.1/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "owl": "http://www.w3.org/2002/07/owl#", "xsd": "http://www.w3.org/2001/XMLSchema#",
    "skos": "http://www.w3.org/2004/02/skos/core#", "geo": "http://www.w3.org/2003/01/geo/wgs84_pos#",
    "georss": "http://www.georss.org/georss/",
}
KEYWORDS = {
    "select", "distinct", "reduced", "where", "ask", "construct", "describe", "filter", "optional", "union",
    "minus", "graph", "service", "bind", "as", "values", "order", "by", "asc", "desc", "limit", "offset",
    "group", "having", "count", "sum", "min", "max", "avg", "sample", "group_concat", "prefix", "base", "from",
    "named", "not", "exists", "in", "regex", "lang", "langmatches", "str", "bound", "isiri", "isuri",
    "isliteral", "isblank", "contains", "strstarts", "strends", "lcase", "ucase", "year", "now", "true", "false",
}
# NSpM's encoding of SPARQL syntax as words, decoded back (prefix_ -> prefix: is handled separately).
NSPM_TOKENS = {
    "brack_open": "{", "brack_close": "}", "par_open": "(", "par_close": ")", "attr_open": "(",
    "attr_close": ")", "sep_dot": ".", "sep_semicolon": ";", "sep_comma": ",", "wildcard": "*",
    "math_leq": "<=", "math_geq": ">=", "math_lt": "<", "math_gt": ">", "math_eq": "=", "math_neq": "!=",
}

_TOKEN = re.compile(
    r"""<[^<>"{}|^`\\\s]*>"""  # IRI
    r"""|"(?:[^"\\]|\\.)*"(?:@[A-Za-z-]+|\^\^\S+)?|'(?:[^'\\]|\\.)*'(?:@[A-Za-z-]+|\^\^\S+)?"""  # literal
    r"""|[?$][A-Za-z_0-9]+"""  # variable
    r"""|[A-Za-z_][\w-]*:(?:[^\s{}()<>;,"']*[^\s{}()<>;,."'])?|:[^\s{}()<>;,."']+"""  # prefixed name
    r"""|[A-Za-z_]\w*|\d+(?:\.\d+)?|<=|>=|!=|&&|\|\||\^\^|\S""",
)


@dataclass(frozen=True)
class SparqlExample:
    task_id: str
    question: str
    gold: str


def decode_nspm(encoded: str) -> str:
    """NSpM's encoded query (`select var_x where brack_open dbr_Rome dbo_country var_x brack_close`)."""
    words = []
    for word in encoded.split():
        if word in NSPM_TOKENS:
            words.append(NSPM_TOKENS[word])
            continue
        word = re.sub(r"^var_", "?", word)
        word = re.sub(r"^(" + "|".join(DEFAULT_PREFIXES) + r")_", r"\1:", word)
        words.append(word)
    return " ".join(words)


def _nspm_pair(path: Path) -> tuple[Path, Path] | None:
    if path.is_dir() and (path / "data.en").is_file() and (path / "data.sparql").is_file():
        return path / "data.en", path / "data.sparql"
    en, sparql = Path(f"{path}.en"), Path(f"{path}.sparql")
    return (en, sparql) if en.is_file() and sparql.is_file() else None


def load_sparql_dataset(path: str | Path, limit: int | None = None) -> list[SparqlExample]:
    path = Path(path)
    pair = _nspm_pair(path)
    if pair is not None:
        questions = pair[0].read_text(encoding="utf-8").splitlines()
        queries = pair[1].read_text(encoding="utf-8").splitlines()
        if len(questions) != len(queries):
            raise DataError(f"{pair[0]} and {pair[1]} differ in length ({len(questions)} vs {len(queries)} lines)")
        examples = [SparqlExample(f"sparql/{i}", q.strip(), decode_nspm(s) if "brack_open" in s else s.strip())
                    for i, (q, s) in enumerate(zip(questions, queries, strict=True)) if q.strip()]
    elif path.is_file():
        examples = []
        for line_no, row in iter_jsonl(path):
            question, gold = first_field(row, QUESTION_FIELDS), first_field(row, GOLD_FIELDS)
            if question is None or gold is None:
                raise DataError(f"{path}:{line_no}: needs a question ({'/'.join(QUESTION_FIELDS)}) "
                                f"and a query ({'/'.join(GOLD_FIELDS)})")
            examples.append(SparqlExample(str(row.get("task_id", row.get("id", f"sparql/{len(examples)}"))),
                                          question, decode_nspm(gold) if "brack_open" in gold else gold))
    else:
        raise DataError(f"sparql dataset not found: {path} (JSONL, or NSpM's <prefix>.en + <prefix>.sparql)")
    if not examples:
        raise DataError(f"sparql dataset {path} holds no examples")
    return examples[:limit] if limit is not None else examples


def build_prompt(example: SparqlExample) -> str:
    return sparql_prompt(example.question)


def completion_to_query(completion: str) -> str:
    return completion.strip()


def tokenize_sparql(query: str) -> list[str]:
    """Normalized tokens: keywords upper-cased, prefixed names as full IRIs, PREFIX lines dropped."""
    raw = _TOKEN.findall(re.sub(r"(?m)#[^\n>]*$", "", query))  # comments (not `#` inside IRIs)
    prefixes = dict(DEFAULT_PREFIXES)
    tokens: list[str] = []
    i = 0
    while i < len(raw):
        tok = raw[i]
        if tok.lower() == "prefix" and i + 2 < len(raw) and raw[i + 1].endswith(":") and raw[i + 2].startswith("<"):
            prefixes[raw[i + 1][:-1]] = raw[i + 2][1:-1]
            i += 3
            continue
        if tok.lower() in KEYWORDS:
            tok = tok.upper()
        elif tok == "a":
            tok = f"<{DEFAULT_PREFIXES['rdf']}type>"
        elif re.fullmatch(r"[A-Za-z_][\w-]*:.*|:.+", tok) and tok.split(":", 1)[0] in prefixes:
            name, local = tok.split(":", 1)
            tok = f"<{prefixes[name]}{local}>"
        tokens.append(tok)
        i += 1
    # A final ` .` before a closing brace is optional in SPARQL.
    return [t for j, t in enumerate(tokens) if not (t == "." and j + 1 < len(tokens) and tokens[j + 1] == "}")]


def normalize_sparql(query: str) -> str:
    return " ".join(tokenize_sparql(query))


def exact_match(predicted: str, gold: str) -> bool:
    return normalize_sparql(predicted) == normalize_sparql(gold)


def corpus_bleu(predictions: Sequence[str], golds: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100) over normalized SPARQL tokens."""
    import sacrebleu

    if not predictions:
        return 0.0
    hyps = [normalize_sparql(p) for p in predictions]
    refs = [normalize_sparql(g) for g in golds]
    return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score)


def answer_f1(predicted: set, gold: set) -> tuple[float, float, float]:
    """(precision, recall, F1) of an answer set; two empty sets agree perfectly (the QALD convention)."""
    if not predicted and not gold:
        return 1.0, 1.0, 1.0
    hits = len(predicted & gold)
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class QueryOutcome:
    answers: set | None
    status: str  # passed (ran), compile_error, runtime_error, timeout, sandbox_violation
    error: str | None = None
    elapsed_s: float = 0.0


def _answers(result) -> set:
    if result.type == "ASK":
        return {(str(bool(result.askAnswer)).lower(),)}
    rows = set()
    for row in result:
        rows.add(tuple(t.n3() if t is not None else None for t in row))
        if len(rows) > MAX_ANSWERS:
            raise OverflowError(f"more than {MAX_ANSWERS} answers")
    return rows


def _classify(exc: Exception) -> str:
    from pyparsing import ParseBaseException

    if isinstance(exc, ParseBaseException) or "Unknown namespace prefix" in str(exc):
        return "compile_error"
    return "runtime_error"


def _child(graph, query: str, conn) -> None:
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled while evaluating SPARQL")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    import rdflib.plugins.sparql as rdflib_sparql

    rdflib_sparql.SPARQL_LOAD_GRAPHS = False
    try:
        conn.send(("passed", _answers(graph.query(query, initNs=DEFAULT_PREFIXES)), None))
    except Exception as exc:  # noqa: BLE001 - anything the query does is a result, not a crash
        conn.send((_classify(exc), None, f"{type(exc).__name__}: {str(exc)[:500]}"))
    finally:
        conn.close()


def _has_service(query: str) -> bool:
    return re.search(r"\bSERVICE\b", re.sub(r"<[^>]*>|\"[^\"]*\"", "", query), re.IGNORECASE) is not None


def run_query(graph, query: str, timeout_s: float = 5.0) -> QueryOutcome:
    """Run one SELECT/ASK/CONSTRUCT on `graph` in a forked child killed after `timeout_s`."""
    import multiprocessing

    import rdflib.plugins.sparql  # noqa: F401 - imported once here (≈1 s), not in every forked child

    if _has_service(query):
        return QueryOutcome(None, "sandbox_violation", "SERVICE (a remote endpoint) is not allowed")
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    start = time.monotonic()
    child = ctx.Process(target=_child, args=(graph, query, send), daemon=True)
    child.start()
    send.close()
    try:
        if receive.poll(timeout_s):
            try:
                status, answers, error = receive.recv()
            except EOFError:
                status, answers, error = "runtime_error", None, f"query process died (exit {child.exitcode})"
        else:
            status, answers, error = "timeout", None, f"no answer within {timeout_s:g} s"
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
    return QueryOutcome(answers, status, error, time.monotonic() - start)


def check_syntax(query: str) -> QueryOutcome:
    """Parse-only check for when no graph is given: separates malformed queries from wrong ones."""
    from rdflib.plugins.sparql import prepareQuery

    try:
        prepareQuery(query, initNs=DEFAULT_PREFIXES)
    except Exception as exc:  # noqa: BLE001 - pyparsing and rdflib raise several types
        return QueryOutcome(None, _classify(exc), f"{type(exc).__name__}: {str(exc)[:500]}")
    return QueryOutcome(None, "passed")


def load_graph(path: str | Path):
    import rdflib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"RDF graph not found: {path}")
    try:
        return rdflib.Graph().parse(str(path))
    except Exception as exc:  # noqa: BLE001 - rdflib raises per-format parser errors
        raise DataError(f"cannot parse RDF graph {path}: {type(exc).__name__}: {str(exc)[:200]}") from None


def score_example(example: SparqlExample, completions: Sequence[str], graph=None,
                  timeout_s: float = 5.0) -> list[dict]:
    """One sample row per completion. With a graph, `status` is `passed` when the answer set equals the
    gold one; without, when the normalized query matches exactly."""
    gold = run_query(graph, example.gold, timeout_s) if graph is not None else None
    rows = []
    for index, completion in enumerate(completions):
        query = completion_to_query(completion)
        em = exact_match(query, example.gold)
        row = {"task_id": example.task_id, "sample_index": index, "completion": completion, "program": query,
               "exact_match": em, "answer_f1": None, "answer_precision": None, "answer_recall": None,
               "exit_code": None, "stderr": "", "elapsed_s": 0.0}
        if gold is not None and gold.status != "passed":
            row.update(status="harness_error", stderr=f"gold query fails: {gold.error}"[:2000])
        else:
            out = run_query(graph, query, timeout_s) if graph is not None else check_syntax(query)
            row.update(stderr=(out.error or "")[:2000], elapsed_s=round(out.elapsed_s, 4))
            if out.status != "passed":
                row["status"] = out.status
                if gold is not None:
                    row.update(answer_f1=0.0, answer_precision=0.0, answer_recall=0.0)
            elif gold is not None:
                p, r, f1 = answer_f1(out.answers, gold.answers)
                row.update(answer_precision=p, answer_recall=r, answer_f1=f1,
                           status="passed" if out.answers == gold.answers else "failed")
            else:
                row["status"] = "passed" if em else "failed"
        rows.append(row)
    return rows


def summarize_sparql(samples: Sequence[dict], golds: dict[str, str]) -> dict:
    scored = [s for s in samples if s["answer_f1"] is not None]
    return {
        "exact_match": sum(s["exact_match"] for s in samples) / len(samples) if samples else None,
        "bleu": corpus_bleu([s["program"] for s in samples], [golds[s["task_id"]] for s in samples]),
        "answer_f1": sum(s["answer_f1"] for s in scored) / len(scored) if scored else None,
        "answer_precision": sum(s["answer_precision"] for s in scored) / len(scored) if scored else None,
        "answer_recall": sum(s["answer_recall"] for s in scored) / len(scored) if scored else None,
    }
