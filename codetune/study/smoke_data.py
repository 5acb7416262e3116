"""Locally-made examples in the format of each recipe's real data, for `codetune study --smoke`.

Nothing can be downloaded here, so each generator writes a few hundred rows with the same fields the
hub or user dataset has: NsPM-style (question, query) pairs over a small RDF graph, sql-create-context
style (question, context, answer) pairs over a SQLite database with rows, the-stack style rows of real
local code (content, path, lang) with small MultiPL-E-format Java problems, SQL files, and a special-token
classification set for GPT-2.
Every generator is seeded, so smoke runs are reproducible.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Prague", "Lisbon", "Dublin", "Oslo", "Athens",
          "Warsaw", "Zurich", "Lyon", "Milan", "Porto", "Krakow", "Seville", "Munich", "Bergen", "Turin"]
ARCHITECTS = ["Adams", "Baker", "Costa", "Duval", "Eriksen", "Fischer", "Garcia", "Horvat", "Ivanova", "Jensen"]
PREFIXES = "PREFIX dbo: <http://dbpedia.org/ontology/> PREFIX dbr: <http://dbpedia.org/resource/>"


@dataclass
class SmokeData:
    """What a generator made: files to train on, files to evaluate on, and the data/eval settings to use."""

    train: Path
    test: Path
    source: dict = field(default_factory=dict)  # a data.sources entry
    eval_datasets: dict[str, str] = field(default_factory=dict)  # eval.datasets entries
    extra: dict[str, str] = field(default_factory=dict)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _split(rows: list, test_fraction: float = 0.1) -> tuple[list, list]:
    cut = max(1, int(len(rows) * test_fraction))
    return rows[cut:], rows[:cut]


def sparql_pairs(out: Path, n: int, seed: int = 0) -> SmokeData:
    """NsPM-style pairs: monuments with a location, an architect and a year, as an RDF graph + questions."""
    rng = random.Random(seed)
    triples, rows = [], []
    for i in range(max(n // 3, 4)):
        name = f"Monument_{i}"
        city, arch, year = rng.choice(CITIES), rng.choice(ARCHITECTS), rng.randint(1500, 2000)
        triples += [f"dbr:{name} dbo:location dbr:{city} .", f"dbr:{name} dbo:architect dbr:{arch} .",
                    f'dbr:{name} dbo:year "{year}" .']
        readable = name.replace("_", " ").lower()
        rows += [
            {"question": f"where is {readable} located in?",
             "query": f"select ?x where {{ dbr:{name} dbo:location ?x }}"},
            {"question": f"who was the architect of {readable}?",
             "query": f"select ?x where {{ dbr:{name} dbo:architect ?x }}"},
            {"question": f"when was {readable} built?",
             "query": f"select ?x where {{ dbr:{name} dbo:year ?x }}"},
        ]
    rows = rows[:n]
    rng.shuffle(rows)
    train, test = _split(rows)
    graph = out / "graph.ttl"
    graph.parent.mkdir(parents=True, exist_ok=True)
    graph.write_text("@prefix dbo: <http://dbpedia.org/ontology/> .\n@prefix dbr: <http://dbpedia.org/resource/> .\n"
                     + "\n".join(triples) + "\n", encoding="utf-8")
    return SmokeData(
        train=_write_jsonl(out / "train.jsonl", train), test=_write_jsonl(out / "test.jsonl", test),
        source={"path": str(out / "train.jsonl"), "prompt_field": "question", "completion_field": "query",
                "prompt_template": "sparql"},
        eval_datasets={"sparql": str(out / "test.jsonl")}, extra={"graph": str(graph), "prefixes": PREFIXES},
    )


SQL_SCHEMA = ("CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT, city TEXT, salary INTEGER, dept TEXT)")
SQL_TEMPLATES = [
    ("how many employees live in {city}?", "SELECT COUNT(*) FROM employees WHERE city = '{city}'"),
    ("what are the names of employees in the {dept} department?",
     "SELECT name FROM employees WHERE dept = '{dept}'"),
    ("what is the highest salary in {city}?", "SELECT MAX(salary) FROM employees WHERE city = '{city}'"),
    ("list the names of employees earning more than {amount}, highest first",
     "SELECT name FROM employees WHERE salary > {amount} ORDER BY salary DESC"),
]


def sql_pairs(out: Path, n: int, seed: int = 0) -> SmokeData:
    """sql-create-context style pairs (question, context, answer) plus a SQLite database with rows."""
    rng = random.Random(seed)
    db = out / "employees.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)
    depts = ["sales", "research", "support", "legal"]
    with sqlite3.connect(db) as conn:
        conn.execute(SQL_SCHEMA)
        conn.executemany("INSERT INTO employees (name, city, salary, dept) VALUES (?, ?, ?, ?)",
                         [(f"{rng.choice(ARCHITECTS)} {i}", rng.choice(CITIES[:6]), rng.randrange(30, 150) * 1000,
                           rng.choice(depts)) for i in range(200)])
    conn.close()
    rows = []
    for _ in range(n):
        question, query = rng.choice(SQL_TEMPLATES)
        slots = {"city": rng.choice(CITIES[:6]), "dept": rng.choice(depts), "amount": rng.randrange(40, 140) * 1000}
        rows.append({"question": question.format(**slots), "context": SQL_SCHEMA, "answer": query.format(**slots),
                     "db_path": str(db)})
    train, test = _split(rows)
    return SmokeData(
        train=_write_jsonl(out / "train.jsonl", train), test=_write_jsonl(out / "test.jsonl", test),
        source={"path": str(out / "train.jsonl"), "prompt_field": "question", "completion_field": "answer",
                "prompt_template": "sql"},
        eval_datasets={"sql": str(out / "test.jsonl")}, extra={"database": str(db)},
    )


def code_files(out: Path, n: int, languages: list[str], seed: int = 0) -> SmokeData:
    """the-stack style rows (content, path, lang) of real local code: stdlib Python and JDK Java."""
    from codetune.data.files import iter_local
    from codetune.study.recipes import corpus_placeholders

    corpora = corpus_placeholders()
    where = {"python": (corpora["${stdlib}"], ".py"), "java": (corpora["${jdk_src_zip}"], ".java")}
    rows = []
    per_language = max(1, n // len(languages))
    for language in languages:
        root, suffix = where[language]
        taken = 0
        for raw in iter_local(root, max_file_bytes=40_000):
            if taken >= per_language * 4:
                break
            if raw.path.endswith(suffix) and 500 < len(raw.data) < 20_000:
                try:
                    rows.append({"content": raw.data.decode("utf-8"), "path": raw.path, "lang": language})
                    taken += 1
                except UnicodeDecodeError:
                    continue
    rng = random.Random(seed)
    rng.shuffle(rows)
    rows = rows[:n]
    train, test = _split(rows)
    evals = {"multipl-e:java": str(multipl_e_java(out))} if "java" in languages else {}
    return SmokeData(
        train=_write_jsonl(out / "train.jsonl", train), test=_write_jsonl(out / "test.jsonl", test),
        source={"path": str(out / "train.jsonl"), "text_field": "content", "path_field": "path"},
        eval_datasets=evals,
    )


# (comment, signature, assertions): small Java problems in MultiPL-E's format, so a smoke study runs
# `multipl-e:java` without the hub dataset.
JAVA_PROBLEMS = [
    ("Return the sum of a and b.", "public static int add(int a, int b)", ["add(2, 3) == 5", "add(-1, 1) == 0"]),
    ("Return the larger of a and b.", "public static int larger(int a, int b)",
     ["larger(2, 3) == 3", "larger(7, -1) == 7"]),
    ("Return the absolute value of x.", "public static int absolute(int x)", ["absolute(-4) == 4", "absolute(5) == 5"]),
    ("Return true when n is even.", "public static boolean isEven(int n)", ["isEven(4)", "!isEven(7)"]),
    ("Return n squared.", "public static long square(long n)", ["square(3L) == 9L", "square(-2L) == 4L"]),
    ("Return the string reversed.", "public static String reverse(String s)",
     ['reverse("abc").equals("cba")', 'reverse("").equals("")']),
    ("Return the sum of 1..n.", "public static long sumTo(long n)", ["sumTo(4L) == 10L", "sumTo(0L) == 0L"]),
    ("Return how many times c occurs in s.", "public static int count(String s, char c)",
     ["count(\"banana\", 'a') == 3", "count(\"\", 'a') == 0"]),
]


def multipl_e_java(out: Path) -> Path:
    rows = []
    for i, (comment, signature, asserts) in enumerate(JAVA_PROBLEMS):
        name = f"Smoke_{i}_{signature.split('(')[0].split()[-1]}"
        prompt = f"import java.util.*;\nclass Problem {{\n    // {comment}\n    {signature} {{\n"
        tests = ("    }\n    public static void main(String[] args) {\n"
                 + "".join(f"    assert({a});\n" for a in asserts) + "    }\n\n}\n")
        rows.append({"name": name, "task_id": name, "language": "java", "prompt": prompt, "tests": tests,
                     "stop_tokens": ["\n    }\n"]})
    return _write_jsonl(out / "multipl-e-java.jsonl", rows)


def sql_files(out: Path, n: int, seed: int = 0) -> SmokeData:
    """the-stack-smol data/sql style rows: SQL scripts in a `content` field."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        table = f"t_{rng.choice(CITIES).lower()}_{i}"
        cols = rng.sample(["id INTEGER PRIMARY KEY", "name TEXT NOT NULL", "price REAL", "created_at TIMESTAMP",
                           "city VARCHAR(64)", "qty INTEGER DEFAULT 0"], 4)
        names = [c.split()[0] for c in cols]
        body = [f"CREATE TABLE {table} (\n  " + ",\n  ".join(cols) + "\n);",
                f"CREATE INDEX idx_{table}_{names[1]} ON {table} ({names[1]});",
                f"SELECT {', '.join(names[:2])} FROM {table} WHERE {names[0]} IS NOT NULL ORDER BY {names[1]};"]
        rows.append({"content": "\n\n".join(body) + "\n", "path": f"schema/{table}.sql", "lang": "SQL"})
    train, test = _split(rows)
    return SmokeData(
        train=_write_jsonl(out / "train.jsonl", train), test=_write_jsonl(out / "test.jsonl", test),
        source={"path": str(out / "train.jsonl"), "text_field": "content", "path_field": "path"},
    )


SPECIAL_TOKENS = ["<|code|>", "<|lang|>", "<|end|>"]


def special_token_pairs(out: Path, n: int, seed: int = 0) -> SmokeData:
    """Which language is this snippet? Prompts and answers are delimited by added special tokens."""
    code = code_files(out / "code", n, ["python", "java"], seed)
    rows = []
    for line in code.train.read_text(encoding="utf-8").splitlines() + code.test.read_text().splitlines():
        row = json.loads(line)
        snippet = "\n".join(row["content"].splitlines()[:12])
        rows.append({"prompt": f"<|code|>{snippet}<|lang|>", "completion": f"{row['lang']}<|end|>",
                     "label": row["lang"]})
    train, test = _split(rows, 0.2)
    return SmokeData(
        train=_write_jsonl(out / "train.jsonl", train), test=_write_jsonl(out / "test.jsonl", test),
        source={"path": str(out / "train.jsonl"), "prompt_field": "prompt", "completion_field": "completion"},
        eval_datasets={"accuracy": str(out / "test.jsonl")},
    )


def make(kind: str, out: Path, n: int, languages: list[str] | None = None, seed: int = 0) -> SmokeData:
    if kind == "sparql-pairs":
        return sparql_pairs(out, n, seed)
    if kind == "sql-pairs":
        return sql_pairs(out, n, seed)
    if kind == "sql-files":
        return sql_files(out, n, seed)
    if kind == "special-tokens":
        return special_token_pairs(out, n, seed)
    return code_files(out, n, languages or ["java"], seed)
